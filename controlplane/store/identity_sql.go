package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/gantry-iot/gantry/controlplane/authz"
)

const tenantCols = `id, name, kind, tenant_roles, company_info, logo_url, primary_color, max_grant_seconds, case_statuses, created_at`

type scanner interface{ Scan(dest ...any) error }

func scanTenant(s scanner) (Tenant, error) {
	var t Tenant
	var roles, statuses string
	var maxGrant, created int64
	if err := s.Scan(&t.ID, &t.Name, &t.Kind, &roles, &t.CompanyInfo, &t.LogoURL, &t.PrimaryColor, &maxGrant, &statuses, &created); err != nil {
		return Tenant{}, err
	}
	if err := json.Unmarshal([]byte(statuses), &t.CaseStatuses); err != nil {
		return Tenant{}, fmt.Errorf("tenant %s case statuses: %w", t.ID, err)
	}
	if err := json.Unmarshal([]byte(roles), &t.TenantRoles); err != nil {
		return Tenant{}, fmt.Errorf("tenant %s roles: %w", t.ID, err)
	}
	t.MaxGrantDuration = time.Duration(maxGrant) * time.Second
	t.CreatedAt = fromMicros(created)
	return t, nil
}

func (d *db) insertTenant(ctx context.Context, q querier, t Tenant) (Tenant, error) {
	t.ID = newID(t.ID)
	t.CreatedAt = nowIfZero(t.CreatedAt)
	if t.TenantRoles == nil {
		t.TenantRoles = []authz.TenantRole{}
	}
	if t.CaseStatuses == nil {
		t.CaseStatuses = []string{}
	}
	_, err := d.exec(ctx, q, `INSERT INTO tenants (`+tenantCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		t.ID, t.Name, string(t.Kind), mustJSON(t.TenantRoles), t.CompanyInfo, t.LogoURL, t.PrimaryColor, int64(t.MaxGrantDuration/time.Second), mustJSON(t.CaseStatuses), toMicros(t.CreatedAt))
	if err != nil {
		return Tenant{}, fmt.Errorf("store.CreateTenant: %w", err)
	}
	return t, nil
}

func (d *db) CreateTenant(ctx context.Context, t Tenant) (Tenant, error) {
	return d.insertTenant(ctx, d.sql, t)
}

func (d *db) CreateTenantWithAdmin(ctx context.Context, t Tenant, admin User) (Tenant, User, error) {
	err := d.tx(ctx, func(tx *sql.Tx) error {
		var err error
		if t, err = d.insertTenant(ctx, tx, t); err != nil {
			return err
		}
		admin.TenantID = t.ID
		admin.Status = UserActive
		admin, err = d.insertUser(ctx, tx, admin, []RoleGrant{{Role: authz.TenantAdmin, Scope: authz.Scope{Kind: authz.ScopeTenant, ID: t.ID}}}, "")
		return err
	})
	if err != nil {
		return Tenant{}, User{}, fmt.Errorf("store.CreateTenantWithAdmin: %w", err)
	}
	return t, admin, nil
}

func (d *db) GetTenant(ctx context.Context, id string) (Tenant, error) {
	t, err := scanTenant(d.row(ctx, d.sql, `SELECT `+tenantCols+` FROM tenants WHERE id = ?`, id))
	if err != nil {
		return Tenant{}, notFound("store.GetTenant", id, err)
	}
	return t, nil
}

func (d *db) ListTenants(ctx context.Context) ([]Tenant, error) {
	rows, err := d.query(ctx, d.sql, `SELECT `+tenantCols+` FROM tenants ORDER BY created_at, id`)
	if err != nil {
		return nil, fmt.Errorf("store.ListTenants: %w", err)
	}
	return collect(rows, scanTenant)
}

