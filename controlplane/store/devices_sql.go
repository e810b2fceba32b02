package store

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"
)

const deviceCols = `id, tenant_id, name, serial_number, model, agent_version, firmware_version, customer_machine_id, cert_serial, online, last_seen, created_at`

func scanDevice(s scanner) (EdgeDevice, error) {
	var d EdgeDevice
	var online int
	var seen, created int64
	err := s.Scan(&d.ID, &d.TenantID, &d.Name, &d.SerialNumber, &d.Model, &d.AgentVersion, &d.FirmwareVersion, &d.CustomerMachineID, &d.CertSerial, &online, &seen, &created)
	d.Online, d.LastSeen, d.CreatedAt = online != 0, fromMicros(seen), fromMicros(created)
	return d, err
}

func (d *db) CreateDevice(ctx context.Context, e EdgeDevice) (EdgeDevice, error) {
	e.ID, e.CreatedAt = newID(e.ID), nowIfZero(e.CreatedAt)
	online := 0
	if e.Online {
		online = 1
	}
	_, err := d.exec(ctx, d.sql, `INSERT INTO edge_devices (`+deviceCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		e.ID, e.TenantID, e.Name, e.SerialNumber, e.Model, e.AgentVersion, e.FirmwareVersion, e.CustomerMachineID, e.CertSerial, online, toMicros(e.LastSeen), toMicros(e.CreatedAt))
	if err != nil {
		return EdgeDevice{}, fmt.Errorf("store.CreateDevice: %w", err)
	}
	return e, nil
}

func (d *db) GetDevice(ctx context.Context, id string) (EdgeDevice, error) {
	e, err := scanDevice(d.row(ctx, d.sql, `SELECT `+deviceCols+` FROM edge_devices WHERE id = ?`, id))
	if err != nil {
		return EdgeDevice{}, notFound("store.GetDevice", id, err)
	}
	return e, nil
}

func (d *db) ListDevices(ctx context.Context, tenantID string) ([]EdgeDevice, error) {
	rows, err := d.query(ctx, d.sql, `SELECT `+deviceCols+` FROM edge_devices WHERE tenant_id = ? ORDER BY name, id`, tenantID)
	if err != nil {
		return nil, fmt.Errorf("store.ListDevices: %w", err)
	}
	return collect(rows, scanDevice)
}

func (d *db) ListDevicesOfAssets(ctx context.Context, assetIDs []string) ([]EdgeDevice, error) {
	if len(assetIDs) == 0 {
		return nil, nil
	}
	args := make([]any, len(assetIDs))
	for i, id := range assetIDs {
		args[i] = id
	}
	cols := "e." + strings.ReplaceAll(deviceCols, ", ", ", e.")
	rows, err := d.query(ctx, d.sql, `SELECT `+cols+` FROM edge_devices e JOIN customer_machines cm ON cm.id = e.customer_machine_id
		WHERE cm.asset_id IN (`+strings.TrimSuffix(strings.Repeat("?, ", len(args)), ", ")+`) ORDER BY e.name, e.id`, args...)
	if err != nil {
		return nil, fmt.Errorf("store.ListDevicesOfAssets: %w", err)
	}
	return collect(rows, scanDevice)
}

func (d *db) LinkDevice(ctx context.Context, id, customerMachineID string) error {
	res, err := d.exec(ctx, d.sql, `UPDATE edge_devices SET customer_machine_id = ? WHERE id = ?`, customerMachineID, id)
	return requireRow("store.LinkDevice", id, res, err)
}

func (d *db) CreateEnrollmentToken(ctx context.Context, t EnrollmentToken) error {
	_, err := d.exec(ctx, d.sql, `INSERT INTO enrollment_tokens (token_hash, device_id, tenant_id, created_by, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)`,
		hexHash(t.TokenHash), t.DeviceID, t.TenantID, t.CreatedBy, toMicros(nowIfZero(t.CreatedAt)), toMicros(t.ExpiresAt))
	if err != nil {
		return fmt.Errorf("store.CreateEnrollmentToken: %w", err)
	}
	return nil
}

