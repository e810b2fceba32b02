// Package forward moves records from the agent's durable queue to the
// MQTT broker: it publishes each record at QoS 1, acknowledges it in the
// queue only after the broker's PUBACK, keeps a bounded number of
// publishes in flight, and after a failure rewinds the queue so every
// unacknowledged record is sent again in order (at-least-once).
package forward

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gantry-iot/gantry/agent/queue"
)

// Publisher sends one payload and reports the broker's acknowledgement.
type Publisher interface {
	// PublishAsync starts a QoS 1 publish of the queue record seq; done is
	// called once with nil on PUBACK or the error.
	PublishAsync(seq uint64, payload []byte, done func(error))
	Connected() bool
}

// Permanent is implemented by publish errors that retrying cannot fix
// (e.g. a record that is not a valid message): such records are dropped
// and counted instead of blocking the queue.
type Permanent interface{ Permanent() bool }

// Stats counts forwarding outcomes.
type Stats struct {
	Sent, Acked, Failed, Rewinds, Discarded atomic.Int64
}

// Forwarder drains a queue into a Publisher. Run it once.
type Forwarder struct {
	q      *queue.Queue
	pub    Publisher
	window int
	log    *slog.Logger
	Stats  Stats
}

// New returns a Forwarder with at most window publishes in flight
// (default 64).
func New(q *queue.Queue, pub Publisher, window int, logger *slog.Logger) *Forwarder {
	if window <= 0 {
		window = 64
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Forwarder{q: q, pub: pub, window: window, log: logger}
}

// Run forwards until ctx ends.
func (f *Forwarder) Run(ctx context.Context) error {
	slots := make(chan struct{}, f.window)
	var failed atomic.Bool
	var inflight sync.WaitGroup
	defer inflight.Wait()
	for {
		if failed.Load() {
			// Wait for the in-flight publishes, then resend everything unacked.
			inflight.Wait()
			for !f.pub.Connected() {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(200 * time.Millisecond):
				}
			}
			f.q.Rewind()
			f.Stats.Rewinds.Add(1)
			failed.Store(false)
		}
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		rctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		rec, err := f.q.Next(rctx)
		cancel()
		if err != nil {
			<-slots
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, queue.ErrClosed) {
				return err
			}
			continue // nothing to send yet
		}
		if failed.Load() {
			<-slots
			continue // will be resent after the rewind
		}
		inflight.Add(1)
		f.Stats.Sent.Add(1)
		seq := rec.Seq
		f.pub.PublishAsync(seq, rec.Payload, func(err error) {
			defer inflight.Done()
			defer func() { <-slots }()
			var perm Permanent
			if errors.As(err, &perm) && perm.Permanent() {
				f.Stats.Discarded.Add(1)
				f.log.Error("discarding a record that cannot be sent", "seq", seq, "err", err)
				_ = f.q.Ack(seq)
				return
			}
			if err != nil {
				f.Stats.Failed.Add(1)
				failed.Store(true)
				return
			}
			f.Stats.Acked.Add(1)
			if err := f.q.Ack(seq); err != nil {
				f.log.Warn("queue ack failed", "seq", seq, "err", err)
			}
		})
	}
}
