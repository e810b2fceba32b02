package telemetry_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gantry-iot/gantry/controlplane/store"
	"github.com/gantry-iot/gantry/controlplane/store/storetest"
	"github.com/gantry-iot/gantry/controlplane/telemetry"
	"github.com/gantry-iot/gantry/pkg/topics"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
)

var t0 = time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC)

// payload is batch seq: points p0..p(n-1), value seq*100+j at t0+seq s.
func payload(t testing.TB, seq uint64, n int) []byte {
	t.Helper()
	return payloadAt(t, seq, n, t0.Add(time.Duration(seq)*time.Second))
}

// payloadAt is batch seq with its samples at at.
func payloadAt(t testing.TB, seq uint64, n int, at time.Time) []byte {
	t.Helper()
	b := &gantryv1.TelemetryBatch{Seq: seq}
	for j := range n {
		b.Samples = append(b.Samples, &gantryv1.Sample{Point: fmt.Sprintf("p%d", j), Value: float64(seq*100) + float64(j),
			At: timestamppb.New(at)})
	}
	p, err := proto.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// start runs in's writer until the test ends.
func start(t testing.TB, in *telemetry.Ingest) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- in.Run(context.Background()) }()
	t.Cleanup(func() {
		in.Close()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func counter(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if h := m.GetHistogram(); h != nil {
				return float64(h.GetSampleCount())
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

// TestConcurrentHandle has many devices publish at once, as many broker
// connections do: every batch is stored exactly once, the latest values
// are each point's newest sample, and redeliveries count as duplicates —
// with one writer and with four writing groups in parallel.
func TestConcurrentHandle(t *testing.T) {
	for _, writers := range []int{1, 4} {
		t.Run(fmt.Sprintf("writers=%d", writers), func(t *testing.T) { testConcurrentHandle(t, writers) })
	}
}

func testConcurrentHandle(t *testing.T, writers int) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		ctx := context.Background()
		st := newStore(t)
		reg := prometheus.NewRegistry()
		in := telemetry.New(st, telemetry.Config{MaxGroup: 16, Writers: writers}, reg, nil)
		start(t, in)
		const devices, batches, points = 40, 15, 3
		var wg sync.WaitGroup
		for d := range devices {
			topic := topics.Device(fmt.Sprintf("dev-%02d", d), topics.Telemetry)
			wg.Go(func() {
				// A device's connection delivers its batches one after the
				// other; odd devices' sample times go backwards (the latest
				// value must still be the newest sample).
				for k := range batches {
					seq := uint64(k + 1)
					if d%2 == 1 {
						in.Handle(topic, payloadAt(t, seq, points, t0.Add(time.Duration(batches+1-seq)*time.Second)))
						continue
					}
					in.Handle(topic, payload(t, seq, points))
				}
			})
		}
		wg.Wait()
		if got := counter(t, reg, "gantry_telemetry_batches_total"); got != devices*batches {
			t.Errorf("batches = %v, want %d", got, devices*batches)
		}
		if got := counter(t, reg, "gantry_telemetry_values_total"); got != devices*batches*points {
			t.Errorf("values = %v, want %d", got, devices*batches*points)
		}
		if got := counter(t, reg, "gantry_telemetry_duplicates_total"); got != 0 {
			t.Errorf("duplicates = %v, want 0", got)
		}
		if got := counter(t, reg, "gantry_telemetry_group_batches"); got >= devices*batches {
			t.Logf("no group held more than one batch (%v transactions)", got) // timing; not a failure
		}
		for d := range devices {
			dev := fmt.Sprintf("dev-%02d", d)
			for j := range points {
				h, err := st.History(ctx, dev, fmt.Sprintf("p%d", j), t0, t0.Add(time.Hour), 0)
				if err != nil {
					t.Fatal(err)
				}
				var seqs []uint64
				for _, s := range h {
					seqs = append(seqs, s.BatchSeq)
				}
				slices.Sort(seqs) // history is in time order
				var want []uint64
				for k := range batches {
					want = append(want, uint64(k+1))
				}
				if diff := cmp.Diff(want, seqs); diff != "" {
					t.Fatalf("%s p%d history batch seqs (-want +got):\n%s", dev, j, diff)
				}
			}
			latest, err := st.LatestValues(ctx, dev)
			if err != nil {
				t.Fatal(err)
			}
			newestSeq := float64(batches) // odd devices: batch 1 has the newest samples
			if d%2 == 1 {
				newestSeq = 1
			}
			var want []store.Sample
			for j := range points {
				want = append(want, store.Sample{Point: fmt.Sprintf("p%d", j), Value: newestSeq*100 + float64(j), At: t0.Add(batches * time.Second)})
			}
			if diff := cmp.Diff(want, latest); diff != "" {
				t.Fatalf("%s latest values (-want +got):\n%s", dev, diff)
			}
		}

		// Redelivery (the agent did not see the PUBACK): stored again,
		// counted as duplicates, the latest values unchanged.
		for d := range devices {
			topic := topics.Device(fmt.Sprintf("dev-%02d", d), topics.Telemetry)
			wg.Go(func() { in.Handle(topic, payload(t, 2, points)) })
		}
		wg.Wait()
		if got := counter(t, reg, "gantry_telemetry_duplicates_total"); got != devices {
			t.Errorf("duplicates after redelivery = %v, want %d", got, devices)
		}
		latest, err := st.LatestValues(ctx, "dev-08")
		if err != nil {
			t.Fatal(err)
		}
		if len(latest) != points || latest[0].Value != batches*100 {
			t.Errorf("latest values after redelivery: %+v", latest)
		}
	})
}

// fakeStore records the groups it is given; a batch of device "bad" fails
// the transaction it is in, and gate (if set) holds every write until
// it is closed.
type fakeStore struct {
	gate chan struct{}

	mu     sync.Mutex
	calls  [][]string // devices per transaction
	stored map[string]int
}

func (f *fakeStore) StoreSampleBatches(ctx context.Context, batches []store.SampleBatch) error {
	if f.gate != nil {
		<-f.gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var devs []string
	for _, b := range batches {
		devs = append(devs, b.DeviceID)
	}
	f.calls = append(f.calls, devs)
	for _, b := range batches {
		if b.DeviceID == "bad" {
			return errors.New("fake: constraint violated")
		}
	}
	if f.stored == nil {
		f.stored = map[string]int{}
	}
	for _, b := range batches {
		f.stored[b.DeviceID]++
	}
	return nil
}

// TestHandleWaitsForCommit: Handle returns only once the store has
// committed its batch (the PUBACK follows Handle).
func TestHandleWaitsForCommit(t *testing.T) {
	defer goleak.VerifyNone(t)
	f := &fakeStore{gate: make(chan struct{})}
	in := telemetry.New(f, telemetry.Config{}, nil, nil)
	done := make(chan error, 1)
	go func() { done <- in.Run(context.Background()) }()
	returned := make(chan struct{})
	go func() {
		in.Handle(topics.Device("d1", topics.Telemetry), payload(t, 1, 2))
		close(returned)
	}()
	select {
	case <-returned:
		t.Fatal("Handle returned before the store committed")
	case <-time.After(100 * time.Millisecond):
	}
	close(f.gate)
	select {
	case <-returned:
	case <-time.After(5 * time.Second):
		t.Fatal("Handle did not return after the commit")
	}
	if f.stored["d1"] != 1 {
		t.Errorf("stored = %v", f.stored)
	}
	in.Close()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	// After Close, Handle returns without storing instead of blocking.
	in.Handle(topics.Device("d2", topics.Telemetry), payload(t, 1, 2))
	if f.stored["d2"] != 0 {
		t.Errorf("stored after Close: %v", f.stored)
	}
}

// TestGroupFailure: a batch that fails its group's transaction does not
// lose the other batches of the group; they are stored one by one.
func TestGroupFailure(t *testing.T) {
	defer goleak.VerifyNone(t)
	f := &fakeStore{gate: make(chan struct{})}
	reg := prometheus.NewRegistry()
	in := telemetry.New(f, telemetry.Config{Window: 50 * time.Millisecond}, reg, nil)
	done := make(chan error, 1)
	go func() { done <- in.Run(context.Background()) }()
	var wg sync.WaitGroup
	// The first batch holds the writer at the gate while the others queue.
	wg.Go(func() { in.Handle(topics.Device("first", topics.Telemetry), payload(t, 1, 1)) })
	time.Sleep(50 * time.Millisecond)
	devs := []string{"a", "b", "bad", "c", "d"}
	for _, d := range devs {
		wg.Go(func() { in.Handle(topics.Device(d, topics.Telemetry), payload(t, 1, 1)) })
	}
	time.Sleep(200 * time.Millisecond)
	close(f.gate)
	wg.Wait()
	in.Close()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	want := map[string]int{"first": 1, "a": 1, "b": 1, "c": 1, "d": 1}
	if diff := cmp.Diff(want, f.stored); diff != "" {
		t.Errorf("stored (-want +got):\n%s", diff)
	}
	if got := counter(t, reg, "gantry_telemetry_batches_total"); got != 5 {
		t.Errorf("batches = %v, want 5", got)
	}
	if got := counter(t, reg, "gantry_telemetry_failed_total"); got != 1 {
		t.Errorf("failed = %v, want 1", got)
	}
	grouped := false
	for _, c := range f.calls {
		grouped = grouped || len(c) == len(devs)
	}
	if !grouped {
		t.Errorf("the queued batches were not written as one group: %v", f.calls)
	}
}

// TestCloseBeforeRun: Close without Run does not block, and Run after
// Close returns ErrClosed.
func TestCloseBeforeRun(t *testing.T) {
	defer goleak.VerifyNone(t)
	in := telemetry.New(&fakeStore{}, telemetry.Config{}, nil, nil)
	in.Close()
	in.Close()
	if err := in.Run(context.Background()); !errors.Is(err, telemetry.ErrClosed) {
		t.Errorf("Run after Close = %v, want ErrClosed", err)
	}
	in.Handle(topics.Device("d", topics.Telemetry), payload(t, 1, 1))
}

// TestIngestReportsFailure: Ingest returns ErrNotStored when the store
// fails (so the broker can withhold the PUBACK), nil once stored and nil
// for malformed messages (dropped: sending them again cannot help).
func TestIngestReportsFailure(t *testing.T) {
	defer goleak.VerifyNone(t)
	f := &fakeStore{}
	in := telemetry.New(f, telemetry.Config{}, nil, nil)
	done := make(chan error, 1)
	go func() { done <- in.Run(context.Background()) }()
	if err := in.Ingest(topics.Device("bad", topics.Telemetry), payload(t, 1, 1)); !errors.Is(err, telemetry.ErrNotStored) {
		t.Errorf("failed store: %v, want ErrNotStored", err)
	}
	if err := in.Ingest(topics.Device("good", topics.Telemetry), payload(t, 1, 1)); err != nil || f.stored["good"] != 1 {
		t.Errorf("stored batch: %v (stored %v)", err, f.stored)
	}
	if err := in.Ingest(topics.Device("good", topics.Telemetry), []byte{0xff, 0xff}); err != nil {
		t.Errorf("malformed batch: %v, want nil (dropped)", err)
	}
	in.Close()
	<-done
	if err := in.Ingest(topics.Device("late", topics.Telemetry), payload(t, 2, 1)); !errors.Is(err, telemetry.ErrNotStored) {
		t.Errorf("after Close: %v, want ErrNotStored", err)
	}
}
