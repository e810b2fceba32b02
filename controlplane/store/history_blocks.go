package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
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
	points       []string          // in first-seen order
	runs         map[string][]byte // point → encoded samples
	counts       map[string]int    // point → samples
}

func (b *historyBlock) add(s Sample, at int64) {
	run, ok := b.runs[s.Point]
	if !ok {
		b.points = append(b.points, s.Point)
	}
	run = binary.LittleEndian.AppendUint64(run, math.Float64bits(s.Value))
	run = binary.AppendUvarint(run, uint64(s.Status))
	run = binary.AppendUvarint(run, uint64(at-b.bucket))
	run = binary.AppendUvarint(run, s.BatchSeq)
	b.runs[s.Point] = run
	b.counts[s.Point]++
	b.n++
	if b.n == 1 || at > b.tMax {
		b.tMax = at
	}
}

func (b *historyBlock) encode() []byte {
	size := binary.MaxVarintLen64
	for _, p := range b.points {
		size += len(p) + len(b.runs[p]) + 3*binary.MaxVarintLen64
	}
	out := make([]byte, 0, size)
	out = binary.AppendUvarint(out, uint64(len(b.points)))
	for _, p := range b.points {
		run := b.runs[p]
		out = binary.AppendUvarint(out, uint64(len(p)))
		out = append(out, p...)
		out = binary.AppendUvarint(out, uint64(b.counts[p]))
		out = binary.AppendUvarint(out, uint64(len(run)))
		out = append(out, run...)
	}
	return out
}

// historyBlocks packs the batches' samples (in order) into blocks per
// device, bucket and partition, in first-seen order.
func historyBlocks(batches []SampleBatch) []*historyBlock {
	type devBucket struct {
		device string
		bucket int64
	}
	type key struct {
		devBucket
		part int64
	}
	// Count the distinct points per device and bucket to find wide groups.
	seen := map[devBucket]map[string]struct{}{}
	for _, bt := range batches {
		for _, s := range bt.Samples {
			k := devBucket{bt.DeviceID, bucketOf(toMicros(s.At))}
			ps := seen[k]
			if ps == nil {
				ps = map[string]struct{}{}
				seen[k] = ps
			}
			ps[s.Point] = struct{}{}
		}
	}
	var out []*historyBlock
	blocks := map[key]*historyBlock{}
	for _, bt := range batches {
		for _, s := range bt.Samples {
			at := toMicros(s.At)
			k := key{devBucket{bt.DeviceID, bucketOf(at)}, 0}
			if len(seen[k.devBucket]) > widePoints {
				k.part = partOf(s.Point)
			}
			b := blocks[k]
			if b == nil {
				b = &historyBlock{device: k.device, bucket: k.bucket, part: k.part, runs: map[string][]byte{}, counts: map[string]int{}}
				blocks[k] = b
				out = append(out, b)
			}
			b.add(s, at)
		}
	}
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
