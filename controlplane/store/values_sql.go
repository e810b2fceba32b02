package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"
)

func (d *db) StoreSamples(ctx context.Context, deviceID string, samples []Sample) error {
	if err := d.StoreSampleBatches(ctx, []SampleBatch{{DeviceID: deviceID, Samples: samples}}); err != nil {
		return fmt.Errorf("store.StoreSamples: %w", err)
	}
	return nil
}

func scanSample(s scanner) (Sample, error) {
	var v Sample
	var status, at, seq int64
	err := s.Scan(&v.Point, &v.Value, &status, &at, &seq)
	v.Status, v.At, v.BatchSeq = uint32(status), fromMicros(at), uint64(seq)
	return v, err
}

// LatestValues reads the device's snapshot, or its rows in device_values
// if nothing was written since the snapshots were introduced.
func (d *db) LatestValues(ctx context.Context, deviceID string) ([]Sample, error) {
	var data []byte
	err := d.row(ctx, d.sql, `SELECT data FROM device_latest WHERE device_id = ?`, deviceID).Scan(&data)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("store.LatestValues: %w", err)
	}
	if data == nil {
		rows, err := d.query(ctx, d.sql, `SELECT point, value, status, at, 0 FROM device_values WHERE device_id = ? ORDER BY point`, deviceID)
		if err != nil {
			return nil, fmt.Errorf("store.LatestValues: %w", err)
		}
		return collect(rows, scanSample)
	}
	es, err := decodeLatest(data)
	if err != nil {
		return nil, fmt.Errorf("store.LatestValues: device %s: %w", deviceID, err)
	}
	out := make([]Sample, len(es))
	for i, e := range es {
		out[i] = Sample{Point: e.point, Value: e.value, Status: e.status, At: fromMicros(e.at)}
	}
	return out, nil
}

// History merges the point's samples from the history blocks with those
// still in device_value_history (written before the blocks existed).
func (d *db) History(ctx context.Context, deviceID, point string, from, to time.Time, limit int) ([]Sample, error) {
	if limit <= 0 {
		limit = 1000
	}
	rows, err := d.query(ctx, d.sql, `SELECT point, value, status, at, batch_seq FROM device_value_history
		WHERE device_id = ? AND point = ? AND at >= ? AND at < ? ORDER BY at, batch_seq LIMIT ?`, deviceID, point, toMicros(from), toMicros(to), limit)
	if err != nil {
		return nil, fmt.Errorf("store.History: %w", err)
	}
	old, err := collect(rows, scanSample)
	if err != nil {
		return nil, fmt.Errorf("store.History: %w", err)
	}
	blocks, err := d.blockHistory(ctx, deviceID, point, toMicros(from), toMicros(to), limit)
	if err != nil {
		return nil, fmt.Errorf("store.History: %w", err)
	}
	if len(old) == 0 {
		return blocks, nil
	}
	out := make([]Sample, 0, min(limit, len(old)+len(blocks)))
	for len(out) < limit && (len(old) > 0 || len(blocks) > 0) {
		if len(blocks) == 0 || len(old) > 0 && !sampleBefore(blocks[0], old[0]) {
			out, old = append(out, old[0]), old[1:]
		} else {
			out, blocks = append(out, blocks[0]), blocks[1:]
		}
	}
	return out, nil
}

// sampleBefore orders history: by time, then batch sequence.
func sampleBefore(a, b Sample) bool {
	if !a.At.Equal(b.At) {
		return a.At.Before(b.At)
	}
	return a.BatchSeq < b.BatchSeq
}

