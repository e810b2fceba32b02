// Package queue is the agent's durable store-and-forward queue: an
// append-only log of checksummed records in segment files, bounded in
// bytes, with group commit (many concurrent Appends share one fsync) and
// at-least-once delivery (records are removed only after Ack).
//
// On-disk layout in the queue directory:
//
//	<first-seq, 20 digits>.seg   records: len u32 | crc32c u32 | seq u64 | payload
//	cursor                       highest sequence whose record and all before it were acked
//
// The CRC covers seq and payload. On Open every segment is scanned; a torn
// or corrupt tail is truncated (it was never acknowledged to a producer,
// because Append returns only after fsync), so the queue is never left
// corrupt. When appending would exceed MaxBytes, the oldest segments are
// dropped and their records counted in Stats.Dropped.
//
// Concurrency: Append, Next, Ack, Rewind, Stats and Close are safe for
// concurrent use; records are handed out in sequence order.
package queue

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
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

const headerLen = 16

// MaxRecord is the largest accepted payload.
const MaxRecord = 1 << 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Errors.
var (
	ErrClosed   = errors.New("queue closed")
	ErrTooLarge = errors.New("record larger than the queue allows")
	// errCorrupt marks a record that failed its checks while scanning.
	errCorrupt = errors.New("corrupt record")
)

// Options configure a Queue.
type Options struct {
	MaxBytes     int64         // bound on all segments together; default 64 MiB
	SegmentBytes int64         // segment size; default MaxBytes/8 (at least 64 KiB)
	SyncDelay    time.Duration // group-commit window; default 2ms
	Logger       *slog.Logger
}

// Record is a queued payload.
type Record struct {
	Seq     uint64
	Payload []byte
}

// Stats are counters of a queue.
type Stats struct {
	Appended, Acked, Dropped, Syncs, Truncated uint64
	Records                                    int   // queued, not yet acked
	Bytes                                      int64 // on disk
}

type segment struct {
	first uint64 // first sequence number
	path  string
	size  int64
	recs  []recRef // records not yet acked, in order
}

type recRef struct {
	seq uint64
	off int64
	n   int32
}

type pendingAppend struct {
	payload []byte
	done    chan appendResult
}

type appendResult struct {
	seq uint64
	err error
}

// Queue is a durable FIFO. See the package comment.
type Queue struct {
	dir  string
	opts Options
	log  *slog.Logger

	mu       sync.Mutex
	cond     *sync.Cond
	segs     []*segment
	active   *os.File
	nextSeq  uint64
	readSeq  uint64 // next sequence Next hands out
	acked    map[uint64]bool
	cursor   uint64 // all ≤ cursor acked
	stats    Stats
	closed   bool
	appendCh chan pendingAppend
	sendMu   sync.RWMutex // held (read) while sending on appendCh; Close takes it to close the channel
	wg       sync.WaitGroup
}

// Open opens (or creates) the queue in dir and recovers its state.
func Open(dir string, opts Options) (*Queue, error) {
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = 64 << 20
	}
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = opts.MaxBytes / 8
	}
	if opts.SegmentBytes < 64<<10 {
		opts.SegmentBytes = 64 << 10
	}
	if opts.SyncDelay <= 0 {
		opts.SyncDelay = 2 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("queue.Open: %w", err)
	}
	q := &Queue{dir: dir, opts: opts, log: opts.Logger, acked: map[uint64]bool{}, appendCh: make(chan pendingAppend, 1024)}
	q.cond = sync.NewCond(&q.mu)
	if err := q.recover(); err != nil {
		return nil, err
	}
	q.wg.Add(1)
	go q.writer()
	return q, nil
}

