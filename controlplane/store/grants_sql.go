package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

const grantCols = `id, tenant_id, case_id, asset_id, device_id, connection_types, activated_by, activated_at, expires_at, deactivated_at, deactivated_by`

func scanGrant(s scanner) (Grant, error) {
	var g Grant
	var types string
	var act, exp, deact int64
	if err := s.Scan(&g.ID, &g.TenantID, &g.CaseID, &g.AssetID, &g.DeviceID, &types, &g.ActivatedBy, &act, &exp, &deact, &g.DeactivatedBy); err != nil {
		return Grant{}, err
	}
	if err := json.Unmarshal([]byte(types), &g.ConnectionTypes); err != nil {
		return Grant{}, fmt.Errorf("grant %s types: %w", g.ID, err)
	}
	g.ActivatedAt, g.ExpiresAt, g.DeactivatedAt = fromMicros(act), fromMicros(exp), fromMicros(deact)
	return g, nil
}

func (d *db) LatestGrant(ctx context.Context, caseID string) (Grant, error) {
	g, err := scanGrant(d.row(ctx, d.sql, `SELECT `+grantCols+` FROM grants WHERE case_id = ? ORDER BY activated_at DESC, id DESC LIMIT 1`, caseID))
	if err != nil {
		return Grant{}, notFound("store.LatestGrant", caseID, err)
	}
	return g, nil
}

func (d *db) ListActiveGrants(ctx context.Context, now time.Time) ([]Grant, error) {
	rows, err := d.query(ctx, d.sql, `SELECT `+grantCols+` FROM grants WHERE deactivated_at = 0 AND expires_at > ? ORDER BY activated_at, id`, toMicros(now))
	if err != nil {
		return nil, fmt.Errorf("store.ListActiveGrants: %w", err)
	}
	return collect(rows, scanGrant)
}

func (d *db) CreateGrant(ctx context.Context, g Grant) (Grant, error) {
	g.ID, g.ActivatedAt = newID(g.ID), nowIfZero(g.ActivatedAt)
	g.ExpiresAt = g.ExpiresAt.UTC().Truncate(time.Microsecond)
	if g.ConnectionTypes == nil {
		g.ConnectionTypes = []string{}
	}
	_, err := d.exec(ctx, d.sql, `INSERT INTO grants (`+grantCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, '')`,
		g.ID, g.TenantID, g.CaseID, g.AssetID, g.DeviceID, mustJSON(g.ConnectionTypes), g.ActivatedBy, toMicros(g.ActivatedAt), toMicros(g.ExpiresAt))
	if err != nil {
		return Grant{}, fmt.Errorf("store.CreateGrant: %w", err)
	}
	return g, nil
}

func (d *db) ExtendGrant(ctx context.Context, id string, expires time.Time) error {
	res, err := d.exec(ctx, d.sql, `UPDATE grants SET expires_at = ? WHERE id = ? AND deactivated_at = 0`, toMicros(expires), id)
	return requireRow("store.ExtendGrant", id, res, err)
}

func (d *db) EndGrant(ctx context.Context, id, by string, at time.Time) error {
	res, err := d.exec(ctx, d.sql, `UPDATE grants SET deactivated_at = ?, deactivated_by = ? WHERE id = ? AND deactivated_at = 0`, toMicros(nowIfZero(at)), by, id)
	return requireRow("store.EndGrant", id, res, err)
}

const requestCols = `id, case_id, requested_by, requester_tenant_id, reason, duration_minutes, state, decided_by, created_at`

func scanRequest(s scanner) (AccessRequest, error) {
	var r AccessRequest
	var created int64
	err := s.Scan(&r.ID, &r.CaseID, &r.RequestedBy, &r.RequesterTenantID, &r.Reason, &r.DurationMinutes, &r.State, &r.DecidedBy, &created)
	r.CreatedAt = fromMicros(created)
	return r, err
}

func (d *db) CreateAccessRequest(ctx context.Context, r AccessRequest) (AccessRequest, error) {
	r.ID, r.CreatedAt = newID(r.ID), nowIfZero(r.CreatedAt)
	if r.State == "" {
		r.State = RequestPending
	}
	_, err := d.exec(ctx, d.sql, `INSERT INTO access_requests (`+requestCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		r.ID, r.CaseID, r.RequestedBy, r.RequesterTenantID, r.Reason, r.DurationMinutes, r.State, r.DecidedBy, toMicros(r.CreatedAt))
	if err != nil {
		return AccessRequest{}, fmt.Errorf("store.CreateAccessRequest: %w", err)
	}
	return r, nil
}

func (d *db) GetAccessRequest(ctx context.Context, id string) (AccessRequest, error) {
	r, err := scanRequest(d.row(ctx, d.sql, `SELECT `+requestCols+` FROM access_requests WHERE id = ?`, id))
	if err != nil {
		return AccessRequest{}, notFound("store.GetAccessRequest", id, err)
	}
	return r, nil
}

func (d *db) ListAccessRequests(ctx context.Context, caseID string) ([]AccessRequest, error) {
	rows, err := d.query(ctx, d.sql, `SELECT `+requestCols+` FROM access_requests WHERE case_id = ? ORDER BY created_at, id`, caseID)
	if err != nil {
		return nil, fmt.Errorf("store.ListAccessRequests: %w", err)
	}
	return collect(rows, scanRequest)
}

func (d *db) DecideAccessRequest(ctx context.Context, id, state, by string) error {
	res, err := d.exec(ctx, d.sql, `UPDATE access_requests SET state = ?, decided_by = ? WHERE id = ? AND state = ?`, state, by, id, RequestPending)
	if err != nil {
		return fmt.Errorf("store.DecideAccessRequest: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return fmt.Errorf("store.DecideAccessRequest %s: %w", id, ErrUsed)
	}
	return nil
}

func (d *db) DeviceForMachine(ctx context.Context, customerMachineID string) (EdgeDevice, error) {
	e, err := scanDevice(d.row(ctx, d.sql, `SELECT `+deviceCols+` FROM edge_devices WHERE customer_machine_id = ? ORDER BY created_at LIMIT 1`, customerMachineID))
	if err != nil {
		return EdgeDevice{}, notFound("store.DeviceForMachine", customerMachineID, err)
	}
	return e, nil
}
