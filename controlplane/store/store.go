// Package store persists Gantry's control-plane state.
//
// One interface, Store, has two implementations: SQLite (modernc.org/sqlite,
// the embedded default, one file in the data dir) and PostgreSQL (pgx/v5).
// Both apply the same versioned migrations embedded in the binary. Every
// invariant that must hold under concurrent requests (a tenant always keeps
// an admin, an admin cannot drop their own admin role or delete themself,
// one-time tokens are used once) is enforced inside a store transaction.
//
// Migrations live in migrations/: a new one is a file NNNN_name.sql in
// common/ when both databases accept its SQL, or one file each in sqlite/
// and postgres/ when they differ. Versions run 1, 2, 3, … and are applied
// in order, each in a transaction, at Open.
//
// Concurrency: a Store is safe for concurrent use by many goroutines.
package store

import (
	"context"
	"time"

	"github.com/gantry-iot/gantry/controlplane/authz"
)

// Tenant is a company on the platform.
type Tenant struct {
	ID          string
	Name        string
	Kind        authz.TenantKind
	TenantRoles []authz.TenantRole
	// Company information and appearance (managed by the Tenant Admin).
	CompanyInfo  string
	LogoURL      string
	PrimaryColor string
	// MaxGrantDuration is the tenant's maximum remote-access grant length; 0 = platform default.
	MaxGrantDuration time.Duration
	// CaseStatuses are a provider's further ticket statuses for shared cases.
	CaseStatuses []string
	CreatedAt    time.Time
}

// UserStatus is a user's lifecycle state.
type UserStatus string

// User states.
const (
	UserActive  UserStatus = "active"
	UserPending UserStatus = "pending" // self-registered, waiting for an admin to verify
)

// User is a person with a login in exactly one tenant.
type User struct {
	ID           string
	TenantID     string
	Email        string // unique platform-wide, stored lower-case
	DisplayName  string
	PasswordHash string // argon2id PHC string; never logged
	Status       UserStatus
	CreatedAt    time.Time
}

// Assignment is one role held by a user within a scope.
type Assignment struct {
	ID        string
	TenantID  string
	UserID    string
	Role      authz.RoleID
	Scope     authz.Scope
	CreatedBy string // user ID of the assigner; empty for system (bootstrap)
	CreatedAt time.Time
}

// CustomRole is an individual role defined by a tenant admin.
type CustomRole struct {
	ID          authz.RoleID // "custom:<uuid>"
	TenantID    string
	Name        string
	Rank        int
	Features    map[authz.Feature]authz.Level
	ManageUsers bool
	CreatedAt   time.Time
}

// Session is a login session. Only the SHA-256 of the bearer token is stored.
type Session struct {
	TokenHash []byte
	UserID    string
	TenantID  string
	CreatedAt time.Time
	ExpiresAt time.Time
}

// RoleGrant is a role with its scope, as carried by an invitation.
type RoleGrant struct {
	Role  authz.RoleID
	Scope authz.Scope
}

// Invitation is a one-time, expiring invitation into a tenant. Only the
// SHA-256 of the token is stored.
type Invitation struct {
	ID        string
	TenantID  string
	Email     string
	Roles     []RoleGrant
	TokenHash []byte
	CreatedBy string
	CreatedAt time.Time
	ExpiresAt time.Time
	UsedAt    *time.Time
}

// AuditEvent is one append-only audit record.
type AuditEvent struct {
	ID       int64
	TenantID string
	ActorID  string // user ID, or "system"
	Action   string // e.g. "user.invite", "role.assign", "role.revoke", "user.delete"
	Target   string // e.g. user ID or case ID
	Detail   string // short human-readable detail, never secrets
	At       time.Time
}

// AuditFilter selects audit events of one tenant, newest first.
type AuditFilter struct {
	TenantID string
	Limit    int   // 0 → 100
	BeforeID int64 // 0 → from the newest
}

// Store is Gantry's persistence. Methods return errors wrapping the
// sentinels in errors.go so callers can map them with errors.Is.
type Store interface {
	// Tenants.
	// CreateTenantWithAdmin creates a tenant and its first user, who is made
	// Tenant Admin (tenant-wide), in one transaction.
	CreateTenantWithAdmin(ctx context.Context, t Tenant, admin User) (Tenant, User, error)
	GetTenant(ctx context.Context, id string) (Tenant, error)
	ListTenants(ctx context.Context) ([]Tenant, error)
	UpdateTenant(ctx context.Context, t Tenant) error

	// Users.
	CreateUser(ctx context.Context, u User, roles []RoleGrant, createdBy string) (User, error)
	GetUser(ctx context.Context, id string) (User, error)
	GetUserByEmail(ctx context.Context, email string) (User, error)
	ListUsers(ctx context.Context, tenantID string) ([]User, error)
	SetUserStatus(ctx context.Context, id string, status UserStatus) error
	SetPassword(ctx context.Context, id, passwordHash string) error
	// DeleteUser deletes a user with their assignments and sessions. Fails
	// with ErrSelf when actorID == id and with ErrLastAdmin when the user is
	// the tenant's last Tenant Admin.
	DeleteUser(ctx context.Context, actorID, id string) error

	// Role assignments.
	AddAssignment(ctx context.Context, a Assignment) (Assignment, error)
	// RemoveAssignment removes one assignment. For Tenant Admin assignments
	// it fails with ErrSelf when the actor is the holder and with
	// ErrLastAdmin when no other active Tenant Admin would remain; both
	// checks run inside the transaction so two admins demoting each other
	// concurrently can never leave the tenant without an admin.
	RemoveAssignment(ctx context.Context, actorID, assignmentID string) error
	GetAssignment(ctx context.Context, id string) (Assignment, error)
	ListAssignments(ctx context.Context, tenantID, userID string) ([]Assignment, error) // userID "" = all users of the tenant

	// Custom roles.
	CreateCustomRole(ctx context.Context, r CustomRole) (CustomRole, error)
	ListCustomRoles(ctx context.Context, tenantID string) ([]CustomRole, error)
	// DeleteCustomRole fails with ErrInUse while assignments reference it.
	DeleteCustomRole(ctx context.Context, tenantID string, id authz.RoleID) error

	// Sessions.
	CreateSession(ctx context.Context, s Session) error
	GetSession(ctx context.Context, tokenHash []byte, now time.Time) (Session, error) // ErrNotFound when missing or expired
	DeleteSession(ctx context.Context, tokenHash []byte) error

	// Invitations.
	CreateInvitation(ctx context.Context, inv Invitation) (Invitation, error)
	// AcceptInvitation atomically marks the invitation used and creates the
	// active user with the invitation's roles. ErrNotFound for an unknown
	// token, ErrExpired for an expired one, ErrUsed for a used one.
	AcceptInvitation(ctx context.Context, tokenHash []byte, u User, now time.Time) (User, error)
	ListInvitations(ctx context.Context, tenantID string) ([]Invitation, error)

	// Audit log (append-only: there is no update or delete).
	AppendAudit(ctx context.Context, e AuditEvent) error
	ListAudit(ctx context.Context, f AuditFilter) ([]AuditEvent, error)

	Domain
	Devices
	Documents
	ExternalUsers
	Contracts
	Grants
	Values
	Notifications
	Templates

	Close() error
}
