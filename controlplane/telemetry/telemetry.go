// Package telemetry ingests the agents' telemetry batches from MQTT into
// the store (latest value per data point and a bounded history) and
// counts what it sees for Prometheus.
package telemetry

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/gantry-iot/gantry/controlplane/store"
	"github.com/gantry-iot/gantry/pkg/topics"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
)

// Store is the persistence ingest needs.
type Store interface {
	StoreSamples(ctx context.Context, deviceID string, samples []store.Sample) error
	PruneHistory(ctx context.Context, before time.Time) (int64, error)
}

// MaxSamples bounds one batch.
const MaxSamples = 10000

// Ingest handles telemetry messages. Safe for concurrent use.
type Ingest struct {
	st  Store
	log *slog.Logger

	batches, values, duplicates, rejected prometheus.Counter

	mu      sync.Mutex
	lastSeq map[string]uint64 // device → highest batch sequence seen
}

// New returns an Ingest registering its metrics on reg (may be nil).
func New(st Store, reg prometheus.Registerer, logger *slog.Logger) *Ingest {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	i := &Ingest{st: st, log: logger, lastSeq: map[string]uint64{},
		batches:    prometheus.NewCounter(prometheus.CounterOpts{Name: "gantry_telemetry_batches_total", Help: "Telemetry batches ingested."}),
		values:     prometheus.NewCounter(prometheus.CounterOpts{Name: "gantry_telemetry_values_total", Help: "Values ingested."}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{Name: "gantry_telemetry_duplicates_total", Help: "Batches received again after an agent's redelivery (at-least-once)."}),
		rejected:   prometheus.NewCounter(prometheus.CounterOpts{Name: "gantry_telemetry_rejected_total", Help: "Malformed telemetry messages."}),
	}
	if reg != nil {
		reg.MustRegister(i.batches, i.values, i.duplicates, i.rejected)
	}
	return i
}

// Handle ingests one message from gantry/v1/dev/{id}/telemetry. The
// broker's ACL guarantees the topic's device is the publisher.
func (i *Ingest) Handle(topic string, payload []byte) {
	dev, kind, err := topics.Parse(topic)
	if err != nil || kind != topics.Telemetry {
		i.rejected.Inc()
		return
	}
	var b gantryv1.TelemetryBatch
	if err := proto.Unmarshal(payload, &b); err != nil || len(b.Samples) > MaxSamples {
		i.rejected.Inc()
		i.log.Warn("malformed telemetry", "device", dev, "bytes", len(payload), "err", err)
		return
	}
	i.mu.Lock()
	if b.Seq != 0 && b.Seq <= i.lastSeq[dev] {
		i.duplicates.Inc()
	} else if b.Seq > i.lastSeq[dev] {
		i.lastSeq[dev] = b.Seq
	}
	i.mu.Unlock()
	samples := make([]store.Sample, 0, len(b.Samples))
	for _, s := range b.Samples {
		if s.Point == "" || len(s.Point) > 200 {
			continue
		}
		at := s.At.AsTime()
		if s.At == nil {
			at = time.Now()
		}
		samples = append(samples, store.Sample{Point: s.Point, Value: s.Value, Status: s.Status, At: at, BatchSeq: b.Seq})
	}
	if err := i.st.StoreSamples(context.Background(), dev, samples); err != nil {
		i.log.Error("telemetry not stored", "device", dev, "err", err)
		return
	}
	i.batches.Inc()
	i.values.Add(float64(len(samples)))
}

// Prune deletes history older than retention every interval until ctx ends.
func (i *Ingest) Prune(ctx context.Context, retention, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if n, err := i.st.PruneHistory(ctx, now.Add(-retention)); err != nil {
				i.log.Warn("history prune failed", "err", err)
			} else if n > 0 {
				i.log.Info("history pruned", "rows", n)
			}
		}
	}
}