func (q *Queue) recover() error {
	b, err := os.ReadFile(filepath.Join(q.dir, "cursor"))
	if err == nil {
		if q.cursor, err = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err != nil {
			return fmt.Errorf("queue: cursor file is corrupt (%q); remove it to redeliver everything", b)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("queue: %w", err)
	}
	names, err := filepath.Glob(filepath.Join(q.dir, "*.seg"))
	if err != nil {
		return err
	}
	sort.Strings(names)
	q.nextSeq = q.cursor + 1
	for i, name := range names {
		first, err := strconv.ParseUint(strings.TrimSuffix(filepath.Base(name), ".seg"), 10, 64)
		if err != nil {
			return fmt.Errorf("queue: unexpected file %s", name)
		}
		seg := &segment{first: first, path: name}
		last, err := q.scan(seg, i == len(names)-1)
		if err != nil {
			return err
		}
		if last >= q.nextSeq {
			q.nextSeq = last + 1
		}
		if seg.size == 0 && i != len(names)-1 {
			os.Remove(name)
			continue
		}
		q.segs = append(q.segs, seg)
	}
	q.readSeq = q.cursor + 1
	if len(q.segs) > 0 && len(q.segs[0].recs) > 0 && q.segs[0].recs[0].seq > q.readSeq {
		q.readSeq = q.segs[0].recs[0].seq
	}
	if len(q.segs) == 0 {
		if err := q.newSegment(); err != nil {
			return err
		}
	} else {
		f, err := os.OpenFile(q.segs[len(q.segs)-1].path, os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return fmt.Errorf("queue: %w", err)
		}
		q.active = f
	}
	return nil
}

// scan reads a segment, keeps unacked records, and truncates a torn or
// corrupt tail. It returns the last valid sequence number.
func (q *Queue) scan(seg *segment, last bool) (uint64, error) {
	f, err := os.OpenFile(seg.path, os.O_RDWR, 0o600)
	if err != nil {
		return 0, fmt.Errorf("queue: %w", err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 64<<10)
	var off int64
	var lastSeq uint64
	for {
		seq, payloadLen, err := readRecord(r, nil)
		if err == io.EOF {
			break
		}
		if err != nil {
			q.log.Warn("queue: truncating segment at a torn or corrupt record", "segment", filepath.Base(seg.path), "offset", off, "reason", err, "last_segment", last)
			q.stats.Truncated++
			if err := f.Truncate(off); err != nil {
				return 0, err
			}
			if err := f.Sync(); err != nil {
				return 0, err
			}
			break
		}
		n := int32(headerLen + payloadLen)
		if seq > q.cursor {
			seg.recs = append(seg.recs, recRef{seq: seq, off: off, n: n})
		}
		lastSeq = seq
		off += int64(n)
	}
	seg.size = off
	return lastSeq, nil
}

// readRecord reads one record; payload is filled when dst is non-nil.
func readRecord(r io.Reader, dst *[]byte) (seq uint64, payloadLen int, err error) {
	var h [headerLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		if err == io.EOF {
			return 0, 0, io.EOF
		}
		return 0, 0, fmt.Errorf("%w: short header", errCorrupt)
	}
	n := binary.LittleEndian.Uint32(h[0:4])
	sum := binary.LittleEndian.Uint32(h[4:8])
	seq = binary.LittleEndian.Uint64(h[8:16])
	if n > MaxRecord {
		return 0, 0, fmt.Errorf("%w: length %d", errCorrupt, n)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		return 0, 0, fmt.Errorf("%w: short payload", errCorrupt)
	}
	c := crc32.Update(crc32.Checksum(h[8:16], castagnoli), castagnoli, p)
	if c != sum {
		return 0, 0, fmt.Errorf("%w: checksum mismatch", errCorrupt)
	}
	if dst != nil {
		*dst = p
	}
	return seq, int(n), nil
}

func encode(seq uint64, payload []byte) []byte {
	b := make([]byte, headerLen+len(payload))
	binary.LittleEndian.PutUint32(b[0:4], uint32(len(payload)))
	binary.LittleEndian.PutUint64(b[8:16], seq)
	copy(b[headerLen:], payload)
	c := crc32.Update(crc32.Checksum(b[8:16], castagnoli), castagnoli, payload)
	binary.LittleEndian.PutUint32(b[4:8], c)
	return b
}

func (q *Queue) newSegment() error {
	if q.active != nil {
		q.active.Close()
	}
	path := filepath.Join(q.dir, fmt.Sprintf("%020d.seg", q.nextSeq))
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("queue: new segment: %w", err)
	}
	q.active = f
	q.segs = append(q.segs, &segment{first: q.nextSeq, path: path})
	if d, err := os.Open(q.dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// Append stores payload durably and returns its sequence number. It
// returns only after the record is fsync'd (shared with concurrent
// Appends).
func (q *Queue) Append(ctx context.Context, payload []byte) (uint64, error) {
	if len(payload) > MaxRecord || int64(len(payload)+headerLen) > q.opts.SegmentBytes {
		return 0, fmt.Errorf("%w: %d bytes", ErrTooLarge, len(payload))
	}
	p := pendingAppend{payload: payload, done: make(chan appendResult, 1)}
	q.sendMu.RLock()
	q.mu.Lock()
	closed := q.closed
	q.mu.Unlock()
	if closed {
		q.sendMu.RUnlock()
		return 0, ErrClosed
	}
	select {
	case q.appendCh <- p:
		q.sendMu.RUnlock()
	case <-ctx.Done():
		q.sendMu.RUnlock()
		return 0, ctx.Err()
	}
	select {
	case r := <-p.done:
		return r.seq, r.err
	case <-ctx.Done():
		// The record may still become durable; the caller treats it as not acknowledged.
		return 0, ctx.Err()
	}
}

// writer batches appends: write all pending, fsync once, then release.
func (q *Queue) writer() {
	defer q.wg.Done()
	for first := range q.appendCh {
		batch := []pendingAppend{first}
		timer := time.NewTimer(q.opts.SyncDelay)
	collect:
		for len(batch) < 4096 {
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
	}
}

func (q *Queue) commit(batch []pendingAppend) {
	q.mu.Lock()
	defer q.mu.Unlock()
	results := make([]appendResult, len(batch))
	var err error
	for i, p := range batch {
		n := int64(headerLen + len(p.payload))
		if q.segs[len(q.segs)-1].size+n > q.opts.SegmentBytes {
			if err = q.syncActive(); err == nil {
				err = q.newSegment()
			}
		}
		if err == nil {
			q.enforceBound(n)
			seq := q.nextSeq
			seg := q.segs[len(q.segs)-1]
			if _, err = q.active.Write(encode(seq, p.payload)); err == nil {
				seg.recs = append(seg.recs, recRef{seq: seq, off: seg.size, n: int32(n)})
				seg.size += n
				q.nextSeq++
				results[i] = appendResult{seq: seq}
			}
		}
		if err != nil {
			results[i] = appendResult{err: fmt.Errorf("queue: append: %w", err)}
		}
	}
	if err == nil {
		err = q.syncActive()
	}
	for i, p := range batch {
		if err != nil && results[i].err == nil {
			results[i] = appendResult{err: fmt.Errorf("queue: fsync: %w", err)}
		}
		if results[i].err == nil {
			q.stats.Appended++
		}
		p.done <- results[i]
	}
	q.cond.Broadcast()
}

func (q *Queue) syncActive() error {
	q.stats.Syncs++
	return q.active.Sync()
}

// enforceBound drops the oldest segments until adding n bytes fits.
func (q *Queue) enforceBound(n int64) {
	for len(q.segs) > 1 && q.totalBytes()+n > q.opts.MaxBytes {
		old := q.segs[0]
		for _, r := range old.recs {
			if !q.acked[r.seq] {
				q.stats.Dropped++
			}
			delete(q.acked, r.seq)
			if r.seq >= q.readSeq {
				q.readSeq = r.seq + 1
			}
			if r.seq > q.cursor {
				q.cursor = r.seq
			}
		}
		os.Remove(old.path)
		q.segs = q.segs[1:]
		q.log.Warn("queue full: dropped the oldest segment", "segment", filepath.Base(old.path), "records", len(old.recs))
		q.writeCursor()
	}
}

func (q *Queue) totalBytes() int64 {
	var t int64
	for _, s := range q.segs {
		t += s.size
	}
	return t
}

// Next blocks until a record not yet handed out is available and returns
// it. Records come in sequence order; after Rewind, unacked ones come again.
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
			return Record{}, ErrClosed
		}
		if err := ctx.Err(); err != nil {
			return Record{}, err
		}
		if seg, ref, ok := q.find(q.readSeq); ok {
			p, err := q.readAt(seg, ref)
			if err != nil {
				return Record{}, err
			}
			q.readSeq = ref.seq + 1
			return Record{Seq: ref.seq, Payload: p}, nil
		}
		q.cond.Wait()
	}
}

// find locates the first unacked record with seq ≥ from.
func (q *Queue) find(from uint64) (*segment, recRef, bool) {
	for _, s := range q.segs {
		i := sort.Search(len(s.recs), func(i int) bool { return s.recs[i].seq >= from })
		for ; i < len(s.recs); i++ {
			if !q.acked[s.recs[i].seq] {
				return s, s.recs[i], true
			}
		}
	}
	return nil, recRef{}, false
}

func (q *Queue) readAt(s *segment, r recRef) ([]byte, error) {
	f, err := os.Open(s.path)
	if err != nil {
		return nil, fmt.Errorf("queue: read: %w", err)
	}
	defer f.Close()
	var p []byte
	if _, _, err := readRecord(io.NewSectionReader(f, r.off, int64(r.n)), &p); err != nil {
		return nil, fmt.Errorf("queue: read record %d: %w", r.seq, err)
	}
	return p, nil
}

// Ack marks a record delivered. Acks may come out of order; the durable
// cursor advances over the contiguous acked prefix.
func (q *Queue) Ack(seq uint64) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if seq <= q.cursor || seq >= q.nextSeq {
		return nil
	}
	if !q.acked[seq] {
		q.acked[seq] = true
		q.stats.Acked++
	}
	advanced := false
	for q.acked[q.cursor+1] {
		delete(q.acked, q.cursor+1)
		q.cursor++
		advanced = true
	}
	if !advanced {
		return nil
	}
	// Drop fully acked segments (never the active one) and trim indexes.
	for len(q.segs) > 1 && (len(q.segs[0].recs) == 0 || q.segs[0].recs[len(q.segs[0].recs)-1].seq <= q.cursor) {
		os.Remove(q.segs[0].path)
		q.segs = q.segs[1:]
	}
	for _, s := range q.segs {
		i := sort.Search(len(s.recs), func(i int) bool { return s.recs[i].seq > q.cursor })
		s.recs = s.recs[i:]
	}
	return q.writeCursor()
}

// writeCursor persists the cursor atomically (write, fsync, rename).
func (q *Queue) writeCursor() error {
	tmp := filepath.Join(q.dir, "cursor.tmp")
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("queue: cursor: %w", err)
	}
	if _, err := f.WriteString(strconv.FormatUint(q.cursor, 10)); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	f.Close()
	return os.Rename(tmp, filepath.Join(q.dir, "cursor"))
}

// Rewind makes Next hand out every unacked record again, in order (after
// a reconnect).
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
	s.Bytes = q.totalBytes()
	for _, seg := range q.segs {
		for _, r := range seg.recs {
			if !q.acked[r.seq] {
				s.Records++
			}
		}
	}
	return s
}

// Close flushes pending appends and closes the queue.
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
	return q.active.Close()
}
