// Package identity is the control plane's identity service: login and
// sessions, tenants' company data, users, invitations, self-registration,
// role assignments, custom roles and the audit log. It applies the
// authorization rules of package authz to every call and the invariants of
// package store (last admin, self-demotion) inside store transactions.
// It is transport-free: the API layer (gRPC/JSON) and the portal call it.
package identity

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/gantry-iot/gantry/controlplane/authz"
	"github.com/gantry-iot/gantry/controlplane/errkind"
	"github.com/gantry-iot/gantry/controlplane/store"
)

// Locator resolves a scope node of a tenant to its Location (the chain of
// hierarchy nodes above and including it). Domain packages provide it for
// facilities, assets, service organisations, customers and customer
// machines; it returns an errkind.Invalid error for unknown nodes.
type Locator interface {
	Locate(ctx context.Context, tenantID string, s authz.Scope) (authz.Location, error)
}

// TenantLocator knows only tenant-wide scopes. It is the Locator until the
// domain packages provide hierarchy nodes.
type TenantLocator struct{}

// Locate implements Locator.
func (TenantLocator) Locate(_ context.Context, tenantID string, s authz.Scope) (authz.Location, error) {
	if s.Kind == authz.ScopeTenant {
		if s.ID != tenantID {
			return authz.Location{}, errkind.Invalidf("scope.id", "scope tenant %q is not this tenant", s.ID)
		}
		return authz.Location{Tenant: tenantID}, nil
	}
	return authz.Location{}, errkind.Invalidf("scope.id", "unknown %s %q in this tenant", s.Kind, s.ID)
}

// Config holds the identity service's settings.
type Config struct {
	SessionTTL    time.Duration // default 12h
	InvitationTTL time.Duration // default 7 days
	PortalURL     string        // base URL for invitation links, e.g. http://127.0.0.1:8080
}

// Service implements the identity use cases. Safe for concurrent use.
type Service struct {
	store   store.Store
	locator Locator
	cfg     Config
	log     *slog.Logger
	now     func() time.Time
	// dummyHash is verified when a login names an unknown user, so that
	// response time does not reveal which e-mail addresses exist.
	dummyHash string
}

// New returns a Service. logger may be nil; locator nil means TenantLocator.
func New(s store.Store, locator Locator, cfg Config, logger *slog.Logger) (*Service, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if locator == nil {
		locator = TenantLocator{}
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 12 * time.Hour
	}
	if cfg.InvitationTTL <= 0 {
		cfg.InvitationTTL = 7 * 24 * time.Hour
	}
	dummy, err := HashPassword("not-a-real-password")
	if err != nil {
		return nil, err
	}
	return &Service{store: s, locator: locator, cfg: cfg, log: logger, now: time.Now, dummyHash: dummy}, nil
}

// SetClock replaces the clock (tests).
func (s *Service) SetClock(now func() time.Time) { s.now = now }

// Caller is an authenticated user with everything a decision needs.
type Caller struct {
	User      store.User
	Tenant    store.Tenant
	Principal authz.Principal
	TokenHash []byte
}

// Login checks credentials and opens a session.
func (s *Service) Login(ctx context.Context, email, password string) (token string, sess store.Session, u store.User, err error) {
	email, err = NormalizeEmail("email", email)
	if err != nil {
		return "", store.Session{}, store.User{}, err
	}
	bad := errkind.New(errkind.Unauthenticated, "", "wrong e-mail address or password")
	u, err = s.store.GetUserByEmail(ctx, email)
	if errors.Is(err, store.ErrNotFound) {
		_, _ = VerifyPassword(s.dummyHash, password)
		s.log.InfoContext(ctx, "login failed", "reason", "unknown user")
		return "", store.Session{}, store.User{}, bad
	}
	if err != nil {
		return "", store.Session{}, store.User{}, err
	}
	ok, err := VerifyPassword(u.PasswordHash, password)
	if err != nil || !ok {
		s.log.InfoContext(ctx, "login failed", "user", u.ID, "reason", "wrong password")
		return "", store.Session{}, store.User{}, bad
	}
	if u.Status == store.UserPending {
		return "", store.Session{}, store.User{}, errkind.New(errkind.Precondition, "",
			"your account is waiting for verification by an admin of your company; try again once they have verified it")
	}
	token, hash, err := NewToken()
	if err != nil {
		return "", store.Session{}, store.User{}, err
	}
	now := s.now().UTC()
	sess = store.Session{TokenHash: hash, UserID: u.ID, TenantID: u.TenantID, CreatedAt: now, ExpiresAt: now.Add(s.cfg.SessionTTL)}
	if err := s.store.CreateSession(ctx, sess); err != nil {
		return "", store.Session{}, store.User{}, err
	}
	s.audit(ctx, u.TenantID, u.ID, "session.login", u.ID, "")
	return token, sess, u, nil
}

// Logout ends the caller's session.
func (s *Service) Logout(ctx context.Context, c *Caller) error {
	return s.store.DeleteSession(ctx, c.TokenHash)
}

