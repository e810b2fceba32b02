// Package queue is the agent's durable store-and-forward queue: an
// append-only log of checksummed records in bounded segment files, with
// group commit (many concurrent Appends share one fsync) and at-least-once
// delivery (a record is removed only after it is acknowledged).
//
// On-disk layout in the queue directory:
//
//	<first-seq, 20 digits>.seg     records, framed as described in record.go
//	cursor                         decimal: every record with seq ≤ cursor was acked
//	<first-seq>.seg.<n>.corrupt    bytes quarantined from a corrupt older segment
//
// Durability: Append returns nil only after the record was written and the
// segment fsync'd, so it survives kill -9 and power loss. The cursor is
// replaced atomically (temp file, fsync, rename, fsync of the directory)
// at most once a second while acks advance it, and on Close; a crash
// before that only redelivers records (duplicates, never loss).
//
// Recovery: Open scans every segment and verifies every record (length,
// CRC-32C, expected sequence). A torn or corrupt tail of the last segment
// is what an interrupted write leaves; it was never acknowledged, so it is
// truncated and logged once (Stats.Truncated). Corruption inside an older
// segment cannot come from a crash (segments are fsync'd before the next
// one starts); its bad tail is moved into a *.corrupt file for inspection,
// logged as an error and counted (Stats.Quarantined), and the queue goes on.
//
// Bound: when an append would take the segments past Options.MaxBytes, the
// oldest whole segments are deleted and their unacked records counted in
// Stats.Dropped.
package queue

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Defaults and limits of Options.
const (
	DefaultMaxBytes  = 64 << 20
	MinMaxBytes      = 64 << 10
	MinSegmentBytes  = 4 << 10
	DefaultSyncDelay = 2 * time.Millisecond
	maxBatch         = 4096
	cursorInterval   = time.Second
	cursorName       = "cursor"
)

// Options configure a Queue. The zero value is usable.
type Options struct {
	// MaxBytes bounds all segments together; default 64 MiB, at least 64 KiB.
	MaxBytes int64
	// SegmentBytes is the size at which a new segment file is started and
	// the granularity of dropping when full; default MaxBytes/8 clamped to
	// [16 KiB, 16 MiB]; at least 4 KiB and at most MaxBytes.
	SegmentBytes int64
	// SyncDelay is the group-commit window: after the first pending
	// Append, the writer waits this long for more before one fsync.
	// Default 2ms.
	SyncDelay time.Duration
	// Logger receives recovery and drop reports; nil is silent.
	Logger *slog.Logger
}

// Record is a queued payload with its sequence number.
type Record struct {
	Seq     uint64
	Payload []byte
}

// Stats are counters of a Queue since Open, plus its current size.
type Stats struct {
	Appended    uint64 // records made durable by Append
	Acked       uint64 // distinct records acknowledged
	Dropped     uint64 // unacked records deleted because the queue was full
	Syncs       uint64 // fsyncs of segment files
	Truncated   uint64 // torn or corrupt tails cut from the last segment on Open
	Quarantined uint64 // corrupt regions of older segments moved aside on Open
	Records     int    // records queued and not yet acked
	Bytes       int64  // bytes of segment files on disk
}

type segment struct {
	first uint64 // sequence number of the first record (also the file name)
	next  uint64 // sequence number after the last record in the file
	path  string
	size  int64
	recs  []recRef // records with seq > cursor, in order
}

type recRef struct {
	seq uint64
	off int64
	n   int32
}

type pendingAppend struct {
	payload []byte
	done    chan appendResult           // Append waits here, or
	cb      func(seq uint64, err error) // AppendAsync's callback
}

type appendResult struct {
	seq uint64
	err error
}

