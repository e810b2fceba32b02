package forward

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gantry-iot/gantry/agent/queue"
)

// fakePub is a Publisher whose broker can be "down".
type fakePub struct {
	mu   sync.Mutex
	down bool
	got  []uint64
}

type perm struct{ error }

func (perm) Permanent() bool { return true }

func (p *fakePub) PublishAsync(seq uint64, payload []byte, done func(error)) {
	go func() {
		p.mu.Lock()
		down := p.down
		if !down {
			p.got = append(p.got, seq)
		}
		p.mu.Unlock()
		switch {
		case string(payload) == "poison":
			done(perm{errors.New("bad record")})
		case down:
			done(errors.New("not connected"))
		default:
			done(nil)
		}
	}()
}

func (p *fakePub) Connected() bool { p.mu.Lock(); defer p.mu.Unlock(); return !p.down }

func (p *fakePub) set(down bool) { p.mu.Lock(); p.down = down; p.mu.Unlock() }

// TestForwardSurvivesOutage: records appended while the broker is down are
// delivered after it returns, none missing, in order per first delivery.
func TestForwardSurvivesOutage(t *testing.T) {
	q, err := queue.Open(t.TempDir(), queue.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	pub := &fakePub{}
	f := New(q, pub, 8, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	for i := 0; i < 300; i++ {
		if i == 100 {
			pub.set(true)
		}
		if i == 200 {
			pub.set(false)
		}
		payload := fmt.Sprintf("v%d", i)
		if i == 150 {
			payload = "poison"
		}
		if _, err := q.Append(ctx, []byte(payload)); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for q.Stats().Records > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	if n := q.Stats().Records; n != 0 {
		t.Fatalf("%d records still queued", n)
	}
	seen := map[uint64]bool{}
	pub.mu.Lock()
	for _, s := range pub.got {
		seen[s] = true
	}
	pub.mu.Unlock()
	for s := uint64(1); s <= 300; s++ {
		if !seen[s] {
			t.Errorf("record %d never delivered", s)
		}
	}
	if f.Stats.Rewinds.Load() == 0 || f.Stats.Discarded.Load() < 1 {
		t.Errorf("rewinds %d discarded %d", f.Stats.Rewinds.Load(), f.Stats.Discarded.Load())
	}
}
