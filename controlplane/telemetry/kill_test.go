package telemetry_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gantry-iot/gantry/controlplane/store"
	"github.com/gantry-iot/gantry/controlplane/telemetry"
	"github.com/gantry-iot/gantry/pkg/topics"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
)

// killChildEnv names the SQLite file a re-executed test binary ingests
// into until it is killed (see TestNoAckedBatchLostOnKill).
const killChildEnv = "GANTRY_TELEMETRY_KILL_CHILD_DB"

// TestMain lets the test binary act as the ingesting process of
// TestNoAckedBatchLostOnKill.
func TestMain(m *testing.M) {
	if path := os.Getenv(killChildEnv); path != "" {
		killChild(path)
		return
	}
	os.Exit(m.Run())
}

const killDevices, killPoints = 16, 400

// killChild ingests numbered batches from killDevices devices (400
// points each, so the history blocks of a group are wide and partitioned)
// and prints "ack DEVICE SEQ" once Ingest returned for a batch — the
// moment the broker would send the PUBACK — until it is killed.
func killChild(path string) {
	st, err := store.Open(context.Background(), path, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	in := telemetry.New(st, telemetry.Config{}, nil, nil)
	go in.Run(context.Background())
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	var wg sync.WaitGroup
	for d := range killDevices {
		wg.Go(func() {
			dev := fmt.Sprintf("dev-%02d", d)
			topic := topics.Device(dev, topics.Telemetry)
			for seq := uint64(1); ; seq++ {
				b := &gantryv1.TelemetryBatch{Seq: seq}
				for j := range killPoints {
					b.Samples = append(b.Samples, &gantryv1.Sample{Point: fmt.Sprintf("p%d", j), Value: float64(seq*100) + float64(j),
						At: timestamppb.New(t0.Add(time.Duration(seq) * time.Second))})
				}
				msg, err := proto.Marshal(b)
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(2)
				}
				if err := in.Ingest(topic, msg); err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(2)
				}
				mu.Lock()
				fmt.Fprintf(out, "ack %s %d\n", dev, seq)
				out.Flush()
				mu.Unlock()
			}
		})
	}
	wg.Wait()
}

// TestNoAckedBatchLostOnKill: a process ingesting into SQLite is killed
// with SIGKILL while batches are being written; every batch it had
// acknowledged is in the reopened store (history and latest value), which
// is what lets the broker send the PUBACK after Ingest returns.
func TestNoAckedBatchLostOnKill(t *testing.T) {
	if testing.Short() {
		t.Skip("re-executes the test binary")
	}
	path := filepath.Join(t.TempDir(), "gantry.db")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), killChildEnv+"="+path)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := map[string]uint64{}
	lines := bufio.NewScanner(stdout)
	deadline := time.Now().Add(2 * time.Minute)
	for n := 0; n < 400 && lines.Scan(); n++ {
		var dev string
		var seq uint64
		if _, err := fmt.Sscanf(lines.Text(), "ack %s %d", &dev, &seq); err != nil {
			t.Fatalf("child said %q: %v", lines.Text(), err)
		}
		acked[dev] = max(acked[dev], seq)
		if time.Now().After(deadline) {
			break
		}
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	// Acks printed before the kill landed count too.
	for lines.Scan() {
		var dev string
		var seq uint64
		if _, err := fmt.Sscanf(lines.Text(), "ack %s %d", &dev, &seq); err == nil {
			acked[dev] = max(acked[dev], seq)
		}
	}
	_ = cmd.Wait()
	if len(acked) == 0 {
		t.Fatal("the child acknowledged nothing before it was killed")
	}
	st, err := store.Open(context.Background(), path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	for dev, last := range acked {
		for _, p := range []string{"p0", fmt.Sprintf("p%d", killPoints-1)} {
			h, err := st.History(ctx, dev, p, t0, t0.Add(time.Duration(last+10)*time.Second), 100000)
			if err != nil {
				t.Fatal(err)
			}
			if uint64(len(h)) < last {
				t.Errorf("%s %s: %d history samples, %d batches were acknowledged", dev, p, len(h), last)
				continue
			}
			for k := range last {
				if h[k].BatchSeq != k+1 {
					t.Fatalf("%s %s: history sample %d is from batch %d, want %d", dev, p, k, h[k].BatchSeq, k+1)
				}
			}
		}
		latest, err := st.LatestValues(ctx, dev)
		if err != nil {
			t.Fatal(err)
		}
		if len(latest) != killPoints || latest[0].Value < float64(last*100) {
			t.Errorf("%s: %d latest values, first %+v; want %d points from batch ≥ %d", dev, len(latest), latest[0], killPoints, last)
		}
	}
	t.Logf("killed after %d devices acknowledged up to %v", len(acked), acked)
}