// Authenticate resolves a bearer token to a Caller.
func (s *Service) Authenticate(ctx context.Context, token string) (*Caller, error) {
	if token == "" {
		return nil, errkind.New(errkind.Unauthenticated, "", "no session token: log in first and send it as 'Authorization: Bearer <token>'")
	}
	hash := HashToken(token)
	sess, err := s.store.GetSession(ctx, hash, s.now())
	if errors.Is(err, store.ErrNotFound) {
		return nil, errkind.New(errkind.Unauthenticated, "", "session expired or unknown: log in again")
	}
	if err != nil {
		return nil, err
	}
	c, err := s.callerFor(ctx, sess.UserID)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, errkind.New(errkind.Unauthenticated, "", "your user no longer exists")
		}
		return nil, err
	}
	c.TokenHash = hash
	return c, nil
}

// CallerFor loads a user's current principal (roles and scopes as
// stored now), e.g. to re-authorize a long-lived session.
func (s *Service) CallerFor(ctx context.Context, userID string) (*Caller, error) {
	return s.callerFor(ctx, userID)
}

// callerFor loads a user's principal.
func (s *Service) callerFor(ctx context.Context, userID string) (*Caller, error) {
	u, err := s.store.GetUser(ctx, userID)
	if err != nil {
		return nil, err
	}
	t, err := s.store.GetTenant(ctx, u.TenantID)
	if err != nil {
		return nil, err
	}
	as, err := s.store.ListAssignments(ctx, u.TenantID, u.ID)
	if err != nil {
		return nil, err
	}
	custom, err := s.customRoles(ctx, t)
	if err != nil {
		return nil, err
	}
	p := authz.Principal{
		UserID:      u.ID,
		Tenant:      t.ID,
		TenantKind:  t.Kind,
		TenantRoles: t.TenantRoles,
		Pending:     u.Status != store.UserActive,
		CustomRoles: custom,
	}
	for _, a := range as {
		p.Assignments = append(p.Assignments, authz.Assignment{Role: a.Role, Scope: a.Scope})
	}
	return &Caller{User: u, Tenant: t, Principal: p}, nil
}

func (s *Service) customRoles(ctx context.Context, t store.Tenant) (map[authz.RoleID]authz.Role, error) {
	crs, err := s.store.ListCustomRoles(ctx, t.ID)
	if err != nil {
		return nil, err
	}
	if len(crs) == 0 {
		return nil, nil
	}
	m := make(map[authz.RoleID]authz.Role, len(crs))
	for _, cr := range crs {
		m[cr.ID] = customToRole(t.Kind, cr)
	}
	return m, nil
}

func customToRole(kind authz.TenantKind, cr store.CustomRole) authz.Role {
	return authz.Role{ID: cr.ID, Name: cr.Name, Kind: kind, Rank: cr.Rank, Features: cr.Features,
		ManageUsers: cr.ManageUsers, Assignable: true}
}

// audit appends an audit record; failures are logged, not returned, so a
// completed change is never reported as failed.
func (s *Service) audit(ctx context.Context, tenantID, actor, action, target, detail string) {
	if actor == "" {
		actor = "system"
	}
	err := s.store.AppendAudit(ctx, store.AuditEvent{TenantID: tenantID, ActorID: actor, Action: action, Target: target, Detail: detail, At: s.now().UTC()})
	if err != nil {
		s.log.ErrorContext(ctx, "audit append failed", "action", action, "err", err)
	}
}

// storeErr turns store sentinels into user-facing errors.
func storeErr(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrNotFound):
		return errkind.NotFoundf("%s: not found", op)
	case errors.Is(err, store.ErrConflict):
		return errkind.New(errkind.Conflict, "", "%s: already exists", op)
	case errors.Is(err, store.ErrLastAdmin):
		return errkind.New(errkind.Precondition, "", "%s: a tenant must keep at least one Tenant Admin; make another user Tenant Admin first", op)
	case errors.Is(err, store.ErrSelf):
		return errkind.New(errkind.Denied, "", "%s: admins cannot delete themselves or remove their own Tenant Admin role; ask another admin", op)
	case errors.Is(err, store.ErrExpired):
		return errkind.New(errkind.Precondition, "", "%s: the link has expired; ask for a new invitation", op)
	case errors.Is(err, store.ErrUsed):
		return errkind.New(errkind.Precondition, "", "%s: the link was already used; log in or ask for a new invitation", op)
	case errors.Is(err, store.ErrActorChanged):
		return errkind.New(errkind.Denied, "", "%s: you are no longer Tenant Admin", op)
	case errors.Is(err, store.ErrInUse):
		return errkind.New(errkind.Precondition, "", "%s: still assigned to users; revoke those assignments first", op)
	}
	return fmt.Errorf("%s: %w", op, err)
}

func denied(d authz.Decision) error { return errkind.Deniedf("%s", d.Reason) }
