package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

const notificationCols = `id, tenant_id, asset_id, device_id, point, kind, level, from_level, value, threshold, at, created_at, case_id`

func scanNotification(s scanner) (Notification, error) {
	var n Notification
	var at, created int64
	err := s.Scan(&n.ID, &n.TenantID, &n.AssetID, &n.DeviceID, &n.Point, &n.Kind, &n.Level, &n.FromLevel, &n.Value, &n.Threshold, &at, &created, &n.CaseID)
	n.At, n.CreatedAt = fromMicros(at), fromMicros(created)
	return n, err
}

func (d *db) AddNotification(ctx context.Context, n Notification) (Notification, bool, error) {
	n.ID = newID(n.ID)
	n.CreatedAt = nowIfZero(n.CreatedAt)
	n.At = n.At.UTC().Truncate(time.Microsecond)
	res, err := d.exec(ctx, d.sql, `INSERT INTO notifications (`+notificationCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (device_id, point, level, at) DO NOTHING`,
		n.ID, n.TenantID, n.AssetID, n.DeviceID, n.Point, n.Kind, n.Level, n.FromLevel, n.Value, n.Threshold, toMicros(n.At), toMicros(n.CreatedAt), n.CaseID)
	if err != nil {
		return Notification{}, false, fmt.Errorf("store.AddNotification: %w", err)
	}
	if k, _ := res.RowsAffected(); k == 1 {
		return n, true, nil
	}
	row := d.row(ctx, d.sql, `SELECT `+notificationCols+` FROM notifications WHERE device_id = ? AND point = ? AND level = ? AND at = ?`, n.DeviceID, n.Point, n.Level, toMicros(n.At))
	old, err := scanNotification(row)
	if err != nil {
		return Notification{}, false, fmt.Errorf("store.AddNotification: %w", err)
	}
	return old, false, nil
}

func (d *db) ListNotifications(ctx context.Context, q NotificationQuery) ([]Notification, error) {
	if q.AssetIDs != nil && len(q.AssetIDs) == 0 {
		return nil, nil
	}
	if q.Limit <= 0 {
		q.Limit = 100
	}
	var where []string
	var args []any
	if q.TenantID != "" {
		where, args = append(where, "tenant_id = ?"), append(args, q.TenantID)
	}
	if q.DeviceID != "" {
		where, args = append(where, "device_id = ?"), append(args, q.DeviceID)
	}
	if q.AssetIDs != nil {
		where = append(where, "asset_id IN ("+strings.TrimSuffix(strings.Repeat("?, ", len(q.AssetIDs)), ", ")+")")
		for _, id := range q.AssetIDs {
			args = append(args, id)
		}
	}
	query := `SELECT ` + notificationCols + ` FROM notifications`
	if len(where) > 0 {
		query += ` WHERE ` + strings.Join(where, " AND ")
	}
	rows, err := d.query(ctx, d.sql, query+` ORDER BY at DESC, created_at DESC, id LIMIT ?`, append(args, q.Limit)...)
	if err != nil {
		return nil, fmt.Errorf("store.ListNotifications: %w", err)
	}
	return collect(rows, scanNotification)
}

func (d *db) SetNotificationCase(ctx context.Context, id, caseID string) error {
	res, err := d.exec(ctx, d.sql, `UPDATE notifications SET case_id = ? WHERE id = ?`, caseID, id)
	return requireRow("store.SetNotificationCase", id, res, err)
}

func (d *db) PruneNotifications(ctx context.Context, before time.Time, closedState string) (int64, error) {
	res, err := d.exec(ctx, d.sql, `DELETE FROM notifications WHERE at < ?
		AND (case_id = '' OR case_id NOT IN (SELECT id FROM cases WHERE state <> ?))`, toMicros(before), closedState)
	if err != nil {
		return 0, fmt.Errorf("store.PruneNotifications: %w", err)
	}
	return res.RowsAffected()
}

func (d *db) OpenAutoCase(ctx context.Context, assetID, point, closedState string) (string, error) {
	var id string
	err := d.row(ctx, d.sql, `SELECT c.id FROM notifications n JOIN cases c ON c.id = n.case_id
		WHERE n.asset_id = ? AND n.point = ? AND n.case_id <> '' AND c.state <> ? ORDER BY n.at DESC LIMIT 1`, assetID, point, closedState).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("store.OpenAutoCase: %w", err)
	}
	return id, nil
}