func (d *db) UseEnrollmentToken(ctx context.Context, tokenHash []byte, now time.Time) (EnrollmentToken, error) {
	var t EnrollmentToken
	err := d.tx(ctx, func(tx *sql.Tx) error {
		var created, expires int64
		var used sql.NullInt64
		err := d.row(ctx, tx, `SELECT device_id, tenant_id, created_by, created_at, expires_at, used_at FROM enrollment_tokens WHERE token_hash = ? FOR UPDATE`,
			hexHash(tokenHash)).Scan(&t.DeviceID, &t.TenantID, &t.CreatedBy, &created, &expires, &used)
		if err != nil {
			return notFound("enrollment token", "(token)", err)
		}
		t.TokenHash, t.CreatedAt, t.ExpiresAt = tokenHash, fromMicros(created), fromMicros(expires)
		if used.Valid {
			return fmt.Errorf("enrollment token: %w", ErrUsed)
		}
		if !now.Before(t.ExpiresAt) {
			return fmt.Errorf("enrollment token: %w", ErrExpired)
		}
		res, err := d.exec(ctx, tx, `UPDATE enrollment_tokens SET used_at = ? WHERE token_hash = ? AND used_at IS NULL`, toMicros(now), hexHash(tokenHash))
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("enrollment token: %w", ErrUsed)
		}
		return nil
	})
	if err != nil {
		return EnrollmentToken{}, fmt.Errorf("store.UseEnrollmentToken: %w", err)
	}
	return t, nil
}

func (d *db) SetDeviceOnline(ctx context.Context, id string, online bool, at time.Time) error {
	o := 0
	if online {
		o = 1
	}
	res, err := d.exec(ctx, d.sql, `UPDATE edge_devices SET online = ?, last_seen = ? WHERE id = ?`, o, toMicros(nowIfZero(at)), id)
	return requireRow("store.SetDeviceOnline", id, res, err)
}

func (d *db) SetDevicesOnline(ctx context.Context, states []DeviceOnline) (int, error) {
	if len(states) == 0 {
		return 0, nil
	}
	unknown := 0
	err := d.tx(ctx, func(tx *sql.Tx) error {
		unknown = 0
		for _, s := range states {
			o := 0
			if s.Online {
				o = 1
			}
			res, err := d.exec(ctx, tx, `UPDATE edge_devices SET online = ?, last_seen = ? WHERE id = ?`, o, toMicros(nowIfZero(s.At)), s.ID)
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n == 0 {
				unknown++
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("store.SetDevicesOnline: %w", err)
	}
	return unknown, nil
}

func (d *db) SetDeviceCert(ctx context.Context, id, certSerial, agentVersion string) error {
	err := d.tx(ctx, func(tx *sql.Tx) error {
		var old string
		if err := d.row(ctx, tx, `SELECT cert_serial FROM edge_devices WHERE id = ? FOR UPDATE`, id).Scan(&old); err != nil {
			return notFound("device", id, err)
		}
		if _, err := d.exec(ctx, tx, `UPDATE edge_devices SET cert_serial = ?, agent_version = ? WHERE id = ?`, certSerial, agentVersion, id); err != nil {
			return err
		}
		if old == "" || old == certSerial {
			return nil
		}
		_, err := d.exec(ctx, tx, `INSERT INTO revoked_certs (serial, device_id, revoked_at) VALUES (?, ?, ?) ON CONFLICT (serial) DO NOTHING`,
			old, id, toMicros(time.Now()))
		return err
	})
	if err != nil {
		return fmt.Errorf("store.SetDeviceCert: %w", err)
	}
	return nil
}

func (d *db) ListDeviceCerts(ctx context.Context) (map[string]string, error) {
	rows, err := d.query(ctx, d.sql, `SELECT id, cert_serial FROM edge_devices WHERE cert_serial <> ''`)
	if err != nil {
		return nil, fmt.Errorf("store.ListDeviceCerts: %w", err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var id, serial string
		if err := rows.Scan(&id, &serial); err != nil {
			return nil, fmt.Errorf("store.ListDeviceCerts: %w", err)
		}
		out[id] = serial
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store.ListDeviceCerts: %w", err)
	}
	return out, nil
}

func (d *db) ListRevokedCerts(ctx context.Context) ([]RevokedCert, error) {
	rows, err := d.query(ctx, d.sql, `SELECT serial, device_id, revoked_at FROM revoked_certs ORDER BY revoked_at, serial`)
	if err != nil {
		return nil, fmt.Errorf("store.ListRevokedCerts: %w", err)
	}
	return collect(rows, func(s scanner) (RevokedCert, error) {
		var r RevokedCert
		var at int64
		err := s.Scan(&r.Serial, &r.DeviceID, &at)
		r.RevokedAt = fromMicros(at)
		return r, err
	})
}