// Queue is a durable FIFO. See the package comment.
//
// Concurrency: all methods are safe for concurrent use. Appends are
// serialized by one writer goroutine (owned by the Queue, stopped by
// Close); Next hands records out in sequence order, each once until Rewind.
// Internal state is guarded by mu; the writer holds mu while it writes and
// fsyncs a batch, so Next never sees a record that is not yet durable.
type Queue struct {
	dir  string
	opts Options
	log  *slog.Logger

	appendCh chan pendingAppend
	kick     chan struct{} // asks the writer to persist the cursor
	sendMu   sync.RWMutex  // read-held while sending on appendCh; Close write-locks it to close the channel
	wg       sync.WaitGroup

	mu          sync.Mutex
	cond        *sync.Cond // signalled when records become available or the queue closes
	segs        []*segment
	active      *os.File // last segment, append-only
	bytes       int64
	nextSeq     uint64
	readSeq     uint64 // Next hands out the first unacked record with seq ≥ readSeq
	acked       map[uint64]bool
	cursor      uint64 // every record with seq ≤ cursor was acked
	persisted   uint64 // cursor value on disk
	queued      int
	stats       Stats
	closed      bool
	broken      error
	lastDropLog time.Time
	frame       []byte // the writer's framing buffer, reused
}

// Open opens (or creates) the queue in dir, verifies and repairs the log,
// and starts the writer goroutine. Call Close when done.
func Open(dir string, opts Options) (*Queue, error) {
	if err := opts.normalize(); err != nil {
		return nil, fmt.Errorf("queue.Open: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("queue.Open: %w", err)
	}
	q := &Queue{
		dir:      dir,
		opts:     opts,
		log:      opts.Logger,
		appendCh: make(chan pendingAppend, maxBatch),
		kick:     make(chan struct{}, 1),
		acked:    map[uint64]bool{},
	}
	q.cond = sync.NewCond(&q.mu)
	if err := q.recover(); err != nil {
		if q.active != nil {
			q.active.Close()
		}
		return nil, fmt.Errorf("queue.Open %s: %w", dir, err)
	}
	q.wg.Add(1)
	go q.writer()
	return q, nil
}

func (o *Options) normalize() error {
	if o.MaxBytes == 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.MaxBytes < MinMaxBytes {
		return fmt.Errorf("%w: MaxBytes %d is below the minimum %d", ErrBadOptions, o.MaxBytes, MinMaxBytes)
	}
	if o.SegmentBytes == 0 {
		o.SegmentBytes = min(max(o.MaxBytes/8, 16<<10), 16<<20)
	}
	if o.SegmentBytes < MinSegmentBytes || o.SegmentBytes > o.MaxBytes {
		return fmt.Errorf("%w: SegmentBytes %d must be between %d and MaxBytes (%d)", ErrBadOptions, o.SegmentBytes, MinSegmentBytes, o.MaxBytes)
	}
	if o.SyncDelay < 0 {
		return fmt.Errorf("%w: SyncDelay %v is negative", ErrBadOptions, o.SyncDelay)
	}
	if o.SyncDelay == 0 {
		o.SyncDelay = DefaultSyncDelay
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

func (q *Queue) recover() error {
	os.Remove(filepath.Join(q.dir, cursorName+".tmp")) // a crash mid-replace leaves it; the old cursor is intact
	b, err := os.ReadFile(filepath.Join(q.dir, cursorName))
	switch {
	case err == nil:
		if q.cursor, err = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err != nil {
			return fmt.Errorf("%w: cursor file %q is not a number; delete it to redeliver every queued record", ErrCorrupt, b)
		}
		q.persisted = q.cursor
	case !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("read cursor: %w", err)
	}
	names, err := filepath.Glob(filepath.Join(q.dir, "*.seg"))
	if err != nil {
		return err
	}
	sort.Strings(names)
	var prevNext uint64
	for i, name := range names {
		base := strings.TrimSuffix(filepath.Base(name), ".seg")
		first, err := strconv.ParseUint(base, 10, 64)
		if err != nil || len(base) != 20 {
			return fmt.Errorf("unexpected file %s in the queue directory; move it elsewhere", name)
		}
		if first < prevNext {
			return fmt.Errorf("%w: segment %s starts at %d, inside the previous segment (ends before %d); move one of them away", ErrCorrupt, name, first, prevNext)
		}
		last := i == len(names)-1
		seg := &segment{first: first, path: name}
		if err := q.scan(seg, last); err != nil {
			return err
		}
		prevNext = seg.next
		if !last && len(seg.recs) == 0 {
			// Empty, or every record acked before a crash: nothing to keep.
			if err := os.Remove(name); err != nil {
				return err
			}
			continue
		}
		q.segs = append(q.segs, seg)
		q.bytes += seg.size
	}
	q.nextSeq = max(q.cursor+1, prevNext, 1)
	q.readSeq = q.cursor + 1
	if n := len(q.segs); n > 0 && q.segs[n-1].next == q.nextSeq {
		f, err := os.OpenFile(q.segs[n-1].path, os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return err
		}
		q.active = f
		return nil
	}
	return q.newSegment()
}

// scan reads a segment, indexes its unacked records and repairs a corrupt
// tail (truncates the last segment; quarantines that of an older one).
func (q *Queue) scan(seg *segment, last bool) error {
	f, err := os.OpenFile(seg.path, os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 64<<10)
	var off int64
	expect := seg.first
	for {
		seq, payloadLen, err := readRecord(r, nil)
		if err == io.EOF {
			break
		}
		if err == nil && seq != expect {
			err = fmt.Errorf("%w: sequence %d, want %d", ErrCorrupt, seq, expect)
		}
		if errors.Is(err, ErrCorrupt) {
			if err := q.repair(f, seg, off, last, err); err != nil {
				return err
			}
			break
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", seg.path, err)
		}
		n := int32(headerLen + payloadLen)
		if seq > q.cursor {
			seg.recs = append(seg.recs, recRef{seq: seq, off: off, n: n})
			q.queued++
		}
		expect++
		off += int64(n)
	}
	seg.size = off
	seg.next = expect
	return nil
}

func (q *Queue) repair(f *os.File, seg *segment, off int64, last bool, reason error) error {
	name := filepath.Base(seg.path)
	if last {
		q.log.Warn("queue: truncating the torn or corrupt tail of the last segment (never acknowledged to a producer)",
			"segment", name, "offset", off, "reason", reason)
		q.stats.Truncated++
	} else {
		qf, err := os.CreateTemp(q.dir, name+".*.corrupt")
		if err != nil {
			return fmt.Errorf("quarantine %s: %w", name, err)
		}
		_, err = io.Copy(qf, io.NewSectionReader(f, off, 1<<62))
		if err == nil {
			err = qf.Sync()
		}
		if cerr := qf.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("quarantine %s: %w", name, err)
		}
		q.log.Error("queue: corrupt data inside an older segment; records from here to its end are lost and were moved aside",
			"segment", name, "offset", off, "quarantined_to", filepath.Base(qf.Name()), "reason", reason)
		q.stats.Quarantined++
	}
	if err := f.Truncate(off); err != nil {
		return fmt.Errorf("truncate %s: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", name, err)
	}
	return nil
}

// newSegment starts a segment whose first record will be q.nextSeq.
func (q *Queue) newSegment() error {
	path := filepath.Join(q.dir, fmt.Sprintf("%020d.seg", q.nextSeq))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("new segment: %w", err)
	}
	if err := syncDir(q.dir); err != nil {
		f.Close()
		return fmt.Errorf("new segment: %w", err)
	}
	if q.active != nil {
		q.active.Close()
	}
	q.active = f
	q.segs = append(q.segs, &segment{first: q.nextSeq, next: q.nextSeq, path: path})
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Append stores payload durably and returns its sequence number. It
// returns nil only after the record is fsync'd (one fsync is shared by the
// Appends pending at that moment). If ctx ends first, Append returns its
// error; the record may still be stored and delivered.
func (q *Queue) Append(ctx context.Context, payload []byte) (uint64, error) {
	if len(payload) > MaxRecord || int64(len(payload)+headerLen) > q.opts.SegmentBytes {
		return 0, fmt.Errorf("queue.Append: %w: %d bytes (limit %d)", ErrTooLarge, len(payload), min(MaxRecord, q.opts.SegmentBytes-headerLen))
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	p := pendingAppend{payload: payload, done: make(chan appendResult, 1)}
	if err := q.send(ctx, p); err != nil {
		return 0, err
	}
	select {
	case r := <-p.done:
		return r.seq, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// AppendAsync is Append without waiting for the fsync: it hands payload
// to the writer (blocking only while the writer's intake is full) and
// returns; done is called once, from the writer goroutine, with the
// record's sequence number after the fsync, or the error. Records keep
// the order of the AppendAsync calls of one goroutine. The caller must
// not modify payload before done is called; done runs with the queue's
// lock held, so it must not block or call the Queue.
// An error returned here means done will not be called.
func (q *Queue) AppendAsync(ctx context.Context, payload []byte, done func(seq uint64, err error)) error {
	if len(payload) > MaxRecord || int64(len(payload)+headerLen) > q.opts.SegmentBytes {
		return fmt.Errorf("queue.AppendAsync: %w: %d bytes (limit %d)", ErrTooLarge, len(payload), min(MaxRecord, q.opts.SegmentBytes-headerLen))
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return q.send(ctx, pendingAppend{payload: payload, cb: done})
}

// send hands p to the writer.
func (q *Queue) send(ctx context.Context, p pendingAppend) error {
	q.sendMu.RLock()
	q.mu.Lock()
	closed := q.closed
	q.mu.Unlock()
	if closed {
		q.sendMu.RUnlock()
		return fmt.Errorf("queue.Append: %w", ErrClosed)
	}
	select {
	case q.appendCh <- p:
		q.sendMu.RUnlock()
		return nil
	case <-ctx.Done():
		q.sendMu.RUnlock()
		return ctx.Err()
	}
}

// writer owns the segment files: it commits batches of appends and
// persists the cursor when acks moved it.
func (q *Queue) writer() {
	defer q.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	// The cursor is written at most once per cursorInterval: each write is
	// two fsyncs, and with many small acks per second they would cost
	// more than the records. A crash in between only redelivers.
	cursorTimer := time.NewTimer(time.Hour)
	cursorTimer.Stop()
	var lastCursor time.Time
	cursorArmed := false
	persist := func() {
		cursorArmed = false
		lastCursor = time.Now()
		q.persistCursor()
	}
	for {
		select {
		case first, ok := <-q.appendCh:
			if !ok {
				q.persistCursor()
				return
			}
			batch := []pendingAppend{first}
			timer.Reset(q.opts.SyncDelay)
		collect:
			for len(batch) < maxBatch {
				select {
				case p, ok := <-q.appendCh:
					if !ok {
						break collect
					}
					batch = append(batch, p)
				case <-timer.C:
					break collect
				}
			}
			timer.Stop()
			q.commit(batch)
		case <-q.kick:
			if wait := cursorInterval - time.Since(lastCursor); wait > 0 {
				if !cursorArmed {
					cursorArmed = true
					cursorTimer.Reset(wait)
				}
				continue
			}
			persist()
		case <-cursorTimer.C:
			persist()
		}
	}
}

func (q *Queue) commit(batch []pendingAppend) {
	q.mu.Lock()
	defer q.mu.Unlock()
	results := make([]appendResult, len(batch))
	err := q.broken
	wrote := false
	for i, p := range batch {
		if err != nil {
			results[i].err = err
			continue
		}
		n := int64(headerLen + len(p.payload))
		if seg := q.segs[len(q.segs)-1]; seg.size > 0 && seg.size+n > q.opts.SegmentBytes {
			if wrote {
				err = q.syncActive()
			}
			if err == nil {
				err = q.newSegment()
			}
			if err != nil {
				q.broken = fmt.Errorf("%w: %w", ErrBroken, err)
				err = q.broken
				results[i].err = err
				continue
			}
			wrote = false
		}
		q.enforceBound(n)
		seg := q.segs[len(q.segs)-1]
		seq := q.nextSeq
		q.frame = encodeInto(q.frame[:0], seq, p.payload)
		if _, werr := q.active.Write(q.frame); werr != nil {
			// Cut a partial record so later appends do not land behind garbage.
			if terr := q.active.Truncate(seg.size); terr != nil {
				q.broken = fmt.Errorf("%w: %w", ErrBroken, terr)
			}
			err = fmt.Errorf("queue.Append: write: %w", werr)
			results[i].err = err
			continue
		}
		wrote = true
		seg.recs = append(seg.recs, recRef{seq: seq, off: seg.size, n: int32(n)})
		seg.size += n
		seg.next = seq + 1
		q.bytes += n
		q.nextSeq++
		q.queued++
		results[i].seq = seq
	}
	if wrote {
		if serr := q.syncActive(); serr != nil {
			// After a failed fsync the page cache state is unknown: stop appending.
			q.broken = fmt.Errorf("%w: fsync: %w", ErrBroken, serr)
			for i := range results {
				if results[i].err == nil {
					results[i] = appendResult{err: fmt.Errorf("queue.Append: %w", q.broken)}
				}
			}
		}
	}
	for i, p := range batch {
		if results[i].err == nil {
			q.stats.Appended++
		}
		if p.cb != nil {
			p.cb(results[i].seq, results[i].err)
		} else {
			p.done <- results[i]
		}
	}
	q.cond.Broadcast()
}

func (q *Queue) syncActive() error {
	q.stats.Syncs++
	return q.active.Sync()
}

// enforceBound deletes the oldest segments until n more bytes fit.
// Called with mu held.
func (q *Queue) enforceBound(n int64) {
	for len(q.segs) > 1 && q.bytes+n > q.opts.MaxBytes {
		old := q.segs[0]
		var dropped uint64
		for _, r := range old.recs {
			if !q.acked[r.seq] {
				dropped++
				q.queued--
			}
			delete(q.acked, r.seq)
		}
		q.stats.Dropped += dropped
		q.cursor = max(q.cursor, old.next-1)
		q.readSeq = max(q.readSeq, old.next)
		q.removeFirst()
		if now := time.Now(); now.Sub(q.lastDropLog) > 10*time.Second {
			q.lastDropLog = now
			q.log.Warn("queue full: dropped the oldest records", "segment", filepath.Base(old.path), "records", dropped, "dropped_total", q.stats.Dropped)
		}
		q.kickCursor()
	}
}

// removeFirst deletes the oldest segment. Called with mu held.
func (q *Queue) removeFirst() {
	old := q.segs[0]
	if err := os.Remove(old.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		q.log.Warn("queue: cannot delete a segment; it will be rescanned on the next Open", "segment", filepath.Base(old.path), "err", err)
	}
	q.bytes -= old.size
	q.segs[0] = nil
	q.segs = q.segs[1:]
}

func (q *Queue) kickCursor() {
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

// Next blocks until a record not yet handed out is available and returns
// it. Records come in sequence order; after Rewind the unacked ones come
// again. It returns ErrClosed after Close, or ctx's error.
func (q *Queue) Next(ctx context.Context) (Record, error) {
	stop := context.AfterFunc(ctx, func() {
		q.mu.Lock()
		q.cond.Broadcast()
		q.mu.Unlock()
	})
	defer stop()
	q.mu.Lock()
	defer q.mu.Unlock()
	for {
		if q.closed {
			return Record{}, fmt.Errorf("queue.Next: %w", ErrClosed)
		}
		if err := ctx.Err(); err != nil {
			return Record{}, err
		}
		if seg, ref, ok := q.find(q.readSeq); ok {
			p, err := readAt(seg, ref)
			if err != nil {
				return Record{}, fmt.Errorf("queue.Next: %w", err)
			}
			q.readSeq = ref.seq + 1
			return Record{Seq: ref.seq, Payload: p}, nil
		}
		q.cond.Wait()
	}
}

// find locates the first unacked record with seq ≥ from. Called with mu held.
func (q *Queue) find(from uint64) (*segment, recRef, bool) {
	i := sort.Search(len(q.segs), func(i int) bool { return q.segs[i].next > from })
	for ; i < len(q.segs); i++ {
		s := q.segs[i]
		j := sort.Search(len(s.recs), func(j int) bool { return s.recs[j].seq >= from })
		for ; j < len(s.recs); j++ {
			if !q.acked[s.recs[j].seq] {
				return s, s.recs[j], true
			}
		}
	}
	return nil, recRef{}, false
}

func readAt(s *segment, r recRef) ([]byte, error) {
	f, err := os.Open(s.path)
	if err != nil {
		return nil, fmt.Errorf("read record %d: %w", r.seq, err)
	}
	defer f.Close()
	var p []byte
	seq, _, err := readRecord(io.NewSectionReader(f, r.off, int64(r.n)), &p)
	if err == nil && seq != r.seq {
		err = fmt.Errorf("%w: found sequence %d", ErrCorrupt, seq)
	}
	if err != nil {
		return nil, fmt.Errorf("read record %d from %s: %w", r.seq, filepath.Base(s.path), err)
	}
	return p, nil
}

// Ack marks a record delivered (after PUBACK). Acks may come in any order;
// the cursor advances over the acked prefix, fully acked segments are
// deleted, and the cursor is persisted shortly after by the writer. Acking
// an unknown, dropped or already acked sequence is a no-op.
func (q *Queue) Ack(seq uint64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return fmt.Errorf("queue.Ack: %w", ErrClosed)
	}
	if seq <= q.cursor || seq >= q.nextSeq || q.acked[seq] || !q.holds(seq) {
		return nil
	}
	q.acked[seq] = true
	q.stats.Acked++
	q.queued--
	before := q.cursor
	for len(q.segs) > 0 {
		s := q.segs[0]
		for len(s.recs) > 0 && q.acked[s.recs[0].seq] {
			delete(q.acked, s.recs[0].seq)
			q.cursor = s.recs[0].seq
			s.recs = s.recs[1:]
		}
		if len(s.recs) > 0 || len(q.segs) == 1 {
			break
		}
		q.cursor = max(q.cursor, s.next-1)
		q.removeFirst()
	}
	if q.cursor != before {
		q.kickCursor()
	}
	return nil
}

// holds reports whether seq is an indexed (unacked-prefix) record. Called with mu held.
func (q *Queue) holds(seq uint64) bool {
	i := sort.Search(len(q.segs), func(i int) bool { return q.segs[i].next > seq })
	if i == len(q.segs) {
		return false
	}
	s := q.segs[i]
	j := sort.Search(len(s.recs), func(j int) bool { return s.recs[j].seq >= seq })
	return j < len(s.recs) && s.recs[j].seq == seq
}

// persistCursor writes the cursor if it moved. Only the writer goroutine calls it.
func (q *Queue) persistCursor() {
	q.mu.Lock()
	c, done := q.cursor, q.cursor == q.persisted
	q.mu.Unlock()
	if done {
		return
	}
	if err := writeCursor(q.dir, c); err != nil {
		q.log.Warn("queue: cannot persist the ack cursor; acked records may be redelivered after a restart", "err", err)
		return
	}
	q.mu.Lock()
	q.persisted = c
	q.mu.Unlock()
}

// writeCursor replaces the cursor file atomically: temp, fsync, rename, fsync dir.
func writeCursor(dir string, c uint64) error {
	tmp := filepath.Join(dir, cursorName+".tmp")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("write cursor: %w", err)
	}
	_, err = f.WriteString(strconv.FormatUint(c, 10) + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, cursorName))
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		return fmt.Errorf("write cursor: %w", err)
	}
	return nil
}

// Rewind makes Next hand out every unacked record again, in order (after a
// reconnect: at-least-once, duplicates possible, none missing).
func (q *Queue) Rewind() {
	q.mu.Lock()
	q.readSeq = q.cursor + 1
	q.cond.Broadcast()
	q.mu.Unlock()
}

// Stats returns a snapshot of the counters.
func (q *Queue) Stats() Stats {
	q.mu.Lock()
	defer q.mu.Unlock()
	s := q.stats
	s.Records = q.queued
	s.Bytes = q.bytes
	return s
}

// Close commits pending appends, persists the cursor, stops the writer and
// closes the files. Blocked Next calls return ErrClosed. Close is idempotent.
func (q *Queue) Close() error {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil
	}
	q.closed = true
	q.cond.Broadcast()
	q.mu.Unlock()
	q.sendMu.Lock()
	close(q.appendCh)
	q.sendMu.Unlock()
	q.wg.Wait()
	q.mu.Lock()
	defer q.mu.Unlock()
	if err := q.active.Close(); err != nil {
		return fmt.Errorf("queue.Close: %w", err)
	}
	return nil
}
