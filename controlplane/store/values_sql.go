package store

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
	"strings"
	"time"
)

func (d *db) StoreSamples(ctx context.Context, deviceID string, samples []Sample) error {
	return d.tx(ctx, func(tx *sql.Tx) error {
		for _, s := range samples {
			at := toMicros(s.At)
			if _, err := d.exec(ctx, tx, `INSERT INTO device_value_history (device_id, point, value, status, at, batch_seq) VALUES (?, ?, ?, ?, ?, ?)`,
				deviceID, s.Point, s.Value, int64(s.Status), at, int64(s.BatchSeq)); err != nil {
				return fmt.Errorf("store.StoreSamples: %w", err)
			}
			if _, err := d.exec(ctx, tx, `INSERT INTO device_values (device_id, point, value, status, at) VALUES (?, ?, ?, ?, ?)
				ON CONFLICT (device_id, point) DO UPDATE SET value = excluded.value, status = excluded.status, at = excluded.at
				WHERE excluded.at >= device_values.at`, deviceID, s.Point, s.Value, int64(s.Status), at); err != nil {
				return fmt.Errorf("store.StoreSamples: %w", err)
			}
		}
		return nil
	})
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

func (d *db) History(ctx context.Context, deviceID, point string, from, to time.Time, limit int) ([]Sample, error) {
	if limit <= 0 {
		limit = 1000
	}
	rows, err := d.query(ctx, d.sql, `SELECT point, value, status, at, batch_seq FROM device_value_history
		WHERE device_id = ? AND point = ? AND at >= ? AND at < ? ORDER BY at, batch_seq LIMIT ?`, deviceID, point, toMicros(from), toMicros(to), limit)
	if err != nil {
		return nil, fmt.Errorf("store.History: %w", err)
	}
	return collect(rows, scanSample)
}

func (d *db) PruneHistory(ctx context.Context, before time.Time) (int64, error) {
	res, err := d.exec(ctx, d.sql, `DELETE FROM device_value_history WHERE at < ?`, toMicros(before))
	if err != nil {
		return 0, fmt.Errorf("store.PruneHistory: %w", err)
	}
	return res.RowsAffected()
}

// sampleRowsPerStatement bounds a multi-row INSERT (6 parameters a row
// stays well under SQLite's 32,766 and PostgreSQL's 65,535 parameters).
const sampleRowsPerStatement = 250

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
	return d.tx(ctx, func(tx *sql.Tx) error {
		for len(history) > 0 {
			n := min(len(history), sampleRowsPerStatement)
			args := make([]any, 0, 6*n)
			for _, r := range history[:n] {
				args = append(args, r.device, r.s.Point, r.s.Value, int64(r.s.Status), toMicros(r.s.At), int64(r.s.BatchSeq))
			}
			q := `INSERT INTO device_value_history (device_id, point, value, status, at, batch_seq) VALUES ` + valueRows(n, 6)
			if _, err := d.exec(ctx, tx, q, args...); err != nil {
				return fmt.Errorf("store.StoreSampleBatches: history: %w", err)
			}
			history = history[n:]
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
