package queue

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv("GANTRY_QUEUE_CHILD") != "" {
		child()
		return
	}
	goleak.VerifyTestMain(m)
}

// open opens a queue for a test; sequential tests need no group-commit wait.
func open(t *testing.T, dir string, o Options) *Queue {
	t.Helper()
	if o.SyncDelay == 0 {
		o.SyncDelay = time.Microsecond
	}
	q, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

func msg(i int) []byte { return []byte(fmt.Sprintf("msg-%06d", i)) }

func appendN(t *testing.T, q *Queue, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if _, err := q.Append(t.Context(), msg(i)); err != nil {
			t.Fatal(err)
		}
	}
}

func next(t *testing.T, q *Queue) Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	r, err := q.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// drain reads every record Next has left (Stats().Records of them, none
// handed out before), without acking, and checks that no more come.
func drain(t *testing.T, q *Queue) []Record {
	t.Helper()
	var out []Record
	for n := q.Stats().Records; len(out) < n; {
		out = append(out, next(t, q))
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Millisecond)
	defer cancel()
	if r, err := q.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("after %d records Next = %d, %v; want no more", len(out), r.Seq, err)
	}
	return out
}

func seqs(rs []Record) []uint64 {
	out := make([]uint64, len(rs))
	for i, r := range rs {
		out[i] = r.Seq
	}
	return out
}

func seqRange(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

func TestReplayAfterReopen(t *testing.T) {
	dir := t.TempDir()
	q := open(t, dir, Options{})
	appendN(t, q, 1, 10) // seq i carries msg(i)
	for i := 1; i <= 4; i++ {
		r := next(t, q)
		if diff := cmp.Diff(Record{Seq: uint64(i), Payload: msg(i)}, r); diff != "" {
			t.Fatalf("record (-want +got):\n%s", diff)
		}
		if i != 3 {
			q.Ack(r.Seq)
		}
	}
	q.Close()

	q = open(t, dir, Options{})
	got := drain(t, q)
	// 1 and 2 were acked; 4 was acked after the gap at 3, so it may come again.
	if diff := cmp.Diff(seqRange(3, 10), seqs(got)); diff != "" {
		t.Errorf("replayed sequences (-want +got):\n%s", diff)
	}
	for _, r := range got {
		if !bytes.Equal(r.Payload, msg(int(r.Seq))) {
			t.Errorf("seq %d payload %q", r.Seq, r.Payload)
		}
	}
	if s := q.Stats(); s.Records != 8 {
		t.Errorf("queued records %d, want 8", s.Records)
	}
}

func TestAckedNotRedelivered(t *testing.T) {
	dir := t.TempDir()
	q := open(t, dir, Options{SegmentBytes: MinSegmentBytes})
	appendN(t, q, 1, 600) // several segments
	for i := 0; i < 400; i++ {
		next(t, q)
	}
	// Out-of-order acks within a window of 10.
	for base := uint64(1); base <= 400; base += 10 {
		for s := base + 9; s >= base; s-- {
			if err := q.Ack(s); err != nil {
				t.Fatal(err)
			}
		}
	}
	q.Ack(400) // duplicate ack: no-op
	if s := q.Stats(); s.Acked != 400 || s.Records != 200 {
		t.Fatalf("stats after acks: %+v", s)
	}
	segsBefore, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	q.Close()

	q = open(t, dir, Options{SegmentBytes: MinSegmentBytes})
	if diff := cmp.Diff(seqRange(401, 600), seqs(drain(t, q))); diff != "" {
		t.Errorf("after reopen (-want +got):\n%s", diff)
	}
	segsAfter, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(segsBefore) >= 5 || len(segsAfter) != len(segsBefore) {
		t.Errorf("fully acked segments not deleted: %d before reopen, %d after", len(segsBefore), len(segsAfter))
	}
	// New appends continue the sequence.
	seq, err := q.Append(t.Context(), msg(601))
	if err != nil || seq != 601 {
		t.Errorf("Append after reopen = %d, %v; want 601", seq, err)
	}
}

func TestRewindRedelivers(t *testing.T) {
	q := open(t, t.TempDir(), Options{})
	appendN(t, q, 1, 5)
	for i := 0; i < 4; i++ {
		next(t, q)
	}
	q.Ack(2)
	q.Ack(4)
	q.Rewind()
	if diff := cmp.Diff([]uint64{1, 3, 5}, seqs(drain(t, q))); diff != "" {
		t.Errorf("after rewind (-want +got):\n%s", diff)
	}
}

func TestBoundDropsOldest(t *testing.T) {
	const maxBytes, segBytes = 256 << 10, 64 << 10
	payload := bytes.Repeat([]byte("x"), 1000)
	for _, tc := range []struct {
		name  string
		acked int // first records acked before overflowing
	}{
		{"none acked", 0},
		{"some acked", 30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			o := Options{MaxBytes: maxBytes, SegmentBytes: segBytes}
			q := open(t, dir, o)
			const n = 1000 // ~1 MB into a 256 KiB queue
			for i := 0; i < n; i++ {
				if _, err := q.Append(t.Context(), payload); err != nil {
					t.Fatal(err)
				}
				if i == tc.acked*2 {
					for s := 1; s <= tc.acked; s++ {
						next(t, q)
						q.Ack(uint64(s))
					}
				}
			}
			s := q.Stats()
			if s.Bytes > maxBytes {
				t.Errorf("queue holds %d bytes, bound %d", s.Bytes, maxBytes)
			}
			if s.Bytes < maxBytes-2*segBytes {
				t.Errorf("queue holds only %d bytes: dropped more than needed", s.Bytes)
			}
			var onDisk int64
			files, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
			for _, f := range files {
				fi, _ := os.Stat(f)
				onDisk += fi.Size()
			}
			if onDisk != s.Bytes {
				t.Errorf("segment files hold %d bytes, Stats.Bytes %d", onDisk, s.Bytes)
			}
			wantDropped := uint64(n - s.Records - tc.acked)
			if s.Dropped != wantDropped || s.Appended != s.Acked+s.Dropped+uint64(s.Records) {
				t.Errorf("stats %+v; want Dropped %d", s, wantDropped)
			}
			want := seqRange(uint64(n-s.Records+1), n)
			if diff := cmp.Diff(want, seqs(drain(t, q))); diff != "" {
				t.Errorf("remaining records (-want +got):\n%s", diff)
			}
			q.Close()
			q = open(t, dir, o)
			if diff := cmp.Diff(want, seqs(drain(t, q))); diff != "" {
				t.Errorf("remaining records after reopen (-want +got):\n%s", diff)
			}
		})
	}
}

