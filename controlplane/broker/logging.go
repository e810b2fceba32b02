package broker

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// limitedHandler rate-limits the records mochi logs at Warn and above:
// each distinct message passes at most once per interval; the next one that
// passes carries the number suppressed meanwhile. mochi logs one warning
// per dropped QoS 1 message ("client store quota reached"), which under a
// slow subscriber would otherwise flood the log. Info and Debug records
// pass unchanged (they are filtered by the wrapped handler's level).
type limitedHandler struct {
	next     slog.Handler
	st       *limitState
	interval time.Duration
}

type limitState struct {
	mu   sync.Mutex
	seen map[string]*limitEntry
	now  func() time.Time
}

type limitEntry struct {
	last       time.Time
	suppressed int
}

// maxLimitKeys bounds the limiter's memory; mochi's warning messages are a
// small fixed set, so this is never reached in practice.
const maxLimitKeys = 256

func newLimitedHandler(next slog.Handler, interval time.Duration, now func() time.Time) *limitedHandler {
	return &limitedHandler{next: next, interval: interval, st: &limitState{seen: map[string]*limitEntry{}, now: now}}
}

func (h *limitedHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

func (h *limitedHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelWarn {
		return h.next.Handle(ctx, r)
	}
	h.st.mu.Lock()
	now := h.st.now()
	e := h.st.seen[r.Message]
	if e == nil {
		if len(h.st.seen) >= maxLimitKeys {
			clear(h.st.seen)
		}
		e = &limitEntry{}
		h.st.seen[r.Message] = e
	} else if now.Sub(e.last) < h.interval {
		e.suppressed++
		h.st.mu.Unlock()
		return nil
	}
	n := e.suppressed
	e.last, e.suppressed = now, 0
	h.st.mu.Unlock()
	if n > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int("suppressed", n))
	}
	return h.next.Handle(ctx, r)
}

func (h *limitedHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &limitedHandler{next: h.next.WithAttrs(attrs), st: h.st, interval: h.interval}
}

func (h *limitedHandler) WithGroup(name string) slog.Handler {
	return &limitedHandler{next: h.next.WithGroup(name), st: h.st, interval: h.interval}
}
