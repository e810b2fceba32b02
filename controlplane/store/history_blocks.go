package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/bits"
	"slices"
	"sync"
)

// Value history is kept in blocks: one row of device_history_blocks per
// device, time bucket and point partition per ingest transaction, its
// samples packed in data. Writing one row per block instead of one per
// value is what lets SQLite keep up with 100k values/s (decision in
// docs/pending-decisions-ingest.md).
//
//   - bucket: the start (µs since the epoch) of the aligned historyBucket
//     every sample of the block lies in, so a time range reads only its
//     buckets and samples of different buckets never need sorting together;
//   - part: 0 when the block holds every point the device sent in that
//     transaction and bucket; a wide group (more than widePoints distinct
//     points, e.g. one OPC-UA agent with 10,000 nodes) is split into
//     historyParts partitions by a hash of the point name (part 1…64), so
//     reading one point's history decodes ~1/64 of the device's data;
//   - t_max: the newest sample; retention deletes a block once t_max is
//     older than the cutoff (so up to one bucket of older samples outlives
//     the cutoff).
//
// data: uvarint point count, then per point: uvarint name length, name,
// uvarint sample count, uvarint byte length of its samples, then per
// sample in arrival order: 8 bytes value (IEEE 754, little endian),
// uvarint status, uvarint µs after bucket, uvarint batch sequence.
const (
	historyBucket = int64(60_000_000) // µs
	widePoints    = 256
	historyParts  = 64
)

// bucketOf returns the start of the bucket holding us (floor division, so
// times before 1970 work too).
func bucketOf(us int64) int64 {
	b := us / historyBucket * historyBucket
	if us < 0 && b != us {
		b -= historyBucket
	}
	return b
}

// partOf is the partition of point in a wide block.
func partOf(point string) int64 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(point))
	return 1 + int64(h.Sum32()%historyParts)
}

// historyBlock is one row of device_history_blocks being built.
type historyBlock struct {
	device       string
	bucket, part int64
	tMax         int64
	n            int
	points       []string         // in first-seen order
	index        map[string]int32 // point → position in points, once there are more than linearPoints
	samples      []blockSample    // in arrival order
}

// blockSample is one sample of a block; point is its position in points.
type blockSample struct {
	point  int32
	status uint32
	value  float64
	off    uint64 // µs after the bucket's start
	seq    uint64
}

// linearPoints: up to this many points a block finds a point by scanning
// (a device sends ~10 in the common case); beyond it, by a map.
const linearPoints = 16

func (b *historyBlock) pointIndex(p string) int32 {
	if b.index != nil {
		if i, ok := b.index[p]; ok {
			return i
		}
	} else {
		for i, q := range b.points {
			if q == p {
				return int32(i)
			}
		}
	}
	i := int32(len(b.points))
	b.points = append(b.points, p)
	switch {
	case b.index != nil:
		b.index[p] = i
	case len(b.points) > linearPoints:
		b.index = make(map[string]int32, 2*len(b.points))
		for j, q := range b.points {
			b.index[q] = int32(j)
		}
	}
	return i
}

func (b *historyBlock) add(s Sample, at int64) {
	b.samples = append(b.samples, blockSample{point: b.pointIndex(s.Point), status: s.Status, value: s.Value, off: uint64(at - b.bucket), seq: s.BatchSeq})
	b.n++
	if b.n == 1 || at > b.tMax {
		b.tMax = at
	}
}

// uvarintLen is the length of binary.AppendUvarint(nil, v).
func uvarintLen(v uint64) int { return (bits.Len64(v|1) + 6) / 7 }

// appendEncoded appends the block's data column to dst, using sc's
// buffers for its working space.
func (b *historyBlock) appendEncoded(dst []byte, sc *encodeScratch) []byte {
	np := len(b.points)
	// Per point: its samples, the byte length of their run, and (below)
	// where its samples start in order.
	sc.ints = slices.Grow(sc.ints[:0], 3*np)[:3*np]
	clear(sc.ints)
	counts := sc.ints[:np]
	runLen, start := sc.ints[np:2*np], sc.ints[2*np:]
	for _, s := range b.samples {
		counts[s.point]++
		runLen[s.point] += 8 + uvarintLen(uint64(s.status)) + uvarintLen(s.off) + uvarintLen(s.seq)
	}
	size := binary.MaxVarintLen64
	for i, p := range b.points {
		size += len(p) + runLen[i] + 3*binary.MaxVarintLen64
	}
	// The samples grouped by point, each group in arrival order (a
	// counting sort).
	for i := 1; i < np; i++ {
		start[i] = start[i-1] + counts[i-1]
	}
	sc.order = slices.Grow(sc.order[:0], len(b.samples))[:len(b.samples)]
	order := sc.order
	for j, s := range b.samples {
		order[start[s.point]] = int32(j)
		start[s.point]++
	}
	out := slices.Grow(dst, size)
	out = binary.AppendUvarint(out, uint64(np))
	next := 0
	for i, p := range b.points {
		out = binary.AppendUvarint(out, uint64(len(p)))
		out = append(out, p...)
		out = binary.AppendUvarint(out, uint64(counts[i]))
		out = binary.AppendUvarint(out, uint64(runLen[i]))
		for _, j := range order[next : next+counts[i]] {
			s := &b.samples[j]
			out = binary.LittleEndian.AppendUint64(out, math.Float64bits(s.value))
			out = binary.AppendUvarint(out, uint64(s.status))
			out = binary.AppendUvarint(out, s.off)
			out = binary.AppendUvarint(out, s.seq)
		}
		next += counts[i]
	}
	return out
}

