package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Template delivery states (DeviceTemplate.State).
const (
	TemplatePending = "pending" // sent, no answer yet
	TemplateApplied = "applied" // the agent runs it
	TemplateError   = "error"   // the agent refused it (Error says why)
)

// DeviceTemplate is the OPC-UA template last sent to a device and the
// agent's answer.
type DeviceTemplate struct {
	DeviceID       string
	Version        uint64 // counts the different templates sent, from 1
	Hash           string
	ModelID        string
	SentAt         time.Time
	State          string
	Error          string
	AckedAt        time.Time
	AppliedVersion uint64 // last version acknowledged as applied (0: none)
	AppliedHash    string
}

// Templates is the persistence of template delivery.
type Templates interface {
	// GetDeviceTemplate returns a device's template state (ErrNotFound
	// when nothing was ever sent).
	GetDeviceTemplate(ctx context.Context, deviceID string) (DeviceTemplate, error)
	// RecordTemplateSent notes that the template with hash is being sent
	// and returns its version: the stored one when hash is the same as
	// last time, else the next one. The state becomes pending.
	RecordTemplateSent(ctx context.Context, deviceID, hash, modelID string, at time.Time) (DeviceTemplate, error)
	// RecordTemplateAck stores the agent's answer for version; an answer
	// for another version than the last one sent is ignored (false).
	RecordTemplateAck(ctx context.Context, deviceID string, version uint64, ok bool, errText string, at time.Time) (bool, error)
	// ListDevicesOfModel returns the IDs of devices whose customer machine
	// uses the model (or, when the machine names none, whose asset does).
	ListDevicesOfModel(ctx context.Context, modelID string) ([]string, error)
	// ListDevicesOfMachine returns the IDs of devices linked to the
	// customer machine.
	ListDevicesOfMachine(ctx context.Context, machineID string) ([]string, error)
}

const deviceTemplateCols = `device_id, version, hash, model_id, sent_at, state, error, acked_at, applied_version, applied_hash`

func scanDeviceTemplate(s scanner) (DeviceTemplate, error) {
	var t DeviceTemplate
	var sent, acked int64
	var version, applied int64
	err := s.Scan(&t.DeviceID, &version, &t.Hash, &t.ModelID, &sent, &t.State, &t.Error, &acked, &applied, &t.AppliedHash)
	t.Version, t.AppliedVersion = uint64(version), uint64(applied)
	t.SentAt = fromMicros(sent)
	if acked != 0 {
		t.AckedAt = fromMicros(acked)
	}
	return t, err
}

func (d *db) GetDeviceTemplate(ctx context.Context, deviceID string) (DeviceTemplate, error) {
	t, err := scanDeviceTemplate(d.row(ctx, d.sql, `SELECT `+deviceTemplateCols+` FROM device_templates WHERE device_id = ?`, deviceID))
	if err != nil {
		return DeviceTemplate{}, notFound("store.GetDeviceTemplate", deviceID, err)
	}
	return t, nil
}

func (d *db) RecordTemplateSent(ctx context.Context, deviceID, hash, modelID string, at time.Time) (DeviceTemplate, error) {
	var out DeviceTemplate
	err := d.tx(ctx, func(tx *sql.Tx) error {
		cur, err := scanDeviceTemplate(d.row(ctx, tx, `SELECT `+deviceTemplateCols+` FROM device_templates WHERE device_id = ? FOR UPDATE`, deviceID))
		switch {
		case errors.Is(err, sql.ErrNoRows):
			out = DeviceTemplate{DeviceID: deviceID, Version: 1, Hash: hash, ModelID: modelID, SentAt: at, State: TemplatePending}
			_, err = d.exec(ctx, tx, `INSERT INTO device_templates (device_id, version, hash, model_id, sent_at, state) VALUES (?, ?, ?, ?, ?, ?)`,
				deviceID, int64(out.Version), hash, modelID, toMicros(at), TemplatePending)
			return err
		case err != nil:
			return err
		}
		out = cur
		if cur.Hash != hash {
			out.Version, out.Hash, out.Error = cur.Version+1, hash, ""
		}
		out.ModelID, out.SentAt = modelID, at
		if out.Version != cur.Version || cur.State != TemplateApplied {
			out.State = TemplatePending
		}
		_, err = d.exec(ctx, tx, `UPDATE device_templates SET version = ?, hash = ?, model_id = ?, sent_at = ?, state = ?, error = ? WHERE device_id = ?`,
			int64(out.Version), out.Hash, modelID, toMicros(at), out.State, out.Error, deviceID)
		return err
	})
	if err != nil {
		return DeviceTemplate{}, fmt.Errorf("store.RecordTemplateSent: %w", err)
	}
	return out, nil
}

func (d *db) RecordTemplateAck(ctx context.Context, deviceID string, version uint64, ok bool, errText string, at time.Time) (bool, error) {
	var res sql.Result
	var err error
	if ok {
		res, err = d.exec(ctx, d.sql, `UPDATE device_templates SET state = ?, error = '', acked_at = ?, applied_version = version, applied_hash = hash WHERE device_id = ? AND version = ?`,
			TemplateApplied, toMicros(at), deviceID, int64(version))
	} else {
		res, err = d.exec(ctx, d.sql, `UPDATE device_templates SET state = ?, error = ?, acked_at = ? WHERE device_id = ? AND version = ?`,
			TemplateError, errText, toMicros(at), deviceID, int64(version))
	}
	if err != nil {
		return false, fmt.Errorf("store.RecordTemplateAck: %w", err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

func (d *db) ListDevicesOfModel(ctx context.Context, modelID string) ([]string, error) {
	rows, err := d.query(ctx, d.sql, `SELECT e.id FROM edge_devices e JOIN customer_machines cm ON cm.id = e.customer_machine_id
		LEFT JOIN assets a ON a.id = cm.asset_id
		WHERE cm.machine_model_id = ? OR (cm.machine_model_id = '' AND a.machine_model_id = ?) ORDER BY e.id`, modelID, modelID)
	if err != nil {
		return nil, fmt.Errorf("store.ListDevicesOfModel: %w", err)
	}
	return collect(rows, func(s scanner) (string, error) {
		var id string
		return id, s.Scan(&id)
	})
}

func (d *db) ListDevicesOfMachine(ctx context.Context, machineID string) ([]string, error) {
	rows, err := d.query(ctx, d.sql, `SELECT id FROM edge_devices WHERE customer_machine_id = ? ORDER BY id`, machineID)
	if err != nil {
		return nil, fmt.Errorf("store.ListDevicesOfMachine: %w", err)
	}
	return collect(rows, func(s scanner) (string, error) {
		var id string
		return id, s.Scan(&id)
	})
}
