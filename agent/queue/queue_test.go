package queue

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv("GANTRY_QUEUE_CHILD") != "" {
		child()
		return
	}
	goleak.VerifyTestMain(m)
}

var ctx = context.Background()

func open(t *testing.T, dir string, o Options) *Queue {
	t.Helper()
	q, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func appendN(t *testing.T, q *Queue, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if _, err := q.Append(ctx, []byte(fmt.Sprintf("msg-%06d", i))); err != nil {
			t.Fatal(err)
		}
	}
}

func next(t *testing.T, q *Queue) Record {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	r, err := q.Next(c)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestReplayAfterReopen(t *testing.T) {
	dir := t.TempDir()
	q := open(t, dir, Options{})
	appendN(t, q, 0, 10)
	for i := 0; i < 4; i++ {
		r := next(t, q)
		if string(r.Payload) != fmt.Sprintf("msg-%06d", i) {
			t.Fatalf("record %d = %s", i, r.Payload)
		}
		if i != 2 { // leave 3 (seq) unacked: everything from it is redelivered
			if err := q.Ack(r.Seq); err != nil {
				t.Fatal(err)
			}
		}
	}
	q.Close()
	q = open(t, dir, Options{})
	defer q.Close()
	r := next(t, q)
	if string(r.Payload) != "msg-000002" {
		t.Fatalf("after reopen first = %s, want msg-000002 (the unacked one)", r.Payload)
	}
	// msg-3 was acked but after a gap: at-least-once redelivers it (duplicate allowed).
	got := []string{string(r.Payload)}
	for i := 0; i < 7; i++ {
		got = append(got, string(next(t, q).Payload))
	}
	if got[len(got)-1] != "msg-000009" || len(got) != 8 {
		t.Errorf("replayed %v", got)
	}
	if s := q.Stats(); s.Records != 8 {
		t.Errorf("queued records %d, want 8", s.Records)
	}
}

func TestRewindRedelivers(t *testing.T) {
	q := open(t, t.TempDir(), Options{})
	defer q.Close()
	appendN(t, q, 0, 3)
	a, b := next(t, q), next(t, q)
	q.Ack(b.Seq)
	q.Rewind()
	if r := next(t, q); r.Seq != a.Seq {
		t.Errorf("after rewind got %d, want %d", r.Seq, a.Seq)
	}
	if r := next(t, q); r.Seq != b.Seq+1 {
		t.Errorf("acked record redelivered after rewind: %d", r.Seq)
	}
}

func TestBoundDropsOldest(t *testing.T) {
	q := open(t, t.TempDir(), Options{MaxBytes: 256 << 10, SegmentBytes: 64 << 10})
	defer q.Close()
	payload := bytes.Repeat([]byte("x"), 1000)
	const n = 1000 // ~1 MB into a 256 KiB queue
	for i := 0; i < n; i++ {
		if _, err := q.Append(ctx, payload); err != nil {
			t.Fatal(err)
		}
	}
	s := q.Stats()
	if s.Bytes > 256<<10 {
		t.Errorf("queue holds %d bytes, bound 256 KiB", s.Bytes)
	}
	if s.Dropped == 0 || int(s.Dropped)+s.Records != n {
		t.Errorf("dropped %d + queued %d != appended %d", s.Dropped, s.Records, n)
	}
	// The remaining records are contiguous and in order.
	prev := uint64(0)
	for i := 0; i < s.Records; i++ {
		r := next(t, q)
		if prev != 0 && r.Seq != prev+1 {
			t.Fatalf("gap: %d after %d", r.Seq, prev)
		}
		prev = r.Seq
	}
	if prev != n {
		t.Errorf("last record %d, want %d", prev, n)
	}
}

func TestTornTail(t *testing.T) {
	dir := t.TempDir()
	q := open(t, dir, Options{})
	appendN(t, q, 0, 20)
	q.Close()
	seg, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	full, err := os.ReadFile(seg[0])
	if err != nil {
		t.Fatal(err)
	}
	recLen := len(full) / 20
	for cut := len(full) - recLen + 1; cut < len(full); cut += 3 {
		if err := os.WriteFile(seg[0], full[:cut], 0o600); err != nil {
			t.Fatal(err)
		}
		q := open(t, dir, Options{})
		if s := q.Stats(); s.Records != 19 || s.Truncated != 1 {
			t.Fatalf("cut at %d: %d records, %d truncations; want 19 and 1", cut, s.Records, s.Truncated)
		}
		appendN(t, q, 100, 1) // the queue keeps working after truncation
		q.Close()
	}
	// A flipped bit in the last record is caught by the checksum.
	garbled := append([]byte(nil), full...)
	garbled[len(garbled)-2] ^= 0x40
	os.WriteFile(seg[0], garbled, 0o600)
	q = open(t, dir, Options{})
	defer q.Close()
	if s := q.Stats(); s.Records != 19 {
		t.Errorf("garbled last record: %d records, want 19", s.Records)
	}
}

// child appends numbered records and prints each acknowledged sequence.
func child() {
	q, err := Open(os.Getenv("GANTRY_QUEUE_DIR"), Options{SegmentBytes: 64 << 10, MaxBytes: 64 << 20})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	out := bufio.NewWriter(os.Stdout)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				seq, err := q.Append(context.Background(), []byte(fmt.Sprintf("payload-%d-%d", w, i)))
				if err != nil {
					return
				}
				mu.Lock()
				fmt.Fprintln(out, seq)
				out.Flush()
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

// TestKill9 SIGKILLs a writer at random moments; every sequence number it
// reported as acknowledged is present after reopening, and the queue is
// never corrupt.
func TestKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dir := t.TempDir()
	for round := 0; round < 4; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "GANTRY_QUEUE_CHILD=1", "GANTRY_QUEUE_DIR="+dir)
		stdout, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var acked []uint64
		done := make(chan struct{})
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				if n, err := strconv.ParseUint(strings.TrimSpace(sc.Text()), 10, 64); err == nil {
					acked = append(acked, n)
				}
			}
			close(done)
		}()
		time.Sleep(time.Duration(150+rand.IntN(300)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		<-done
		if len(acked) == 0 {
			t.Fatalf("round %d: child acknowledged nothing", round)
		}
		q := open(t, dir, Options{SegmentBytes: 64 << 10, MaxBytes: 64 << 20})
		have := map[uint64]bool{}
		for q.Stats().Records > len(have) {
			r := next(t, q)
			have[r.Seq] = true
		}
		q.Close()
		sort.Slice(acked, func(i, j int) bool { return acked[i] < acked[j] })
		for _, s := range acked {
			if !have[s] {
				t.Fatalf("round %d: acknowledged record %d lost (had %d records, %d acknowledged)", round, s, len(have), len(acked))
			}
		}
		t.Logf("round %d: %d acknowledged, %d on disk", round, len(acked), len(have))
	}
}

func FuzzReadRecord(f *testing.F) {
	f.Add(encode(7, []byte("hello")))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		var p []byte
		seq, n, err := readRecord(bytes.NewReader(b), &p)
		if err != nil {
			return
		}
		if !bytes.Equal(encode(seq, p)[:headerLen+n], b[:headerLen+n]) {
			t.Fatalf("accepted a record that does not re-encode identically")
		}
	})
}
