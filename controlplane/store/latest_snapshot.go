package store

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"sort"
)

// A device's latest values are one row of device_latest: every point's
// newest sample, sorted by point (byte order), packed. An ingest
// transaction reads the snapshots of its group's devices, merges the
// group's newest sample per point into them and writes each back once,
// instead of one upsert per point (decision in
// docs/pending-decisions-ingest.md).
//
// data: uvarint point count, then per point: uvarint name length, name,
// 8 bytes value (IEEE 754, little endian), uvarint status, varint µs.

// latestEntry is one point's latest value.
type latestEntry struct {
	point  string
	value  float64
	status uint32
	at     int64 // µs
}

// appendLatest appends the snapshot of es to dst.
func appendLatest(dst []byte, es []latestEntry) []byte {
	size := binary.MaxVarintLen64
	for _, e := range es {
		size += len(e.point) + 8 + 3*binary.MaxVarintLen64
	}
	out := slices.Grow(dst, size)
	out = binary.AppendUvarint(out, uint64(len(es)))
	for _, e := range es {
		out = binary.AppendUvarint(out, uint64(len(e.point)))
		out = append(out, e.point...)
		out = binary.LittleEndian.AppendUint64(out, math.Float64bits(e.value))
		out = binary.AppendUvarint(out, uint64(e.status))
		out = binary.AppendVarint(out, e.at)
	}
	return out
}

func decodeLatest(data []byte) ([]latestEntry, error) {
	bad := fmt.Errorf("corrupt latest-value snapshot (%d bytes)", len(data))
	count, n := binary.Uvarint(data)
	if n <= 0 || count > uint64(len(data)) {
		return nil, bad
	}
	data = data[n:]
	es := make([]latestEntry, 0, count)
	for range count {
		l, n := binary.Uvarint(data)
		if n <= 0 || l > uint64(len(data)-n) {
			return nil, bad
		}
		e := latestEntry{point: string(data[n : n+int(l)])}
		data = data[n+int(l):]
		if len(data) < 8 {
			return nil, bad
		}
		e.value = math.Float64frombits(binary.LittleEndian.Uint64(data))
		data = data[8:]
		status, n := binary.Uvarint(data)
		if n <= 0 {
			return nil, bad
		}
		data = data[n:]
		at, n := binary.Varint(data)
		if n <= 0 {
			return nil, bad
		}
		data = data[n:]
		e.status, e.at = uint32(status), at
		es = append(es, e)
	}
	if len(data) != 0 {
		return nil, bad
	}
	return es, nil
}

// mergeLatest merges update (sorted by point, one entry a point) into base
// (sorted by point): a point's entry is replaced unless the stored one is
// newer. When update brings no new point (a device sending the same points
// every time), base is updated in place and returned; otherwise base is
// left unchanged and a new slice returned. update is never modified.
func mergeLatest(base, update []latestEntry) []latestEntry {
	if inPlace(base, update) {
		i := 0
		for _, u := range update {
			for base[i].point != u.point {
				i++
			}
			if u.at >= base[i].at {
				base[i] = u
			}
		}
		return base
	}
	out := make([]latestEntry, 0, len(base)+len(update))
	i, j := 0, 0
	for i < len(base) && j < len(update) {
		switch b, u := base[i], update[j]; {
		case b.point < u.point:
			out = append(out, b)
			i++
		case b.point > u.point:
			out = append(out, u)
			j++
		default:
			if u.at >= b.at {
				out = append(out, u)
			} else {
				out = append(out, b)
			}
			i++
			j++
		}
	}
	out = append(out, base[i:]...)
	return append(out, update[j:]...)
}

// inPlace reports whether every point of update is in base (both sorted).
func inPlace(base, update []latestEntry) bool {
	if len(update) > len(base) {
		return false
	}
	i := 0
	for _, u := range update {
		for i < len(base) && base[i].point < u.point {
			i++
		}
		if i == len(base) || base[i].point != u.point {
			return false
		}
	}
	return true
}

func sortLatest(es []latestEntry) {
	sort.Slice(es, func(a, b int) bool { return es[a].point < es[b].point })
}