// encodeScratch is the working space StoreSampleBatches reuses across
// calls (pooled) for the history blocks and snapshots it encodes: the
// encoded columns of one statement share buf, which is reset once the
// statement has run (database/sql drivers do not keep arguments).
type encodeScratch struct {
	buf   []byte
	ints  []int
	order []int32
}

// maxPooledScratch: larger buffers (a burst of wide devices) are not
// kept for the next call.
const maxPooledScratch = 8 << 20

var scratchPool = sync.Pool{New: func() any { return new(encodeScratch) }}

func getScratch() *encodeScratch { return scratchPool.Get().(*encodeScratch) }

func putScratch(sc *encodeScratch) {
	if cap(sc.buf) > maxPooledScratch || cap(sc.ints) > maxPooledScratch/8 || cap(sc.order) > maxPooledScratch/4 {
		return
	}
	sc.buf = sc.buf[:0]
	scratchPool.Put(sc)
}

// column appends one encoded column to sc.buf with enc and returns it
// (capacity clipped, so later appends cannot touch it).
func (sc *encodeScratch) column(enc func(dst []byte) []byte) []byte {
	start := len(sc.buf)
	sc.buf = enc(sc.buf)
	return sc.buf[start:len(sc.buf):len(sc.buf)]
}

// historyBlocks packs the batches' samples (in order) into blocks per
// device, bucket and partition, in first-seen order. A batch's samples
// mostly share one bucket, so the maps are consulted once per run of
// samples in the same bucket, not per sample.
func historyBlocks(batches []SampleBatch) []*historyBlock {
	type devBucket struct {
		device string
		bucket int64
	}
	type key struct {
		devBucket
		part int64
	}
	// runs calls fn for each run of a batch's samples in one bucket.
	runs := func(fn func(k devBucket, run []Sample)) {
		for _, bt := range batches {
			from := 0
			for i := 1; i <= len(bt.Samples); i++ {
				if i == len(bt.Samples) || bucketOf(toMicros(bt.Samples[i].At)) != bucketOf(toMicros(bt.Samples[from].At)) {
					fn(devBucket{bt.DeviceID, bucketOf(toMicros(bt.Samples[from].At))}, bt.Samples[from:i])
					from = i
				}
			}
		}
	}
	// A device and bucket is wide with more than widePoints distinct
	// points, which needs more than widePoints samples: only those are
	// counted point by point.
	samples := map[devBucket]int{}
	runs(func(k devBucket, run []Sample) { samples[k] += len(run) })
	var distinct map[devBucket]map[string]struct{}
	for k, n := range samples {
		if n > widePoints {
			if distinct == nil {
				distinct = map[devBucket]map[string]struct{}{}
			}
			distinct[k] = map[string]struct{}{}
		}
	}
	if distinct != nil {
		runs(func(k devBucket, run []Sample) {
			if ps := distinct[k]; ps != nil {
				for _, s := range run {
					ps[s.Point] = struct{}{}
				}
			}
		})
	}
	var out []*historyBlock
	blocks := map[key]*historyBlock{}
	// block returns the block of k, new ones sized for hint samples.
	block := func(k key, hint int) *historyBlock {
		b := blocks[k]
		if b == nil {
			b = &historyBlock{device: k.device, bucket: k.bucket, part: k.part,
				points: make([]string, 0, min(hint, 64)), samples: make([]blockSample, 0, hint)}
			blocks[k] = b
			out = append(out, b)
		}
		return b
	}
	runs(func(k devBucket, run []Sample) {
		if len(distinct[k]) > widePoints {
			for _, s := range run {
				block(key{k, partOf(s.Point)}, len(run)/historyParts+1).add(s, toMicros(s.At))
			}
			return
		}
		b := block(key{k, 0}, len(run))
		for _, s := range run {
			b.add(s, toMicros(s.At))
		}
	})
	return out
}

var errCorruptBlock = errors.New("corrupt history block")

// decodeHistoryBlock calls fn for each sample of point in the block, in
// arrival order, skipping the other points' samples without decoding them.
func decodeHistoryBlock(bucket int64, data []byte, point string, fn func(Sample)) error {
	uvarint := func() (uint64, error) {
		v, n := binary.Uvarint(data)
		if n <= 0 {
			return 0, errCorruptBlock
		}
		data = data[n:]
		return v, nil
	}
	points, err := uvarint()
	if err != nil {
		return err
	}
	for range points {
		nameLen, err := uvarint()
		if err != nil || nameLen > uint64(len(data)) {
			return errCorruptBlock
		}
		name := data[:nameLen]
		data = data[nameLen:]
		count, err := uvarint()
		if err != nil {
			return err
		}
		runLen, err := uvarint()
		if err != nil || runLen > uint64(len(data)) {
			return errCorruptBlock
		}
		run := data[:runLen]
		data = data[runLen:]
		if string(name) != point {
			continue
		}
		for range count {
			if len(run) < 8 {
				return errCorruptBlock
			}
			s := Sample{Point: point, Value: math.Float64frombits(binary.LittleEndian.Uint64(run))}
			run = run[8:]
			var vals [3]uint64
			for i := range vals {
				v, n := binary.Uvarint(run)
				if n <= 0 {
					return errCorruptBlock
				}
				vals[i], run = v, run[n:]
			}
			s.Status, s.At, s.BatchSeq = uint32(vals[0]), fromMicros(bucket+int64(vals[1])), vals[2]
			fn(s)
		}
		return nil // a point appears once per block
	}
	if len(data) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", errCorruptBlock, len(data))
	}
	return nil
}