func (d *db) UpdateTenant(ctx context.Context, t Tenant) error {
	if t.TenantRoles == nil {
		t.TenantRoles = []authz.TenantRole{}
	}
	if t.CaseStatuses == nil {
		t.CaseStatuses = []string{}
	}
	res, err := d.exec(ctx, d.sql, `UPDATE tenants SET name = ?, tenant_roles = ?, company_info = ?, logo_url = ?, primary_color = ?, max_grant_seconds = ?, case_statuses = ? WHERE id = ?`,
		t.Name, mustJSON(t.TenantRoles), t.CompanyInfo, t.LogoURL, t.PrimaryColor, int64(t.MaxGrantDuration/time.Second), mustJSON(t.CaseStatuses), t.ID)
	return requireRow("store.UpdateTenant", t.ID, res, err)
}

// collect scans all rows with scan.
func collect[T any](rows *sql.Rows, scan func(scanner) (T, error)) ([]T, error) {
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// ---- users ----

const userCols = `id, tenant_id, email, display_name, password_hash, status, created_at`

func scanUser(s scanner) (User, error) {
	var u User
	var created int64
	if err := s.Scan(&u.ID, &u.TenantID, &u.Email, &u.DisplayName, &u.PasswordHash, &u.Status, &created); err != nil {
		return User{}, err
	}
	u.CreatedAt = fromMicros(created)
	return u, nil
}

func (d *db) insertUser(ctx context.Context, q querier, u User, roles []RoleGrant, createdBy string) (User, error) {
	u.ID = newID(u.ID)
	u.Email = strings.ToLower(u.Email)
	u.CreatedAt = nowIfZero(u.CreatedAt)
	if u.Status == "" {
		u.Status = UserActive
	}
	if _, err := d.exec(ctx, q, `INSERT INTO users (`+userCols+`) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		u.ID, u.TenantID, u.Email, u.DisplayName, u.PasswordHash, string(u.Status), toMicros(u.CreatedAt)); err != nil {
		return User{}, fmt.Errorf("insert user %s: %w", u.Email, err)
	}
	for _, g := range roles {
		if _, err := d.insertAssignment(ctx, q, Assignment{TenantID: u.TenantID, UserID: u.ID, Role: g.Role, Scope: g.Scope, CreatedBy: createdBy, CreatedAt: u.CreatedAt}); err != nil {
			return User{}, err
		}
	}
	return u, nil
}

func (d *db) CreateUser(ctx context.Context, u User, roles []RoleGrant, createdBy string) (User, error) {
	err := d.tx(ctx, func(tx *sql.Tx) error {
		var err error
		u, err = d.insertUser(ctx, tx, u, roles, createdBy)
		return err
	})
	if err != nil {
		return User{}, fmt.Errorf("store.CreateUser: %w", err)
	}
	return u, nil
}

func (d *db) GetUser(ctx context.Context, id string) (User, error) {
	u, err := scanUser(d.row(ctx, d.sql, `SELECT `+userCols+` FROM users WHERE id = ?`, id))
	if err != nil {
		return User{}, notFound("store.GetUser", id, err)
	}
	return u, nil
}

func (d *db) GetUserByEmail(ctx context.Context, email string) (User, error) {
	u, err := scanUser(d.row(ctx, d.sql, `SELECT `+userCols+` FROM users WHERE email = ?`, strings.ToLower(email)))
	if err != nil {
		return User{}, notFound("store.GetUserByEmail", "(e-mail)", err)
	}
	return u, nil
}

func (d *db) ListUsers(ctx context.Context, tenantID string) ([]User, error) {
	rows, err := d.query(ctx, d.sql, `SELECT `+userCols+` FROM users WHERE tenant_id = ? ORDER BY email`, tenantID)
	if err != nil {
		return nil, fmt.Errorf("store.ListUsers: %w", err)
	}
	return collect(rows, scanUser)
}

func (d *db) SetUserStatus(ctx context.Context, id string, status UserStatus) error {
	res, err := d.exec(ctx, d.sql, `UPDATE users SET status = ? WHERE id = ?`, string(status), id)
	return requireRow("store.SetUserStatus", id, res, err)
}

func (d *db) SetPassword(ctx context.Context, id, hash string) error {
	res, err := d.exec(ctx, d.sql, `UPDATE users SET password_hash = ? WHERE id = ?`, hash, id)
	return requireRow("store.SetPassword", id, res, err)
}

// otherAdmins counts active Tenant Admins of tenantID other than userID.
func (d *db) otherAdmins(ctx context.Context, tx *sql.Tx, tenantID, userID string) (int, error) {
	var n int
	err := d.row(ctx, tx, `SELECT COUNT(DISTINCT a.user_id) FROM assignments a JOIN users u ON u.id = a.user_id
		WHERE a.tenant_id = ? AND a.role = ? AND u.status = ? AND a.user_id <> ?`, tenantID, string(authz.TenantAdmin), string(UserActive), userID).Scan(&n)
	return n, err
}

func (d *db) isAdmin(ctx context.Context, tx *sql.Tx, userID string) (bool, error) {
	var n int
	err := d.row(ctx, tx, `SELECT COUNT(*) FROM assignments WHERE user_id = ? AND role = ?`, userID, string(authz.TenantAdmin)).Scan(&n)
	return n > 0, err
}

func (d *db) DeleteUser(ctx context.Context, actorID, id string) error {
	if actorID == id {
		return fmt.Errorf("store.DeleteUser %s: %w", id, ErrSelf)
	}
	return d.tx(ctx, func(tx *sql.Tx) error {
		u, err := scanUser(d.row(ctx, tx, `SELECT `+userCols+` FROM users WHERE id = ?`, id))
		if err != nil {
			return notFound("store.DeleteUser", id, err)
		}
		if err := d.lockTenant(ctx, tx, u.TenantID); err != nil {
			return err
		}
		admin, err := d.isAdmin(ctx, tx, id)
		if err != nil {
			return err
		}
		if admin {
			n, err := d.otherAdmins(ctx, tx, u.TenantID, id)
			if err != nil {
				return err
			}
			if n == 0 {
				return fmt.Errorf("store.DeleteUser %s: %w", id, ErrLastAdmin)
			}
		}
		_, err = d.exec(ctx, tx, `DELETE FROM users WHERE id = ?`, id)
		return err
	})
}

// ---- assignments ----

const assignmentCols = `id, tenant_id, user_id, role, scope_kind, scope_id, created_by, created_at`

func scanAssignment(s scanner) (Assignment, error) {
	var a Assignment
	var created int64
	if err := s.Scan(&a.ID, &a.TenantID, &a.UserID, &a.Role, &a.Scope.Kind, &a.Scope.ID, &a.CreatedBy, &created); err != nil {
		return Assignment{}, err
	}
	a.CreatedAt = fromMicros(created)
	return a, nil
}

func (d *db) insertAssignment(ctx context.Context, q querier, a Assignment) (Assignment, error) {
	a.ID = newID(a.ID)
	a.CreatedAt = nowIfZero(a.CreatedAt)
	_, err := d.exec(ctx, q, `INSERT INTO assignments (`+assignmentCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		a.ID, a.TenantID, a.UserID, string(a.Role), string(a.Scope.Kind), a.Scope.ID, a.CreatedBy, toMicros(a.CreatedAt))
	if err != nil {
		return Assignment{}, fmt.Errorf("insert assignment: %w", err)
	}
	return a, nil
}

func (d *db) AddAssignment(ctx context.Context, a Assignment) (Assignment, error) {
	var out Assignment
	err := d.tx(ctx, func(tx *sql.Tx) error {
		var tenant string
		if err := d.row(ctx, tx, `SELECT tenant_id FROM users WHERE id = ?`, a.UserID).Scan(&tenant); err != nil {
			return notFound("user", a.UserID, err)
		}
		if tenant != a.TenantID {
			return fmt.Errorf("user %s is not in tenant %s: %w", a.UserID, a.TenantID, ErrNotFound)
		}
		var err error
		out, err = d.insertAssignment(ctx, tx, a)
		return err
	})
	if err != nil {
		return Assignment{}, fmt.Errorf("store.AddAssignment: %w", err)
	}
	return out, nil
}

func (d *db) RemoveAssignment(ctx context.Context, actorID, id string) error {
	return d.tx(ctx, func(tx *sql.Tx) error {
		a, err := scanAssignment(d.row(ctx, tx, `SELECT `+assignmentCols+` FROM assignments WHERE id = ?`, id))
		if err != nil {
			return notFound("store.RemoveAssignment", id, err)
		}
		if a.Role == authz.TenantAdmin {
			if a.UserID == actorID {
				return fmt.Errorf("store.RemoveAssignment %s: %w", id, ErrSelf)
			}
			if err := d.lockTenant(ctx, tx, a.TenantID); err != nil {
				return err
			}
			// Re-read under the lock: a concurrent change may have removed it.
			if err := d.row(ctx, tx, `SELECT id FROM assignments WHERE id = ?`, id).Scan(new(string)); err != nil {
				return notFound("store.RemoveAssignment", id, err)
			}
			// The actor must still be an admin after concurrent changes.
			if actorID != "" {
				ok, err := d.isAdmin(ctx, tx, actorID)
				if err != nil {
					return err
				}
				if !ok {
					return fmt.Errorf("store.RemoveAssignment %s: %w", id, ErrActorChanged)
				}
			}
			n, err := d.otherAdmins(ctx, tx, a.TenantID, a.UserID)
			if err != nil {
				return err
			}
			if n == 0 {
				return fmt.Errorf("store.RemoveAssignment %s: %w", id, ErrLastAdmin)
			}
		}
		_, err = d.exec(ctx, tx, `DELETE FROM assignments WHERE id = ?`, id)
		return err
	})
}

func (d *db) GetAssignment(ctx context.Context, id string) (Assignment, error) {
	a, err := scanAssignment(d.row(ctx, d.sql, `SELECT `+assignmentCols+` FROM assignments WHERE id = ?`, id))
	if err != nil {
		return Assignment{}, notFound("store.GetAssignment", id, err)
	}
	return a, nil
}

func (d *db) ListAssignments(ctx context.Context, tenantID, userID string) ([]Assignment, error) {
	var rows *sql.Rows
	var err error
	if userID == "" {
		rows, err = d.query(ctx, d.sql, `SELECT `+assignmentCols+` FROM assignments WHERE tenant_id = ? ORDER BY user_id, created_at, id`, tenantID)
	} else {
		rows, err = d.query(ctx, d.sql, `SELECT `+assignmentCols+` FROM assignments WHERE tenant_id = ? AND user_id = ? ORDER BY created_at, id`, tenantID, userID)
	}
	if err != nil {
		return nil, fmt.Errorf("store.ListAssignments: %w", err)
	}
	return collect(rows, scanAssignment)
}

// ---- custom roles ----

func scanCustomRole(s scanner) (CustomRole, error) {
	var r CustomRole
	var feats string
	var manage int
	var created int64
	if err := s.Scan(&r.ID, &r.TenantID, &r.Name, &r.Rank, &feats, &manage, &created); err != nil {
		return CustomRole{}, err
	}
	raw := map[authz.Feature]string{}
	if err := json.Unmarshal([]byte(feats), &raw); err != nil {
		return CustomRole{}, fmt.Errorf("custom role %s features: %w", r.ID, err)
	}
	r.Features = map[authz.Feature]authz.Level{}
	for f, l := range raw {
		lvl, err := authz.ParseLevel(l)
		if err != nil {
			return CustomRole{}, fmt.Errorf("custom role %s: %w", r.ID, err)
		}
		r.Features[f] = lvl
	}
	r.ManageUsers = manage != 0
	r.CreatedAt = fromMicros(created)
	return r, nil
}

func (d *db) CreateCustomRole(ctx context.Context, r CustomRole) (CustomRole, error) {
	if r.ID == "" {
		return CustomRole{}, errors.New("store.CreateCustomRole: the caller chooses the ID (custom:<uuid>)")
	}
	r.CreatedAt = nowIfZero(r.CreatedAt)
	raw := map[authz.Feature]string{}
	for f, l := range r.Features {
		raw[f] = l.String()
	}
	manage := 0
	if r.ManageUsers {
		manage = 1
	}
	_, err := d.exec(ctx, d.sql, `INSERT INTO custom_roles (id, tenant_id, name, rank, features, manage_users, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		string(r.ID), r.TenantID, r.Name, r.Rank, mustJSON(raw), manage, toMicros(r.CreatedAt))
	if err != nil {
		return CustomRole{}, fmt.Errorf("store.CreateCustomRole: %w", err)
	}
	return r, nil
}

func (d *db) ListCustomRoles(ctx context.Context, tenantID string) ([]CustomRole, error) {
	rows, err := d.query(ctx, d.sql, `SELECT id, tenant_id, name, rank, features, manage_users, created_at FROM custom_roles WHERE tenant_id = ? ORDER BY name`, tenantID)
	if err != nil {
		return nil, fmt.Errorf("store.ListCustomRoles: %w", err)
	}
	return collect(rows, scanCustomRole)
}

func (d *db) DeleteCustomRole(ctx context.Context, tenantID string, id authz.RoleID) error {
	return d.tx(ctx, func(tx *sql.Tx) error {
		var n int
		if err := d.row(ctx, tx, `SELECT COUNT(*) FROM assignments WHERE tenant_id = ? AND role = ?`, tenantID, string(id)).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("store.DeleteCustomRole %s: %d assignments: %w", id, n, ErrInUse)
		}
		res, err := d.exec(ctx, tx, `DELETE FROM custom_roles WHERE tenant_id = ? AND id = ?`, tenantID, string(id))
		return requireRow("store.DeleteCustomRole", string(id), res, err)
	})
}

// ---- sessions ----

func (d *db) CreateSession(ctx context.Context, s Session) error {
	_, err := d.exec(ctx, d.sql, `INSERT INTO sessions (token_hash, user_id, tenant_id, created_at, expires_at) VALUES (?, ?, ?, ?, ?)`,
		hexHash(s.TokenHash), s.UserID, s.TenantID, toMicros(nowIfZero(s.CreatedAt)), toMicros(s.ExpiresAt))
	if err != nil {
		return fmt.Errorf("store.CreateSession: %w", err)
	}
	return nil
}

func (d *db) GetSession(ctx context.Context, tokenHash []byte, now time.Time) (Session, error) {
	var s Session
	var created, expires int64
	err := d.row(ctx, d.sql, `SELECT user_id, tenant_id, created_at, expires_at FROM sessions WHERE token_hash = ? AND expires_at > ?`,
		hexHash(tokenHash), toMicros(now)).Scan(&s.UserID, &s.TenantID, &created, &expires)
	if err != nil {
		return Session{}, notFound("store.GetSession", "(token)", err)
	}
	s.TokenHash, s.CreatedAt, s.ExpiresAt = tokenHash, fromMicros(created), fromMicros(expires)
	return s, nil
}

func (d *db) DeleteSession(ctx context.Context, tokenHash []byte) error {
	_, err := d.exec(ctx, d.sql, `DELETE FROM sessions WHERE token_hash = ?`, hexHash(tokenHash))
	if err != nil {
		return fmt.Errorf("store.DeleteSession: %w", err)
	}
	return nil
}

// ---- invitations ----

const invitationCols = `id, tenant_id, email, roles, token_hash, created_by, created_at, expires_at, used_at`

func scanInvitation(s scanner) (Invitation, error) {
	var inv Invitation
	var roles, hash string
	var created, expires int64
	var used sql.NullInt64
	if err := s.Scan(&inv.ID, &inv.TenantID, &inv.Email, &roles, &hash, &inv.CreatedBy, &created, &expires, &used); err != nil {
		return Invitation{}, err
	}
	if err := json.Unmarshal([]byte(roles), &inv.Roles); err != nil {
		return Invitation{}, fmt.Errorf("invitation %s roles: %w", inv.ID, err)
	}
	inv.CreatedAt, inv.ExpiresAt = fromMicros(created), fromMicros(expires)
	if used.Valid {
		t := fromMicros(used.Int64)
		inv.UsedAt = &t
	}
	return inv, nil
}

func (d *db) CreateInvitation(ctx context.Context, inv Invitation) (Invitation, error) {
	inv.ID = newID(inv.ID)
	inv.CreatedAt = nowIfZero(inv.CreatedAt)
	if inv.Roles == nil {
		inv.Roles = []RoleGrant{}
	}
	_, err := d.exec(ctx, d.sql, `INSERT INTO invitations (`+invitationCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)`,
		inv.ID, inv.TenantID, strings.ToLower(inv.Email), mustJSON(inv.Roles), hexHash(inv.TokenHash), inv.CreatedBy, toMicros(inv.CreatedAt), toMicros(inv.ExpiresAt))
	if err != nil {
		return Invitation{}, fmt.Errorf("store.CreateInvitation: %w", err)
	}
	return inv, nil
}

func (d *db) AcceptInvitation(ctx context.Context, tokenHash []byte, u User, now time.Time) (User, error) {
	err := d.tx(ctx, func(tx *sql.Tx) error {
		inv, err := scanInvitation(d.row(ctx, tx, `SELECT `+invitationCols+` FROM invitations WHERE token_hash = ? FOR UPDATE`, hexHash(tokenHash)))
		if err != nil {
			return notFound("invitation", "(token)", err)
		}
		if inv.UsedAt != nil {
			return fmt.Errorf("invitation %s: %w", inv.ID, ErrUsed)
		}
		if !now.Before(inv.ExpiresAt) {
			return fmt.Errorf("invitation %s: %w", inv.ID, ErrExpired)
		}
		res, err := d.exec(ctx, tx, `UPDATE invitations SET used_at = ? WHERE id = ? AND used_at IS NULL`, toMicros(now), inv.ID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("invitation %s: %w", inv.ID, ErrUsed)
		}
		u.TenantID, u.Email, u.Status = inv.TenantID, inv.Email, UserActive
		u, err = d.insertUser(ctx, tx, u, inv.Roles, inv.CreatedBy)
		return err
	})
	if err != nil {
		return User{}, fmt.Errorf("store.AcceptInvitation: %w", err)
	}
	return u, nil
}

func (d *db) ListInvitations(ctx context.Context, tenantID string) ([]Invitation, error) {
	rows, err := d.query(ctx, d.sql, `SELECT `+invitationCols+` FROM invitations WHERE tenant_id = ? ORDER BY created_at DESC, id`, tenantID)
	if err != nil {
		return nil, fmt.Errorf("store.ListInvitations: %w", err)
	}
	return collect(rows, scanInvitation)
}

// ---- audit ----

func (d *db) AppendAudit(ctx context.Context, e AuditEvent) error {
	_, err := d.exec(ctx, d.sql, `INSERT INTO audit_events (tenant_id, actor_id, action, target, detail, at) VALUES (?, ?, ?, ?, ?, ?)`,
		e.TenantID, e.ActorID, e.Action, e.Target, e.Detail, toMicros(nowIfZero(e.At)))
	if err != nil {
		return fmt.Errorf("store.AppendAudit: %w", err)
	}
	return nil
}

func (d *db) ListAudit(ctx context.Context, f AuditFilter) ([]AuditEvent, error) {
	if f.Limit <= 0 {
		f.Limit = 100
	}
	before := f.BeforeID
	if before <= 0 {
		before = 1<<62 - 1
	}
	rows, err := d.query(ctx, d.sql, `SELECT id, tenant_id, actor_id, action, target, detail, at FROM audit_events
		WHERE tenant_id = ? AND id < ? ORDER BY id DESC LIMIT ?`, f.TenantID, before, f.Limit)
	if err != nil {
		return nil, fmt.Errorf("store.ListAudit: %w", err)
	}
	return collect(rows, func(s scanner) (AuditEvent, error) {
		var e AuditEvent
		var at int64
		err := s.Scan(&e.ID, &e.TenantID, &e.ActorID, &e.Action, &e.Target, &e.Detail, &at)
		e.At = fromMicros(at)
		return e, err
	})
}
