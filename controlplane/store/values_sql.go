package store

import (
	"context"
	"database/sql"
	"fmt"
	"math"
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

func (d *db) LatestValues(ctx context.Context, deviceID string) ([]Sample, error) {
	rows, err := d.query(ctx, d.sql, `SELECT point, value, status, at, 0 FROM device_values WHERE device_id = ? ORDER BY point`, deviceID)
	if err != nil {
		return nil, fmt.Errorf("store.LatestValues: %w", err)
	}
	return collect(rows, scanSample)
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

// sampleRowsPerStatement bounds a multi-row INSERT (5 parameters a row
// stays well under SQLite's 32,766 and PostgreSQL's 65,535 parameters).
const sampleRowsPerStatement = 250

// blockRowsPerStatement bounds a multi-row INSERT of history blocks.
const blockRowsPerStatement = 100

func (d *db) StoreSampleBatches(ctx context.Context, batches []SampleBatch) error {
	type key struct{ device, point string }
	type row struct {
		device string
		s      Sample
	}
	var history []row
	latest := map[key]int{} // → index into history of the point's newest sample
	for _, b := range batches {
		for _, s := range b.Samples {
			history = append(history, row{b.DeviceID, s})
			k := key{b.DeviceID, s.Point}
			if j, ok := latest[k]; !ok || !s.At.Before(history[j].s.At) {
				latest[k] = len(history) - 1
			}
		}
	}
	if len(history) == 0 {
		return nil
	}
	// One row per point in the upsert (PostgreSQL refuses to update a row
	// twice in one statement), in key order so concurrent writers lock
	// rows in the same order.
	newest := make([]row, 0, len(latest))
	for _, j := range latest {
		newest = append(newest, history[j])
	}
	sort.Slice(newest, func(a, b int) bool {
		if newest[a].device != newest[b].device {
			return newest[a].device < newest[b].device
		}
		return newest[a].s.Point < newest[b].s.Point
	})
	blocks := historyBlocks(batches)
	return d.tx(ctx, func(tx *sql.Tx) error {
		for len(blocks) > 0 {
			n := min(len(blocks), blockRowsPerStatement)
			args := make([]any, 0, 6*n)
			for _, b := range blocks[:n] {
				args = append(args, b.device, b.bucket, b.part, b.tMax, int64(b.n), b.encode())
			}
			q := `INSERT INTO device_history_blocks (device_id, bucket, part, t_max, n, data) VALUES ` + valueRows(n, 6)
			if _, err := d.exec(ctx, tx, q, args...); err != nil {
				return fmt.Errorf("store.StoreSampleBatches: history: %w", err)
			}
			blocks = blocks[n:]
		}
		for len(newest) > 0 {
			n := min(len(newest), sampleRowsPerStatement)
			args := make([]any, 0, 5*n)
			for _, r := range newest[:n] {
				args = append(args, r.device, r.s.Point, r.s.Value, int64(r.s.Status), toMicros(r.s.At))
			}
			q := `INSERT INTO device_values (device_id, point, value, status, at) VALUES ` + valueRows(n, 5) + `
				ON CONFLICT (device_id, point) DO UPDATE SET value = excluded.value, status = excluded.status, at = excluded.at
				WHERE excluded.at >= device_values.at`
			if _, err := d.exec(ctx, tx, q, args...); err != nil {
				return fmt.Errorf("store.StoreSampleBatches: latest values: %w", err)
			}
			newest = newest[n:]
		}
		return nil
	})
}

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