// TestTornTail cuts or garbles the last record at every byte: reopening
// keeps every record before it and the queue stays usable.
func TestTornTail(t *testing.T) {
	dir := t.TempDir()
	q := open(t, dir, Options{})
	appendN(t, q, 1, 20)
	q.Close()
	seg, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	full, err := os.ReadFile(seg[0])
	if err != nil {
		t.Fatal(err)
	}
	recLen := len(encode(1, msg(1)))
	lastOff := len(full) - recLen
	check := func(t *testing.T, damaged []byte) {
		t.Helper()
		if err := os.WriteFile(seg[0], damaged, 0o600); err != nil {
			t.Fatal(err)
		}
		q, err := Open(dir, Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer q.Close()
		if s := q.Stats(); s.Records != 19 || s.Truncated != 1 {
			t.Fatalf("%d records, %d truncations; want 19 and 1", s.Records, s.Truncated)
		}
		got := drain(t, q)
		if diff := cmp.Diff(seqRange(1, 19), seqs(got)); diff != "" {
			t.Fatalf("records (-want +got):\n%s", diff)
		}
		for _, r := range got {
			if !bytes.Equal(r.Payload, msg(int(r.Seq))) {
				t.Fatalf("seq %d payload %q", r.Seq, r.Payload)
			}
		}
		if seq, err := q.Append(t.Context(), msg(20)); err != nil || seq != 20 {
			t.Fatalf("Append after repair = %d, %v; want 20", seq, err)
		}
	}
	t.Run("cut", func(t *testing.T) {
		for cut := lastOff + 1; cut < len(full); cut++ {
			check(t, full[:cut])
		}
	})
	t.Run("garbled", func(t *testing.T) {
		for i := lastOff; i < len(full); i++ {
			b := bytes.Clone(full)
			b[i] ^= 0x5a
			check(t, b)
		}
	})
	t.Run("trailing garbage", func(t *testing.T) {
		check(t, append(bytes.Clone(full[:lastOff]), 0, 0, 0))
	})
}

func TestCorruptOlderSegmentQuarantined(t *testing.T) {
	dir := t.TempDir()
	o := Options{SegmentBytes: MinSegmentBytes}
	q := open(t, dir, o)
	appendN(t, q, 1, 500)
	q.Close()
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(segs) < 3 {
		t.Fatalf("want ≥3 segments, have %d", len(segs))
	}
	b, _ := os.ReadFile(segs[0])
	recLen := len(encode(1, msg(1)))
	perSeg := len(b) / recLen
	b[10*recLen+headerLen+2] ^= 0xff // payload of the 11th record
	os.WriteFile(segs[0], b, 0o600)

	q = open(t, dir, o)
	s := q.Stats()
	if s.Quarantined != 1 || s.Truncated != 0 || s.Records != 500-(perSeg-10) {
		t.Errorf("stats %+v; want 1 quarantined, %d records", s, 500-(perSeg-10))
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "*.corrupt")); len(m) != 1 {
		t.Errorf("quarantine files %v, want one", m)
	}
	want := append(seqRange(1, 10), seqRange(uint64(perSeg+1), 500)...)
	got := drain(t, q)
	if diff := cmp.Diff(want, seqs(got)); diff != "" {
		t.Errorf("records (-want +got):\n%s", diff)
	}
	// Acks run across the gap and the cursor passes it.
	for _, r := range got {
		q.Ack(r.Seq)
	}
	q.Close()
	q = open(t, dir, o)
	if s := q.Stats(); s.Records != 0 {
		t.Errorf("after acking all and reopening: %d records", s.Records)
	}
}

func TestErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"tiny MaxBytes", Options{MaxBytes: 1000}},
		{"segment above bound", Options{MaxBytes: 1 << 20, SegmentBytes: 2 << 20}},
		{"tiny segment", Options{SegmentBytes: 100}},
		{"negative delay", Options{SyncDelay: -time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Open(t.TempDir(), tc.opts); !errors.Is(err, ErrBadOptions) {
				t.Errorf("Open = %v, want ErrBadOptions", err)
			}
		})
	}
	t.Run("corrupt cursor", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "cursor"), []byte("garbage"), 0o600)
		if _, err := Open(dir, Options{}); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "delete it") {
			t.Errorf("Open = %v, want ErrCorrupt telling what to do", err)
		}
	})
	t.Run("stray file", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "x.seg"), nil, 0o600)
		if _, err := Open(dir, Options{}); err == nil {
			t.Error("Open accepted a stray x.seg")
		}
	})
	t.Run("too large and closed", func(t *testing.T) {
		q := open(t, t.TempDir(), Options{SegmentBytes: MinSegmentBytes})
		if _, err := q.Append(t.Context(), make([]byte, MinSegmentBytes)); !errors.Is(err, ErrTooLarge) {
			t.Errorf("Append = %v, want ErrTooLarge", err)
		}
		q.Close()
		if _, err := q.Append(t.Context(), []byte("x")); !errors.Is(err, ErrClosed) {
			t.Errorf("Append after Close = %v, want ErrClosed", err)
		}
		if _, err := q.Next(t.Context()); !errors.Is(err, ErrClosed) {
			t.Errorf("Next after Close = %v, want ErrClosed", err)
		}
	})
	t.Run("leftover cursor temp", func(t *testing.T) {
		dir := t.TempDir()
		q := open(t, dir, Options{})
		appendN(t, q, 1, 3)
		next(t, q)
		q.Ack(1)
		q.Close()
		os.WriteFile(filepath.Join(dir, "cursor.tmp"), []byte("9"), 0o600)
		q = open(t, dir, Options{})
		if diff := cmp.Diff([]uint64{2, 3}, seqs(drain(t, q))); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})
}

// TestConcurrent runs producers against a consumer with an in-flight
// window that acks out of order; every record arrives once, in order, and
// fsyncs are shared.
func TestConcurrent(t *testing.T) {
	q := open(t, t.TempDir(), Options{})
	const producers, per, window = 8, 100, 16
	var wg sync.WaitGroup
	for p := 0; p < producers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				if _, err := q.Append(t.Context(), []byte(fmt.Sprintf("%d-%d", p, i))); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	var got []uint64
	var inflight []uint64
	lastPer := map[string]int{}
	for len(got) < producers*per {
		r := next(t, q)
		got = append(got, r.Seq)
		var p, i int
		fmt.Sscanf(string(r.Payload), "%d-%d", &p, &i)
		if k := strconv.Itoa(p); i != lastPer[k] {
			t.Fatalf("producer %d: record %d after %d", p, i, lastPer[k]-1)
		}
		lastPer[strconv.Itoa(p)] = i + 1
		inflight = append(inflight, r.Seq)
		if len(inflight) == window {
			rand.Shuffle(len(inflight), func(i, j int) { inflight[i], inflight[j] = inflight[j], inflight[i] })
			for _, s := range inflight {
				q.Ack(s)
			}
			inflight = inflight[:0]
		}
	}
	wg.Wait()
	for _, s := range inflight {
		q.Ack(s)
	}
	if diff := cmp.Diff(seqRange(1, producers*per), got); diff != "" {
		t.Errorf("delivered (-want +got):\n%s", diff)
	}
	s := q.Stats()
	if s.Records != 0 || s.Appended != producers*per || s.Syncs >= s.Appended {
		t.Errorf("stats %+v: want empty queue and fewer fsyncs than appends", s)
	}
}

