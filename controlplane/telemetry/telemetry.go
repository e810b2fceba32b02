// Package telemetry ingests the agents' telemetry batches from MQTT into
// the store (latest value per data point and a bounded history) and
// counts what it sees for Prometheus.
//
// Handle runs on the publishing device's connection, before the broker
// sends the PUBACK, so it returns only once the batch is committed (or
// storing it failed). To keep the store from becoming the ceiling, the
// batches of many concurrent Handle calls are written by a writer
// goroutine (Run; several on PostgreSQL) in one transaction: group commit.
package telemetry

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gantry-iot/gantry/controlplane/store"
	"github.com/gantry-iot/gantry/pkg/topics"
)

// Store is the persistence ingest needs.
type Store interface {
	// StoreSampleBatches stores the batches in one transaction: all or none.
	StoreSampleBatches(ctx context.Context, batches []store.SampleBatch) error
}

// MaxSamples bounds one batch.
const MaxSamples = 10000

// Config tunes group commit. The zero value is the default.
type Config struct {
	// MaxGroup is the most batches written in one transaction (0 →
	// 1024). With 10,000 agents publishing, larger groups rewrite each
	// snapshot page once for more devices: 1,024 acknowledged ~12 % more
	// messages/s than 256 (docs/benchmarks.md).
	MaxGroup int
	// Writers is how many transactions run at once (0 → 1). SQLite
	// writes one transaction at a time anyway; PostgreSQL can commit
	// several groups in parallel (their devices' rows are locked in key
	// order, so concurrent groups do not deadlock).
	Writers int
	// Window is how long the writer waits for more batches once it has
	// one while devices are busy (0: never wait). Without waiting, groups
	// form anyway from the batches handed over during the previous
	// transaction; BenchmarkIngest measured waiting 2 ms as no faster
	// and 5 ms as slower, and waiting adds latency. When ingest is idle (the last transaction held a single
	// batch and none is waiting) a batch is written at once.
	Window time.Duration
}

func (c Config) withDefaults() Config {
	if c.MaxGroup <= 0 {
		c.MaxGroup = 1024
	}
	if c.Writers <= 0 {
		c.Writers = 1
	}
	return c
}

// pending is one Handle call waiting for its batch to be committed.
type pending struct {
	batch store.SampleBatch
	done  chan error // buffered: the writer never blocks on it
}

// Ingest handles telemetry messages. Handle is safe for concurrent use;
// Run must be running (one at a time) for Handle to return, and Close
// stops it. Handle calls after Close return without storing.
type Ingest struct {
	st  Store
	cfg Config
	log *slog.Logger

	batches, values, duplicates, rejected, failed prometheus.Counter
	groupSize, commitSeconds                      prometheus.Histogram

	queue   chan *pending // unbuffered: a send is a handoff to the writer
	quit    chan struct{} // closed by Close
	stopped chan struct{} // closed when the writer is gone
	state   sync.Mutex    // guards running, closed
	running bool
	closed  bool

	mu      sync.Mutex
	lastSeq map[string]uint64 // device → highest stored batch sequence
}

// New returns an Ingest registering its metrics on reg (may be nil). Start
// its writer with Run before subscribing Handle.
func New(st Store, cfg Config, reg prometheus.Registerer, logger *slog.Logger) *Ingest {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	i := &Ingest{st: st, cfg: cfg.withDefaults(), log: logger, lastSeq: map[string]uint64{},
		queue: make(chan *pending), quit: make(chan struct{}), stopped: make(chan struct{}),
		batches:    prometheus.NewCounter(prometheus.CounterOpts{Name: "gantry_telemetry_batches_total", Help: "Telemetry batches ingested."}),
		values:     prometheus.NewCounter(prometheus.CounterOpts{Name: "gantry_telemetry_values_total", Help: "Values ingested."}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{Name: "gantry_telemetry_duplicates_total", Help: "Batches received again after an agent's redelivery (at-least-once)."}),
		rejected:   prometheus.NewCounter(prometheus.CounterOpts{Name: "gantry_telemetry_rejected_total", Help: "Malformed telemetry messages."}),
		failed:     prometheus.NewCounter(prometheus.CounterOpts{Name: "gantry_telemetry_failed_total", Help: "Telemetry batches not stored (store error or shutting down)."}),
		groupSize: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "gantry_telemetry_group_batches", Help: "Batches written per store transaction (group commit).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10)}),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "gantry_telemetry_commit_seconds", Help: "Duration of a group's store transaction.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
	}
	if reg != nil {
		reg.MustRegister(i.batches, i.values, i.duplicates, i.rejected, i.failed, i.groupSize, i.commitSeconds)
	}
	return i
}

// Handle ingests one message from gantry/v1/dev/{id}/telemetry and returns
// once it is stored or storing it failed (see Ingest for callers that can
// refuse the message then). The broker's ACL guarantees the topic's device
// is the publisher.
func (i *Ingest) Handle(topic string, payload []byte) { _ = i.Ingest(topic, payload) }

