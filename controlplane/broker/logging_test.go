package broker

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestLimitedHandler(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	now := time.Unix(1000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	h := newLimitedHandler(slog.NewTextHandler(&buf, &slog.HandlerOptions{
		Level:       slog.LevelDebug,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr { return dropTime(a) },
	}), 10*time.Second, clock)
	log := slog.New(h).With("component", "mqtt")

	for range 5 {
		log.Warn("client store quota reached", "client", "d1")
	}
	log.Warn("other warning")
	log.Info("info passes")
	log.Info("info passes")
	advance(11 * time.Second)
	log.Warn("client store quota reached", "client", "d2")

	want := []string{
		`level=WARN msg="client store quota reached" component=mqtt client=d1`,
		`level=WARN msg="other warning" component=mqtt`,
		`level=INFO msg="info passes" component=mqtt`,
		`level=INFO msg="info passes" component=mqtt`,
		`level=WARN msg="client store quota reached" component=mqtt client=d2 suppressed=4`,
	}
	got := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("log lines (-want +got):\n%s", diff)
	}
}

func dropTime(a slog.Attr) slog.Attr {
	if a.Key == slog.TimeKey {
		return slog.Attr{}
	}
	return a
}
