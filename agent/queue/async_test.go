package queue

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestAppendAsync: records handed over without waiting keep their order,
// each callback comes once with its sequence number after the record is
// durable (it survives a reopen), many share an fsync, and a closed queue
// or a cancelled context refuse the record without calling back.
func TestAppendAsync(t *testing.T) {
	dir := t.TempDir()
	q := open(t, dir, Options{SyncDelay: 2 * time.Millisecond})
	const n = 500
	var mu sync.Mutex
	var seqs []uint64
	var wg sync.WaitGroup
	wg.Add(n)
	for i := range n {
		if err := q.AppendAsync(context.Background(), fmt.Appendf(nil, "r%d", i), func(seq uint64, err error) {
			defer wg.Done()
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			seqs = append(seqs, seq)
			mu.Unlock()
		}); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	for i, s := range seqs {
		if s != uint64(i+1) {
			t.Fatalf("callback %d got seq %d, want %d", i, s, i+1)
		}
	}
	if st := q.Stats(); st.Syncs >= n/2 {
		t.Errorf("%d fsyncs for %d async appends: not grouped", st.Syncs, n)
	}
	q.Close()
	if err := q.AppendAsync(context.Background(), []byte("late"), func(uint64, error) { t.Error("callback after refusal") }); !errors.Is(err, ErrClosed) {
		t.Errorf("closed queue: %v", err)
	}
	q = open(t, dir, Options{})
	defer q.Close()
	for i := range n {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		r, err := q.Next(ctx)
		cancel()
		if err != nil || r.Seq != uint64(i+1) || string(r.Payload) != fmt.Sprintf("r%d", i) {
			t.Fatalf("record %d after reopen: %d %q %v", i, r.Seq, r.Payload, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := q.AppendAsync(ctx, []byte("x"), func(uint64, error) { t.Error("callback after refusal") }); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v", err)
	}
	if err := q.AppendAsync(context.Background(), make([]byte, MaxRecord+1), nil); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversized: %v", err)
	}
}