// Ingest is Handle reporting the outcome: nil once the batch is stored or
// when the message is malformed (counted and dropped: sending it again
// cannot help), an error wrapping ErrNotStored when the store failed or
// ingest is closed, so the caller can withhold the acknowledgement and
// have the device send it again.
func (i *Ingest) Ingest(topic string, payload []byte) error {
	dev, kind, err := topics.Parse(topic)
	if err != nil || kind != topics.Telemetry {
		i.rejected.Inc()
		return nil
	}
	seq, samples, err := decodeBatch(payload, time.Now())
	if err != nil {
		i.rejected.Inc()
		i.log.Warn("malformed telemetry", "device", dev, "bytes", len(payload), "err", err)
		return nil
	}
	p := &pending{batch: store.SampleBatch{DeviceID: dev, Samples: samples}, done: make(chan error, 1)}
	select {
	case i.queue <- p:
		err = <-p.done
	case <-i.stopped:
		err = ErrClosed
	}
	if err != nil {
		i.failed.Inc()
		i.log.Error("telemetry not stored", "device", dev, "seq", seq, "err", err)
		return fmt.Errorf("telemetry: device %s batch %d: %w: %w", dev, seq, ErrNotStored, err)
	}
	i.mu.Lock()
	if seq != 0 && seq <= i.lastSeq[dev] {
		i.duplicates.Inc()
	} else if seq > i.lastSeq[dev] {
		i.lastSeq[dev] = seq
	}
	i.mu.Unlock()
	i.batches.Inc()
	i.values.Add(float64(len(samples)))
	return nil
}

// Run writes the batches of Handle calls (with Config.Writers writers)
// until ctx ends or Close is called, then writes the batches already
// handed over and returns. Only one Run may be active; it returns
// ErrClosed after Close.
func (i *Ingest) Run(ctx context.Context) error {
	i.state.Lock()
	if i.closed || i.running {
		i.state.Unlock()
		return ErrClosed
	}
	i.running = true
	i.state.Unlock()
	defer close(i.stopped)
	var wg sync.WaitGroup
	for range i.cfg.Writers {
		wg.Go(func() { i.writer(ctx) })
	}
	wg.Wait()
	return nil
}

// writer forms groups from the handed-over batches and writes them until
// ctx ends or Close, then writes what is still handed over.
func (i *Ingest) writer(ctx context.Context) {
	// The writes themselves are not cancelled: a Handle waiting for its
	// batch gets the real outcome.
	wctx := context.WithoutCancel(ctx)
	idle := true
	group := make([]*pending, 0, i.cfg.MaxGroup)
	for {
		select {
		case p := <-i.queue:
			group = i.collect(ctx, append(group[:0], p), idle)
			idle = len(group) == 1
			i.write(wctx, group)
			clear(group)
		case <-ctx.Done():
			i.drain(wctx, group[:0])
			return
		case <-i.quit:
			i.drain(wctx, group[:0])
			return
		}
	}
}

// collect adds the batches handed over until the group is full; when none
// is waiting it returns at once if ingest was idle, else it waits up to
// the window for more.
func (i *Ingest) collect(ctx context.Context, group []*pending, idle bool) []*pending {
	var timer <-chan time.Time
	for len(group) < i.cfg.MaxGroup {
		select {
		case p := <-i.queue:
			group = append(group, p)
			continue
		default:
		}
		if idle || i.cfg.Window <= 0 {
			return group
		}
		if timer == nil {
			t := time.NewTimer(i.cfg.Window)
			defer t.Stop()
			timer = t.C
		}
		select {
		case p := <-i.queue:
			group = append(group, p)
		case <-timer:
			return group
		case <-ctx.Done():
			return group
		case <-i.quit:
			return group
		}
	}
	return group
}

// drain writes the batches of Handle calls still handing over at shutdown.
func (i *Ingest) drain(ctx context.Context, group []*pending) {
	for {
		select {
		case p := <-i.queue:
			group = append(group, p)
			if len(group) == i.cfg.MaxGroup {
				i.write(ctx, group)
				group = group[:0]
			}
		default:
			if len(group) > 0 {
				i.write(ctx, group)
			}
			return
		}
	}
}

// write stores a group in one transaction and wakes its Handle calls. If
// the transaction fails, each batch is stored on its own so that one bad
// batch does not fail the others.
func (i *Ingest) write(ctx context.Context, group []*pending) {
	batches := make([]store.SampleBatch, len(group))
	for j, p := range group {
		batches[j] = p.batch
	}
	start := time.Now()
	err := i.st.StoreSampleBatches(ctx, batches)
	i.commitSeconds.Observe(time.Since(start).Seconds())
	i.groupSize.Observe(float64(len(group)))
	if err == nil || len(group) == 1 {
		for _, p := range group {
			p.done <- err
		}
		return
	}
	i.log.Warn("telemetry group not stored, storing its batches one by one", "batches", len(group), "err", err)
	for j, p := range group {
		p.done <- i.st.StoreSampleBatches(ctx, batches[j:j+1])
	}
}

// Close stops Run after it has written the batches already handed over
// and waits for it. Safe to call more than once.
func (i *Ingest) Close() error {
	i.state.Lock()
	first := !i.closed
	i.closed = true
	running := i.running
	i.state.Unlock()
	if first {
		close(i.quit)
		if !running {
			close(i.stopped)
		}
	}
	<-i.stopped
	return nil
}
