package telemetry_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gantry-iot/gantry/controlplane/store"
	"github.com/gantry-iot/gantry/controlplane/store/storetest"
	"github.com/gantry-iot/gantry/controlplane/telemetry"
	"github.com/gantry-iot/gantry/pkg/topics"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
)

// perBatch is the ingest before group commit: each Handle call parses its
// batch and stores it in its own transaction.
func perBatch(st store.Store, topic string, payload []byte) error {
	dev, _, err := topics.Parse(topic)
	if err != nil {
		return err
	}
	var b gantryv1.TelemetryBatch
	if err := proto.Unmarshal(payload, &b); err != nil {
		return err
	}
	samples := make([]store.Sample, 0, len(b.Samples))
	for _, s := range b.Samples {
		samples = append(samples, store.Sample{Point: s.Point, Value: s.Value, Status: s.Status, At: s.At.AsTime(), BatchSeq: b.Seq})
	}
	return st.StoreSamples(context.Background(), dev, samples)
}

// BenchmarkIngest compares 64 devices publishing at once (SQLite) through
// the per-batch path and through group commit (default, and waiting 2 or
// 5 ms for fuller groups), with 10 values a batch (many small agents) and
// with 1,000 (one wide OPC-UA agent's batches, 64 devices here; grouped
// only);
// batches/s and values/s are the figures to compare. To compare store
// layouts, run the same file on two builds alternately.
//
//	go test -run '^$' -bench BenchmarkIngest -benchtime 3000x ./controlplane/telemetry/
func BenchmarkIngest(b *testing.B) {
	const producers = 64
	run := func(b *testing.B, values int, handle func(topic string, payload []byte)) {
		var next atomic.Int64
		var wg sync.WaitGroup
		b.ResetTimer()
		start := time.Now()
		for p := range producers {
			topic := topics.Device(fmt.Sprintf("dev-%02d", p), topics.Telemetry)
			wg.Go(func() {
				for seq := uint64(1); next.Add(1) <= int64(b.N); seq++ {
					handle(topic, payload(b, seq, values))
				}
			})
		}
		wg.Wait()
		secs := time.Since(start).Seconds()
		b.ReportMetric(float64(b.N)/secs, "batches/s")
		b.ReportMetric(float64(b.N*values)/secs, "values/s")
	}
	for _, values := range []int{10, 1000} {
		b.Run(fmt.Sprintf("values=%d/per-batch", values), func(b *testing.B) {
			if values > 10 {
				b.Skip("64 writers of 1,000 values each exceed SQLite's busy timeout")
			}
			st := storetest.SQLite(b)
			run(b, values, func(topic string, payload []byte) {
				if err := perBatch(st, topic, payload); err != nil {
					b.Error(err)
				}
			})
		})
		for _, c := range []struct {
			name string
			cfg  telemetry.Config
		}{
			{"grouped", telemetry.Config{}},
			{"grouped-wait2ms", telemetry.Config{Window: 2 * time.Millisecond}},
		} {
			b.Run(fmt.Sprintf("values=%d/%s", values, c.name), func(b *testing.B) {
				reg := prometheus.NewRegistry()
				in := telemetry.New(storetest.SQLite(b), c.cfg, reg, nil)
				start(b, in)
				run(b, values, in.Handle)
				if got := counter(b, reg, "gantry_telemetry_batches_total"); got != float64(b.N) {
					b.Errorf("stored %v batches of %d", got, b.N)
				}
				b.ReportMetric(float64(b.N)/counter(b, reg, "gantry_telemetry_group_batches"), "batches/tx")
			})
		}
	}
}

// BenchmarkIngestWideDevice is one OPC-UA agent with 10,000 nodes: one
// device publishing batches of 1,000 of its points in turn, one at a time
// (the broker handles one connection's publishes in order, so each batch
// waits for its own commit). values/s is the figure to compare.
//
//	go test -run '^$' -bench BenchmarkIngestWideDevice -benchtime 300x ./controlplane/telemetry/
func BenchmarkIngestWideDevice(b *testing.B) {
	const points, perBatch = 10000, 1000
	payloads := make([][]byte, points/perBatch)
	for k := range payloads {
		batch := &gantryv1.TelemetryBatch{Seq: uint64(k + 1)}
		for j := range perBatch {
			batch.Samples = append(batch.Samples, &gantryv1.Sample{Point: fmt.Sprintf("ns=2;s=gen%d", k*perBatch+j), Value: float64(j), At: timestamppb.New(t0)})
		}
		p, err := proto.Marshal(batch)
		if err != nil {
			b.Fatal(err)
		}
		payloads[k] = p
	}
	reg := prometheus.NewRegistry()
	in := telemetry.New(storetest.SQLite(b), telemetry.Config{}, reg, nil)
	start(b, in)
	topic := topics.Device("opcua-10k", topics.Telemetry)
	for _, p := range payloads { // every point once before timing
		in.Handle(topic, p)
	}
	b.ResetTimer()
	begin := time.Now()
	for i := range b.N {
		in.Handle(topic, payloads[i%len(payloads)])
	}
	b.ReportMetric(float64(b.N*perBatch)/time.Since(begin).Seconds(), "values/s")
}

// BenchmarkIngestManyDevices is the agentsim shape: 10,000 small devices,
// each publishing a batch of 10 values and waiting for its PUBACK before
// the next (512 connections handled at once). batches/s is the figure to
// compare (issue 5's goal: 10,000 batches/s).
//
//	go test -run '^$' -bench BenchmarkIngestManyDevices -benchtime 50000x ./controlplane/telemetry/
func BenchmarkIngestManyDevices(b *testing.B) {
	const devices, conns, values = 10000, 512, 10
	reg := prometheus.NewRegistry()
	in := telemetry.New(storetest.SQLite(b), telemetry.Config{}, reg, nil)
	start(b, in)
	topicsOf := make([]string, devices)
	for d := range topicsOf {
		topicsOf[d] = topics.Device(fmt.Sprintf("agentsim-%05d", d), topics.Telemetry)
	}
	var next atomic.Int64
	work := func(n int64) {
		var wg sync.WaitGroup
		for range conns {
			wg.Go(func() {
				for i := next.Add(1); i <= n; i = next.Add(1) {
					in.Handle(topicsOf[i%devices], payloadAt(b, uint64(i/devices+1), values, t0.Add(time.Duration(i)*time.Millisecond)))
				}
			})
		}
		wg.Wait()
	}
	work(devices) // every device's snapshot exists before timing
	next.Store(0)
	b.ResetTimer()
	begin := time.Now()
	work(int64(b.N))
	secs := time.Since(begin).Seconds()
	b.ReportMetric(float64(b.N)/secs, "batches/s")
	b.ReportMetric(float64(b.N)/counter(b, reg, "gantry_telemetry_group_batches"), "batches/tx")
}
