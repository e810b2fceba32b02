package store_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/gantry-iot/gantry/controlplane/store"
	"github.com/gantry-iot/gantry/controlplane/store/storetest"
)

// TestStoreSampleBatches: one transaction of many batches stores what
// StoreSamples stores batch by batch, including groups larger than one
// statement, a point repeated across batches, out-of-order and equal
// sample times.
func TestStoreSampleBatches(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		ctx := context.Background()
		t0 := time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC)
		var batches []store.SampleBatch
		for seq := range 120 {
			for _, dev := range []string{"d1", "d2", "d3"} {
				b := store.SampleBatch{DeviceID: dev}
				at := t0.Add(time.Duration(seq%40) * time.Second) // times repeat and go back
				for j := range 4 {
					b.Samples = append(b.Samples, store.Sample{Point: fmt.Sprintf("p%d", j), Value: float64(seq*10 + j), Status: uint32(j), At: at, BatchSeq: uint64(seq + 1)})
				}
				batches = append(batches, b)
			}
		}
		one, many := newStore(t), newStore(t)
		// The latest values already stored: one newer, one older than the batches.
		for _, st := range []store.Store{one, many} {
			if err := st.StoreSamples(ctx, "d1", []store.Sample{{Point: "p0", Value: -1, At: t0.Add(time.Hour)}, {Point: "p1", Value: -1, At: t0.Add(-time.Hour)}}); err != nil {
				t.Fatal(err)
			}
		}
		for _, b := range batches {
			if err := one.StoreSamples(ctx, b.DeviceID, b.Samples); err != nil {
				t.Fatal(err)
			}
		}
		if err := many.StoreSampleBatches(ctx, batches); err != nil {
			t.Fatal(err)
		}
		if err := many.StoreSampleBatches(ctx, nil); err != nil {
			t.Fatalf("no batches: %v", err)
		}
		for _, dev := range []string{"d1", "d2", "d3"} {
			want, err := one.LatestValues(ctx, dev)
			if err != nil {
				t.Fatal(err)
			}
			got, err := many.LatestValues(ctx, dev)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("%s latest values (-StoreSamples +StoreSampleBatches):\n%s", dev, diff)
			}
			for j := range 4 {
				p := fmt.Sprintf("p%d", j)
				wantH, err := one.History(ctx, dev, p, t0.Add(-2*time.Hour), t0.Add(2*time.Hour), 10000)
				if err != nil {
					t.Fatal(err)
				}
				gotH, err := many.History(ctx, dev, p, t0.Add(-2*time.Hour), t0.Add(2*time.Hour), 10000)
				if err != nil {
					t.Fatal(err)
				}
				if len(gotH) != 120+boolInt(dev == "d1" && j < 2) {
					t.Errorf("%s %s: %d history rows", dev, p, len(gotH))
				}
				if diff := cmp.Diff(wantH, gotH); diff != "" {
					t.Errorf("%s %s history (-StoreSamples +StoreSampleBatches):\n%s", dev, p, diff)
				}
			}
		}
		d1, err := many.LatestValues(ctx, "d1")
		if err != nil {
			t.Fatal(err)
		}
		// p0 keeps the newer stored value; p1 is the last batch at the
		// latest time (seq 119, at t0+39s; equal times: the later batch wins).
		if d1[0].Value != -1 || d1[1].Value != 119*10+1 {
			t.Errorf("d1 latest values: %+v", d1)
		}
	})
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestHistoryRangeAndRetention: History answers a time range across
// bucket boundaries and a limit for a narrow and for a wide device (one
// wide batch is split into partitions), and PruneHistory deletes only
// what is wholly older than the cutoff.
func TestHistoryRangeAndRetention(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		ctx := context.Background()
		st := newStore(t)
		t0 := time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC)
		// 10 minutes, a batch every 10 s; "wide" has 1,000 points a batch.
		var batches []store.SampleBatch
		for i := range 60 {
			at := t0.Add(time.Duration(i) * 10 * time.Second)
			narrow := store.SampleBatch{DeviceID: "narrow"}
			wide := store.SampleBatch{DeviceID: "wide"}
			for j := range 1000 {
				s := store.Sample{Point: fmt.Sprintf("p%d", j), Value: float64(i), Status: uint32(j), At: at, BatchSeq: uint64(i + 1)}
				wide.Samples = append(wide.Samples, s)
				if j < 5 {
					narrow.Samples = append(narrow.Samples, s)
				}
			}
			batches = append(batches, narrow, wide)
			if i%7 == 6 || i == 59 { // groups of several batches
				if err := st.StoreSampleBatches(ctx, batches); err != nil {
					t.Fatal(err)
				}
				batches = nil
			}
		}
		for _, dev := range []string{"narrow", "wide"} {
			for _, p := range []string{"p0", "p3"} {
				// [t0+95s, t0+305s): samples 10 … 30.
				h, err := st.History(ctx, dev, p, t0.Add(95*time.Second), t0.Add(305*time.Second), 0)
				if err != nil {
					t.Fatal(err)
				}
				if len(h) != 21 || h[0].Value != 10 || h[20].Value != 30 {
					t.Errorf("%s %s: %d samples %v … , want 10…30", dev, p, len(h), h)
					continue
				}
				for k, s := range h {
					if s.Value != float64(10+k) || s.Point != p || s.Status != uint32(p[1]-'0') || s.BatchSeq != uint64(11+k) || !s.At.Equal(t0.Add(time.Duration(10+k)*10*time.Second)) {
						t.Errorf("%s %s sample %d: %+v", dev, p, k, s)
					}
				}
				h, err = st.History(ctx, dev, p, t0, t0.Add(time.Hour), 13)
				if err != nil {
					t.Fatal(err)
				}
				if len(h) != 13 || h[12].Value != 12 {
					t.Errorf("%s %s limit 13: %d samples", dev, p, len(h))
				}
			}
		}
		// Cut at t0+125s: buckets [t0, t0+60s) and [t0+60s, t0+120s) go,
		// the bucket holding 120 s and 130 s… stays whole.
		n, err := st.PruneHistory(ctx, t0.Add(125*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if want := int64(12 * (1000 + 5)); n != want {
			t.Errorf("pruned %d samples, want %d", n, want)
		}
		for _, dev := range []string{"narrow", "wide"} {
			h, err := st.History(ctx, dev, "p4", t0, t0.Add(time.Hour), 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(h) != 48 || h[0].Value != 12 {
				t.Errorf("%s after pruning: %d samples, first %+v; want 48 from 12", dev, len(h), h[0])
			}
		}
	})
}