// child appends numbered records from 4 goroutines and prints each
// sequence number as soon as Append returned it.
func child() {
	q, err := Open(os.Getenv("GANTRY_QUEUE_DIR"), Options{SegmentBytes: 64 << 10, MaxBytes: 64 << 20})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				seq, err := q.Append(context.Background(), []byte(fmt.Sprintf("payload-%d-%d", w, i)))
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(1)
				}
				mu.Lock()
				fmt.Fprintln(os.Stdout, seq) // unbuffered: one write per ack
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

// TestKill9 SIGKILLs a writer process at random moments; every sequence
// number it reported as acknowledged is present after reopening, records
// are in order without gaps up to the highest acknowledged one, and the
// queue is never corrupt.
func TestKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dir := t.TempDir()
	acked := map[uint64]bool{}
	for round := 0; round < 5; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "GANTRY_QUEUE_CHILD=1", "GANTRY_QUEUE_DIR="+dir)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var reported []uint64
		done, started := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(done)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				// A line cut by the kill fails to parse or parses short; a
				// short number is a real earlier seq anyway, never a new one.
				n, err := strconv.ParseUint(sc.Text(), 10, 64)
				if err != nil {
					continue
				}
				if len(reported) == 0 {
					close(started)
				}
				reported = append(reported, n)
			}
		}()
		select { // kill at a random moment after the first acknowledgement
		case <-started:
			time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
		case <-done:
		case <-time.After(20 * time.Second):
		}
		cmd.Process.Signal(syscall.SIGKILL)
		<-done
		cmd.Wait()
		if len(reported) == 0 {
			t.Fatalf("round %d: child acknowledged nothing; stderr: %s", round, stderr.String())
		}
		var maxAcked uint64
		for _, s := range reported {
			acked[s] = true
			maxAcked = max(maxAcked, s)
		}

		q, err := Open(dir, Options{SegmentBytes: 64 << 10, MaxBytes: 64 << 20})
		if err != nil {
			t.Fatalf("round %d: reopen: %v", round, err)
		}
		recs := drain(t, q)
		q.Close()
		have := map[uint64]bool{}
		lastI := map[int]int{}
		for i, r := range recs {
			if i > 0 && r.Seq != recs[i-1].Seq+1 {
				t.Fatalf("round %d: seq %d follows %d", round, r.Seq, recs[i-1].Seq)
			}
			var w, n int
			if _, err := fmt.Sscanf(string(r.Payload), "payload-%d-%d", &w, &n); err != nil {
				t.Fatalf("round %d: seq %d has payload %q", round, r.Seq, r.Payload)
			}
			if prev, ok := lastI[w]; ok && n != prev+1 && n != 0 {
				t.Fatalf("round %d: worker %d record %d after %d", round, w, n, prev)
			}
			lastI[w] = n
			have[r.Seq] = true
		}
		if len(recs) == 0 || recs[0].Seq != 1 || recs[len(recs)-1].Seq < maxAcked {
			t.Fatalf("round %d: have %d records, want 1..≥%d", round, len(recs), maxAcked)
		}
		for s := range acked {
			if !have[s] {
				t.Fatalf("round %d: acknowledged record %d lost", round, s)
			}
		}
		t.Logf("round %d: %d acknowledged this round, %d records on disk", round, len(reported), len(recs))
	}
}

func FuzzReadRecord(f *testing.F) {
	f.Add(encode(7, []byte("hello")))
	f.Add(append(encode(1, nil), encode(2, []byte("x"))...))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		var p []byte
		seq, n, err := readRecord(bytes.NewReader(b), &p)
		if err != nil {
			if err != io.EOF && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		if n != len(p) || !bytes.Equal(encode(seq, p), b[:headerLen+n]) {
			t.Fatalf("accepted a record whose bytes do not re-encode identically (CRC not verified)")
		}
	})
}

// FuzzOpenSegment opens a queue whose only segment holds arbitrary bytes:
// Open never fails or panics, and delivers exactly the valid prefix.
func FuzzOpenSegment(f *testing.F) {
	valid := append(encode(1, []byte("a")), encode(2, []byte("bb"))...)
	f.Add(valid)
	f.Add(append(bytes.Clone(valid), 1, 2, 3))
	f.Add(append(encode(1, []byte("a")), encode(3, []byte("c"))...))
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		name := filepath.Join(dir, fmt.Sprintf("%020d.seg", 1))
		if err := os.WriteFile(name, b, 0o600); err != nil {
			t.Fatal(err)
		}
		q, err := Open(dir, Options{})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer q.Close()
		var want []byte
		for _, r := range drain(t, q) {
			want = append(want, encode(r.Seq, r.Payload)...)
		}
		if !bytes.HasPrefix(b, want) {
			t.Fatalf("delivered records are not a prefix of the segment")
		}
		if fi, _ := os.Stat(name); fi.Size() != int64(len(want)) {
			t.Fatalf("segment is %d bytes after repair, valid prefix %d", fi.Size(), len(want))
		}
	})
}
