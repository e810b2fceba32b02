// Package presence records devices' online state in the store, coalesced:
// Set only notes the state in memory, and one writer goroutine (Run)
// writes all states noted since its last write in one transaction every
// interval (default 150 ms). Many connects then cost one transaction
// instead of one or two each, and a device that flaps within an interval
// costs one row update.
//
// Order: per device the state with the newest time wins, also across
// writes (a state older than one already noted or written is dropped and
// counted), so a late "online" from an earlier connection cannot overtake
// the "offline" of the will that followed it. Readers of the store see a
// change at most about one interval late.
package presence

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gantry-iot/gantry/controlplane/store"
)

// DefaultInterval is the time between writes.
const DefaultInterval = 150 * time.Millisecond

// Store is the persistence presence needs.
type Store interface {
	SetDevicesOnline(ctx context.Context, states []store.DeviceOnline) (unknown int, err error)
}

// Writer coalesces online-state writes. Set is safe for concurrent use;
// Run runs once, Close flushes and stops it.
type Writer struct {
	st       Store
	interval time.Duration
	log      *slog.Logger

	mu      sync.Mutex
	pending map[string]store.DeviceOnline
	latest  map[string]time.Time // newest time noted per device

	kick    chan struct{} // Flush requests
	flushed chan struct{} // closed and replaced after each write
	quit    chan struct{}
	done    chan struct{}
	once    sync.Once

	writes, states, stale, failures prometheus.Counter
}

// New returns a Writer (interval 0: DefaultInterval). Start Run.
func New(st Store, interval time.Duration, reg prometheus.Registerer, logger *slog.Logger) *Writer {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if interval <= 0 {
		interval = DefaultInterval
	}
	w := &Writer{st: st, interval: interval, log: logger,
		pending: map[string]store.DeviceOnline{}, latest: map[string]time.Time{},
		kick: make(chan struct{}, 1), flushed: make(chan struct{}), quit: make(chan struct{}), done: make(chan struct{}),
		writes:   prometheus.NewCounter(prometheus.CounterOpts{Name: "gantry_presence_writes_total", Help: "Transactions writing device online states."}),
		states:   prometheus.NewCounter(prometheus.CounterOpts{Name: "gantry_presence_states_total", Help: "Device online states written (after coalescing)."}),
		stale:    prometheus.NewCounter(prometheus.CounterOpts{Name: "gantry_presence_stale_total", Help: "Device online states dropped because a newer one was already noted."}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{Name: "gantry_presence_write_failures_total", Help: "Failed online-state transactions (retried at the next write)."}),
	}
	if reg != nil {
		reg.MustRegister(w.writes, w.states, w.stale, w.failures)
	}
	return w
}

// Set notes device id's state at time at; it is written within about one
// interval. A state older than the newest noted for the device is dropped.
func (w *Writer) Set(id string, online bool, at time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if last, ok := w.latest[id]; ok && at.Before(last) {
		w.stale.Inc()
		return
	}
	w.latest[id] = at
	w.pending[id] = store.DeviceOnline{ID: id, Online: online, At: at}
}

// Run writes the noted states every interval until ctx ends or Close,
// then writes what is left.
func (w *Writer) Run(ctx context.Context) {
	defer close(w.done)
	wctx := context.WithoutCancel(ctx)
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-w.kick:
		case <-ctx.Done():
			w.write(wctx)
			return
		case <-w.quit:
			w.write(wctx)
			return
		}
		w.write(wctx)
	}
}

// Flush asks Run to write now and waits until a write that started after
// the call has finished (or ctx ends).
func (w *Writer) Flush(ctx context.Context) error {
	w.mu.Lock()
	ch := w.flushed
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
	// The write under way when Flush was called may have taken its states
	// before ours; wait for the next one as well.
	for range 2 {
		select {
		case <-ch:
		case <-w.done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
		w.mu.Lock()
		ch = w.flushed
		w.mu.Unlock()
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
	return nil
}

func (w *Writer) write(ctx context.Context) {
	w.mu.Lock()
	batch := make([]store.DeviceOnline, 0, len(w.pending))
	for _, s := range w.pending {
		batch = append(batch, s)
	}
	clear(w.pending)
	w.mu.Unlock()
	if len(batch) > 0 {
		unknown, err := w.st.SetDevicesOnline(ctx, batch)
		if err != nil {
			w.failures.Inc()
			w.log.Warn("device states not recorded; retrying", "devices", len(batch), "err", err)
			w.mu.Lock()
			for _, s := range batch { // keep what is still the newest
				if _, newer := w.pending[s.ID]; !newer {
					w.pending[s.ID] = s
				}
			}
			w.mu.Unlock()
		} else {
			w.writes.Inc()
			w.states.Add(float64(len(batch)))
			if unknown > 0 {
				w.log.Debug("online state of unknown devices ignored", "devices", unknown)
			}
		}
	}
	w.mu.Lock()
	close(w.flushed)
	w.flushed = make(chan struct{})
	w.mu.Unlock()
}

// Close writes what is pending and stops Run. Safe to call more than once;
// call it only after Run has started.
func (w *Writer) Close() error {
	w.once.Do(func() { close(w.quit) })
	<-w.done
	return nil
}