// TestConcurrentLatestWriters: transactions writing different points of
// the same devices at once (several ingest writers, e.g. control planes
// sharing PostgreSQL) lose none of them, also on a device's first write.
func TestConcurrentLatestWriters(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		ctx := context.Background()
		st := newStore(t)
		t0 := time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC)
		const writers, rounds = 4, 30
		var start sync.WaitGroup
		start.Add(writers)
		errs := make(chan error, writers)
		for w := range writers {
			go func() {
				start.Done()
				start.Wait()
				for r := range rounds {
					// Every writer writes the round's new devices.
					var bs []store.SampleBatch
					for k := range 3 {
						bs = append(bs, store.SampleBatch{DeviceID: fmt.Sprintf("d%02d-%d", r, k), Samples: []store.Sample{{Point: fmt.Sprintf("w%d", w), Value: float64(r), At: t0}}})
					}
					if err := st.StoreSampleBatches(ctx, bs); err != nil {
						errs <- err
						return
					}
				}
				errs <- nil
			}()
		}
		for range writers {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		for r := range rounds {
			for k := range 3 {
				dev := fmt.Sprintf("d%02d-%d", r, k)
				vs, err := st.LatestValues(ctx, dev)
				if err != nil {
					t.Fatal(err)
				}
				if len(vs) != writers {
					t.Errorf("%s: %d latest values, want %d", dev, len(vs), writers)
				}
			}
		}
	})
}
