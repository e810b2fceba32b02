package store

import "errors"

// Sentinel errors. Implementations wrap them with the operation, e.g.
// fmt.Errorf("store.GetUser %s: %w", id, ErrNotFound).
var (
	// ErrNotFound: the row does not exist (or, for sessions, has expired).
	ErrNotFound = errors.New("not found")
	// ErrConflict: a unique value (e.g. e-mail) is already taken.
	ErrConflict = errors.New("already exists")
	// ErrLastAdmin: the change would leave the tenant without a Tenant Admin.
	ErrLastAdmin = errors.New("a tenant must keep at least one Tenant Admin")
	// ErrSelf: an admin tried to delete themself or drop their own admin role.
	ErrSelf = errors.New("admins cannot delete themselves or remove their own Tenant Admin role")
	// ErrExpired: a one-time token has expired.
	ErrExpired = errors.New("expired")
	// ErrUsed: a one-time token was already used.
	ErrUsed = errors.New("already used")
	// ErrInUse: the row is still referenced (e.g. a custom role with assignments).
	ErrInUse = errors.New("still in use")
	// ErrActorChanged: the acting user lost the role the change needs
	// while it was in flight (e.g. demoted concurrently).
	ErrActorChanged = errors.New("the acting user no longer holds the role this change needs")
)
