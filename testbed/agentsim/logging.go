package agentsim

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// limitedHandler passes records at or above min through, at most one per
// message per window; the next one that passes carries how many were
// suppressed. Thousands of simulated agents losing their connection at
// once would otherwise log thousands of identical lines.
type limitedHandler struct {
	next   slog.Handler
	min    slog.Level
	window time.Duration
	state  *limitState
}

type limitState struct {
	mu   sync.Mutex
	last map[string]time.Time
	supp map[string]int
}

func newLimitedHandler(next slog.Handler, min slog.Level, window time.Duration) *limitedHandler {
	return &limitedHandler{next: next, min: min, window: window, state: &limitState{last: map[string]time.Time{}, supp: map[string]int{}}}
}

func (h *limitedHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.next.Enabled(ctx, l)
}

func (h *limitedHandler) Handle(ctx context.Context, r slog.Record) error {
	s := h.state
	s.mu.Lock()
	if t, ok := s.last[r.Message]; ok && r.Time.Sub(t) < h.window {
		s.supp[r.Message]++
		s.mu.Unlock()
		return nil
	}
	n := s.supp[r.Message]
	s.last[r.Message] = r.Time
	delete(s.supp, r.Message)
	s.mu.Unlock()
	if n > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int("suppressed", n))
	}
	return h.next.Handle(ctx, r)
}

func (h *limitedHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &limitedHandler{next: h.next.WithAttrs(as), min: h.min, window: h.window, state: h.state}
}

func (h *limitedHandler) WithGroup(name string) slog.Handler {
	return &limitedHandler{next: h.next.WithGroup(name), min: h.min, window: h.window, state: h.state}
}