// blockHistory reads the point's samples in [from, to) µs from the history
// blocks, bucket by bucket, until it has limit.
func (d *db) blockHistory(ctx context.Context, deviceID, point string, from, to int64, limit int) ([]Sample, error) {
	rows, err := d.query(ctx, d.sql, `SELECT bucket, data FROM device_history_blocks
		WHERE device_id = ? AND part IN (0, ?) AND bucket >= ? AND bucket < ? AND t_max >= ? ORDER BY bucket, id`,
		deviceID, partOf(point), bucketOf(from), to, from)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Sample
	bucketStart := 0 // index in out where the current bucket's samples begin
	cur := int64(math.MinInt64)
	finish := func() {
		sort.SliceStable(out[bucketStart:], func(a, b int) bool { return sampleBefore(out[bucketStart+a], out[bucketStart+b]) })
	}
	for rows.Next() {
		var bucket int64
		var data []byte
		if err := rows.Scan(&bucket, &data); err != nil {
			return nil, err
		}
		if bucket != cur {
			finish()
			if len(out) >= limit {
				break
			}
			cur, bucketStart = bucket, len(out)
		}
		err := decodeHistoryBlock(bucket, data, point, func(s Sample) {
			if at := toMicros(s.At); at >= from && at < to {
				out = append(out, s)
			}
		})
		if err != nil {
			return nil, fmt.Errorf("device %s bucket %d: %w", deviceID, bucket, err)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	finish()
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// PruneHistory deletes the history blocks whose newest sample is older
// than before (and the old per-value rows older than before); it returns
// the number of samples deleted.
func (d *db) PruneHistory(ctx context.Context, before time.Time) (int64, error) {
	var n int64
	err := d.tx(ctx, func(tx *sql.Tx) error {
		cutoff := toMicros(before)
		if err := d.row(ctx, tx, `SELECT COALESCE(SUM(n), 0) FROM device_history_blocks WHERE t_max < ?`, cutoff).Scan(&n); err != nil {
			return err
		}
		if _, err := d.exec(ctx, tx, `DELETE FROM device_history_blocks WHERE t_max < ?`, cutoff); err != nil {
			return err
		}
		res, err := d.exec(ctx, tx, `DELETE FROM device_value_history WHERE at < ?`, cutoff)
		if err != nil {
			return err
		}
		old, err := res.RowsAffected()
		n += old
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("store.PruneHistory: %w", err)
	}
	return n, nil
}

// newestPerPoint sorts a device's entries (in arrival order) by point
// and keeps the newest of each point, the later one on equal times; it
// reuses es.
func newestPerPoint(es []latestEntry) []latestEntry {
	slices.SortStableFunc(es, func(a, b latestEntry) int { return strings.Compare(a.point, b.point) })
	out := es[:0]
	for i := 0; i < len(es); {
		best, j := i, i+1
		for ; j < len(es) && es[j].point == es[i].point; j++ {
			if es[j].at >= es[best].at {
				best = j
			}
		}
		out = append(out, es[best]) // len(out) <= i <= best: nothing unread is overwritten
		i = j
	}
	return out
}

// blockRowsPerStatement bounds a multi-row INSERT of history blocks.
const blockRowsPerStatement = 100

func (d *db) StoreSampleBatches(ctx context.Context, batches []SampleBatch) error {
	// The group's newest sample per device and point (the later one on
	// equal times), sorted by point.
	newest := map[string][]latestEntry{}
	for _, b := range batches {
		if len(b.Samples) == 0 {
			continue
		}
		es := newest[b.DeviceID]
		if es == nil {
			es = make([]latestEntry, 0, len(b.Samples))
		}
		for _, s := range b.Samples {
			es = append(es, latestEntry{point: s.Point, value: s.Value, status: s.Status, at: toMicros(s.At)})
		}
		newest[b.DeviceID] = es
	}
	if len(newest) == 0 {
		return nil
	}
	for dev, es := range newest {
		newest[dev] = newestPerPoint(es)
	}
	// Devices in key order so concurrent PostgreSQL writers lock their
	// rows in the same order.
	devices := make([]string, 0, len(newest))
	for dev := range newest {
		devices = append(devices, dev)
	}
	sort.Strings(devices)
	blocks := historyBlocks(batches)
	if d.latest != nil {
		d.latest.mu.Lock()
		defer d.latest.mu.Unlock()
	}
	merged := make(map[string][]latestEntry, len(devices))
	sc := getScratch()
	defer putScratch(sc)
	err := d.tx(ctx, func(tx *sql.Tx) error {
		for len(blocks) > 0 {
			n := min(len(blocks), blockRowsPerStatement)
			args := make([]any, 0, 6*n)
			sc.buf = sc.buf[:0] // the previous statement has run
			for _, b := range blocks[:n] {
				data := sc.column(func(dst []byte) []byte { return b.appendEncoded(dst, sc) })
				args = append(args, b.device, b.bucket, b.part, b.tMax, int64(b.n), data)
			}
			q := `INSERT INTO device_history_blocks (device_id, bucket, part, t_max, n, data) VALUES ` + valueRows(n, 6)
			if _, err := d.exec(ctx, tx, q, args...); err != nil {
				return fmt.Errorf("store.StoreSampleBatches: history: %w", err)
			}
			blocks = blocks[n:]
		}
		stored, err := d.lockLatest(ctx, tx, devices)
		if err != nil {
			return fmt.Errorf("store.StoreSampleBatches: latest values: %w", err)
		}
		rows := make([]any, 0, 2*min(len(devices), latestRowsPerStatement))
		for rest := devices; len(rest) > 0; {
			chunk := rest[:min(len(rest), latestRowsPerStatement)]
			rest = rest[len(chunk):]
			rows = rows[:0]
			sc.buf = sc.buf[:0] // the previous statement has run
			for _, dev := range chunk {
				m := mergeLatest(stored[dev], newest[dev])
				merged[dev] = m
				rows = append(rows, dev, sc.column(func(dst []byte) []byte { return appendLatest(dst, m) }))
			}
			q := `INSERT INTO device_latest (device_id, data) VALUES ` + valueRows(len(chunk), 2) + `
				ON CONFLICT (device_id) DO UPDATE SET data = excluded.data`
			if _, err := d.exec(ctx, tx, q, rows...); err != nil {
				return fmt.Errorf("store.StoreSampleBatches: latest values: %w", err)
			}
		}
		return nil
	})
	if d.latest != nil {
		if err != nil {
			d.latest.forget(devices)
		} else {
			d.latest.put(merged)
		}
	}
	return err
}

// lockLatest returns the stored latest values of devices (sorted), locking
// their snapshot rows until tx ends. A device without a filled snapshot
// gets its values from device_values (the layout before the snapshots),
// which are deleted as they move into the snapshot.
func (d *db) lockLatest(ctx context.Context, tx *sql.Tx, devices []string) (map[string][]latestEntry, error) {
	stored := map[string][]latestEntry{}
	var legacy []string
	if d.latest != nil {
		// Devices whose committed snapshot is cached need no read (the
		// caller holds d.latest.mu).
		uncached := make([]string, 0, len(devices))
		for _, dev := range devices {
			if es, ok := d.latest.get(dev); ok {
				stored[dev] = es
			} else {
				uncached = append(uncached, dev)
			}
		}
		devices = uncached
	}
	for rest := devices; len(rest) > 0; {
		chunk := rest[:min(len(rest), latestRowsPerStatement)]
		rest = rest[len(chunk):]
		args := make([]any, len(chunk))
		for i, dev := range chunk {
			args[i] = dev
		}
		if d.dialect == postgres {
			// SQLite's write transactions are exclusive; PostgreSQL's
			// are not: create the missing rows (or wait for the writer
			// creating them) so that FOR UPDATE below locks every row.
			if _, err := d.exec(ctx, tx, `INSERT INTO device_latest (device_id) VALUES `+valueRows(len(chunk), 1)+` ON CONFLICT (device_id) DO NOTHING`, args...); err != nil {
				return nil, err
			}
		}
		rows, err := d.query(ctx, tx, `SELECT device_id, data FROM device_latest WHERE device_id IN `+valueRows(1, len(chunk))+` FOR UPDATE`, args...)
		if err != nil {
			return nil, err
		}
		filled := map[string]bool{}
		for rows.Next() {
			var dev string
			var data []byte
			if err := rows.Scan(&dev, &data); err != nil {
				rows.Close()
				return nil, err
			}
			if data == nil {
				continue
			}
			es, err := decodeLatest(data)
			if err != nil {
				rows.Close()
				return nil, fmt.Errorf("device %s: %w", dev, err)
			}
			stored[dev], filled[dev] = es, true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		for _, dev := range chunk {
			if !filled[dev] {
				legacy = append(legacy, dev)
			}
		}
	}
	for rest := legacy; len(rest) > 0; {
		chunk := rest[:min(len(rest), latestRowsPerStatement)]
		rest = rest[len(chunk):]
		args := make([]any, len(chunk))
		for i, dev := range chunk {
			args[i] = dev
		}
		in := valueRows(1, len(chunk))
		rows, err := d.query(ctx, tx, `SELECT device_id, point, value, status, at FROM device_values WHERE device_id IN `+in, args...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var dev string
			var e latestEntry
			var status int64
			if err := rows.Scan(&dev, &e.point, &e.value, &status, &e.at); err != nil {
				rows.Close()
				return nil, err
			}
			e.status = uint32(status)
			stored[dev] = append(stored[dev], e)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		if _, err := d.exec(ctx, tx, `DELETE FROM device_values WHERE device_id IN `+in, args...); err != nil {
			return nil, err
		}
	}
	for _, dev := range legacy {
		sortLatest(stored[dev])
	}
	return stored, nil
}

// latestRowsPerStatement bounds the devices of one statement on
// device_latest.
const latestRowsPerStatement = 200

// valueRows returns n rows of cols placeholders: "(?, ?), (?, ?)".
func valueRows(n, cols int) string {
	one := "(" + strings.Repeat("?, ", cols-1) + "?)"
	var b strings.Builder
	b.Grow(n * (len(one) + 2))
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(one)
	}
	return b.String()
}
