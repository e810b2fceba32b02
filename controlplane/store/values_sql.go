package store

import (
	"context"
	"database/sql"
	"fmt"
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
