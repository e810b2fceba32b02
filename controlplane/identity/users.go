package identity

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/gantry-iot/gantry/controlplane/authz"
	"github.com/gantry-iot/gantry/controlplane/errkind"
	"github.com/gantry-iot/gantry/controlplane/store"
)

// userInTenant loads a user and hides users of other tenants as not found.
func (s *Service) userInTenant(ctx context.Context, c *Caller, id string) (store.User, error) {
	if err := CheckID("user_id", id); err != nil {
		return store.User{}, err
	}
	u, err := s.store.GetUser(ctx, id)
	if err != nil || u.TenantID != c.Tenant.ID {
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return store.User{}, err
		}
		return store.User{}, errkind.NotFoundf("user %q not found in your tenant", id)
	}
	return u, nil
}

// ListUsers lists the users of the caller's tenant (user management).
func (s *Service) ListUsers(ctx context.Context, c *Caller) ([]store.User, error) {
	if err := s.requireUserManagement(c); err != nil {
		return nil, err
	}
	return s.store.ListUsers(ctx, c.Tenant.ID)
}

// GetUser returns a user of the caller's tenant (self, or user management).
func (s *Service) GetUser(ctx context.Context, c *Caller, id string) (store.User, error) {
	if id == "" || id == c.User.ID {
		return c.User, nil
	}
	if err := s.requireUserManagement(c); err != nil {
		return store.User{}, err
	}
	return s.userInTenant(ctx, c, id)
}

// Invite is a created invitation with its one-time token (shown once).
type Invite struct {
	Invitation store.Invitation
	Token      string
	Link       string
}

// InviteUser invites someone into the caller's tenant. Without roles the
// invitee gets the inviter's own assignable roles (seed 003); if there are
// none the caller must name roles.
func (s *Service) InviteUser(ctx context.Context, c *Caller, email string, roles []store.RoleGrant) (Invite, error) {
	if err := s.requireUserManagement(c); err != nil {
		return Invite{}, err
	}
	email, err := NormalizeEmail("email", email)
	if err != nil {
		return Invite{}, err
	}
	if _, err := s.store.GetUserByEmail(ctx, email); err == nil {
		return Invite{}, errkind.New(errkind.Conflict, "email", "a user with e-mail %s already exists", email)
	}
	if len(roles) == 0 {
		for _, a := range authz.DefaultInviteeRoles(c.Principal, tenantInfo(c.Tenant)) {
			roles = append(roles, store.RoleGrant{Role: a.Role, Scope: a.Scope})
		}
		if len(roles) == 0 {
			return Invite{}, errkind.Invalidf("roles", "none of your own roles can be passed on to the invitee; name the roles to give (see ListRoles with assignable_only)")
		}
	}
	if len(roles) > 20 {
		return Invite{}, errkind.Invalidf("roles", "at most 20 roles per invitation")
	}
	for i, g := range roles {
		if roles[i], err = s.checkGrant(ctx, c, g); err != nil {
			return Invite{}, err
		}
	}
	token, hash, err := NewToken()
	if err != nil {
		return Invite{}, err
	}
	now := s.now().UTC()
	inv, err := s.store.CreateInvitation(ctx, store.Invitation{TenantID: c.Tenant.ID, Email: email, Roles: roles, TokenHash: hash,
		CreatedBy: c.User.ID, CreatedAt: now, ExpiresAt: now.Add(s.cfg.InvitationTTL)})
	if err != nil {
		return Invite{}, storeErr("invite user", err)
	}
	s.audit(ctx, c.Tenant.ID, c.User.ID, "user.invite", email, grantsText(c, roles))
	return Invite{Invitation: inv, Token: token, Link: s.link("/invite?token=" + url.QueryEscape(token))}, nil
}

func (s *Service) link(path string) string {
	return strings.TrimRight(s.cfg.PortalURL, "/") + path
}

func grantsText(c *Caller, gs []store.RoleGrant) string {
	parts := make([]string, len(gs))
	for i, g := range gs {
		parts[i] = fmt.Sprintf("%s on %s %s", c.RoleName(g.Role), g.Scope.Kind, g.Scope.ID)
	}
	return strings.Join(parts, "; ")
}

// ListInvitations lists the tenant's invitations (user management).
func (s *Service) ListInvitations(ctx context.Context, c *Caller) ([]store.Invitation, error) {
	if err := s.requireUserManagement(c); err != nil {
		return nil, err
	}
	return s.store.ListInvitations(ctx, c.Tenant.ID)
}

// AcceptInvitation redeems a one-time invitation token.
func (s *Service) AcceptInvitation(ctx context.Context, token, displayName, password string) (store.User, error) {
	if token == "" || len(token) > 100 {
		return store.User{}, errkind.Invalidf("token", "an invitation token is required (from the invitation link)")
	}
	name, err := CheckName("display_name", displayName)
	if err != nil {
		return store.User{}, err
	}
	if err := CheckPassword("password", password); err != nil {
		return store.User{}, err
	}
	hash, err := HashPassword(password)
	if err != nil {
		return store.User{}, err
	}
	u, err := s.store.AcceptInvitation(ctx, HashToken(token), store.User{DisplayName: name, PasswordHash: hash, Status: store.UserActive}, s.now().UTC())
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return store.User{}, errkind.NotFoundf("unknown invitation: check the link, or ask for a new invitation")
		}
		return store.User{}, storeErr("accept invitation", err)
	}
	s.audit(ctx, u.TenantID, u.ID, "user.accept_invitation", u.ID, u.Email)
	return u, nil
}

// Register creates a pending user in a tenant (self-registration). The
// user can do nothing until an admin verifies them.
func (s *Service) Register(ctx context.Context, tenantID, email, displayName, password string) (store.User, error) {
	if err := CheckID("tenant_id", tenantID); err != nil {
		return store.User{}, err
	}
	email, err := NormalizeEmail("email", email)
	if err != nil {
		return store.User{}, err
	}
	name, err := CheckName("display_name", displayName)
	if err != nil {
		return store.User{}, err
	}
	if err := CheckPassword("password", password); err != nil {
		return store.User{}, err
	}
	if _, err := s.store.GetTenant(ctx, tenantID); err != nil {
		return store.User{}, errkind.NotFoundf("tenant %q not found; ask your company for its registration link", tenantID)
	}
	hash, err := HashPassword(password)
	if err != nil {
		return store.User{}, err
	}
	u, err := s.store.CreateUser(ctx, store.User{TenantID: tenantID, Email: email, DisplayName: name, PasswordHash: hash, Status: store.UserPending}, nil, "")
	if err != nil {
		if errors.Is(err, store.ErrConflict) {
			return store.User{}, errkind.New(errkind.Conflict, "email", "a user with e-mail %s already exists; log in instead", email)
		}
		return store.User{}, storeErr("register", err)
	}
	s.audit(ctx, tenantID, u.ID, "user.register", u.ID, email)
	return u, nil
}

// VerifyUser activates a pending user with the given roles.
func (s *Service) VerifyUser(ctx context.Context, c *Caller, id string, roles []store.RoleGrant) (store.User, error) {
	if err := s.requireUserManagement(c); err != nil {
		return store.User{}, err
	}
	u, err := s.userInTenant(ctx, c, id)
	if err != nil {
		return store.User{}, err
	}
	if u.Status != store.UserPending {
		return store.User{}, errkind.New(errkind.Precondition, "id", "user %s is already active", u.Email)
	}
	if len(roles) == 0 {
		return store.User{}, errkind.Invalidf("roles", "name at least one role for the verified user")
	}
	for i, g := range roles {
		if roles[i], err = s.checkGrant(ctx, c, g); err != nil {
			return store.User{}, err
		}
	}
	for _, g := range roles {
		if _, err := s.store.AddAssignment(ctx, store.Assignment{TenantID: c.Tenant.ID, UserID: u.ID, Role: g.Role, Scope: g.Scope, CreatedBy: c.User.ID}); err != nil {
			return store.User{}, storeErr("verify user", err)
		}
	}
	if err := s.store.SetUserStatus(ctx, u.ID, store.UserActive); err != nil {
		return store.User{}, storeErr("verify user", err)
	}
	u.Status = store.UserActive
	s.audit(ctx, c.Tenant.ID, c.User.ID, "user.verify", u.ID, grantsText(c, roles))
	return u, nil
}

// DeleteUser deletes a user of the caller's tenant. Non-admin user
// managers may delete only users ranked strictly below themselves.
func (s *Service) DeleteUser(ctx context.Context, c *Caller, id string) error {
	if err := s.requireUserManagement(c); err != nil {
		return err
	}
	if id == c.User.ID {
		return storeErr("delete user", store.ErrSelf)
	}
	u, err := s.userInTenant(ctx, c, id)
	if err != nil {
		return err
	}
	if !isAdmin(c) {
		as, err := s.store.ListAssignments(ctx, c.Tenant.ID, u.ID)
		if err != nil {
			return err
		}
		mine := highestRank(c, c.Principal.Assignments)
		for _, a := range as {
			if r, err := c.role(a.Role); err == nil && r.Rank >= mine {
				return errkind.Deniedf("cannot delete %s: they hold %s, which is not below your own rank", u.Email, r.Name)
			}
		}
	}
	if err := s.store.DeleteUser(ctx, c.User.ID, id); err != nil {
		return storeErr("delete user", err)
	}
	s.audit(ctx, c.Tenant.ID, c.User.ID, "user.delete", id, u.Email)
	return nil
}

func highestRank(c *Caller, as []authz.Assignment) int {
	best := 0
	for _, a := range as {
		if r, err := c.role(a.Role); err == nil && r.Rank > best {
			best = r.Rank
		}
	}
	return best
}

// TenantUpdate is the input for UpdateTenant; empty fields stay unchanged.
type TenantUpdate struct {
	Name, CompanyInfo, LogoURL, PrimaryColor string
	// CaseStatuses replaces a provider's further ticket statuses when
	// SetCaseStatuses is true.
	CaseStatuses    []string
	SetCaseStatuses bool
}

// builtinStates are the case states every case has.
var builtinStates = map[string]bool{"new": true, "in_progress": true, "closed": true}

// GetTenant returns the caller's tenant.
func (s *Service) GetTenant(ctx context.Context, c *Caller, id string) (store.Tenant, error) {
	if id != "" && id != c.Tenant.ID {
		return store.Tenant{}, errkind.NotFoundf("tenant %q not found", id)
	}
	return c.Tenant, nil
}

// UpdateTenant changes company information and appearance (Tenant Admin).
func (s *Service) UpdateTenant(ctx context.Context, c *Caller, id string, u TenantUpdate) (store.Tenant, error) {
	if id != "" && id != c.Tenant.ID {
		return store.Tenant{}, errkind.NotFoundf("tenant %q not found", id)
	}
	if err := requireAdmin(c, "change company information and appearance"); err != nil {
		return store.Tenant{}, err
	}
	t := c.Tenant
	if u.Name != "" {
		n, err := CheckName("name", u.Name)
		if err != nil {
			return store.Tenant{}, err
		}
		t.Name = n
	}
	if u.CompanyInfo != "" {
		if len(u.CompanyInfo) > MaxCompanyInfoLen {
			return store.Tenant{}, errkind.Invalidf("company_info", "at most %d characters", MaxCompanyInfoLen)
		}
		t.CompanyInfo = u.CompanyInfo
	}
	if u.LogoURL != "" {
		p, err := url.Parse(u.LogoURL)
		if err != nil || (p.Scheme != "https" && p.Scheme != "http") || p.Host == "" || len(u.LogoURL) > 500 {
			return store.Tenant{}, errkind.Invalidf("logo_url", "must be an http(s) URL of at most 500 characters")
		}
		t.LogoURL = u.LogoURL
	}
	if u.PrimaryColor != "" {
		if !isHexColor(u.PrimaryColor) {
			return store.Tenant{}, errkind.Invalidf("primary_color", "must look like #1a2b3c")
		}
		t.PrimaryColor = strings.ToLower(u.PrimaryColor)
	}
	if u.SetCaseStatuses {
		if t.Kind != authz.KindServiceProvider {
			return store.Tenant{}, errkind.Invalidf("case_statuses", "only Service Provider tenants define further ticket statuses for shared cases")
		}
		if len(u.CaseStatuses) > 20 {
			return store.Tenant{}, errkind.Invalidf("case_statuses", "at most 20 statuses")
		}
		seen := map[string]bool{}
		for i, st := range u.CaseStatuses {
			if builtinStates[st] || seen[st] || !isStatusWord(st) {
				return store.Tenant{}, errkind.Invalidf(fmt.Sprintf("case_statuses[%d]", i), "%q: use a new lower-case word with underscores (new, in_progress and closed always exist)", st)
			}
			seen[st] = true
		}
		t.CaseStatuses = u.CaseStatuses
	}
	if err := s.store.UpdateTenant(ctx, t); err != nil {
		return store.Tenant{}, storeErr("update tenant", err)
	}
	s.audit(ctx, t.ID, c.User.ID, "tenant.update", t.ID, "company information / appearance")
	return t, nil
}

func isHexColor(s string) bool {
	if len(s) != 7 || s[0] != '#' {
		return false
	}
	for _, r := range s[1:] {
		if !strings.ContainsRune("0123456789abcdefABCDEF", r) {
			return false
		}
	}
	return true
}

// ListAudit returns the tenant's audit log (Tenant Admin).
func (s *Service) ListAudit(ctx context.Context, c *Caller, limit int, beforeID int64) ([]store.AuditEvent, error) {
	if err := requireAdmin(c, "read the audit log"); err != nil {
		return nil, err
	}
	if limit < 0 || limit > 1000 {
		return nil, errkind.Invalidf("limit", "must be between 0 and 1000")
	}
	return s.store.ListAudit(ctx, store.AuditFilter{TenantID: c.Tenant.ID, Limit: limit, BeforeID: beforeID})
}

// Effective returns the caller's highest level per feature over all scopes
// (for navigation; each call still checks the scope of its resource).
func (c *Caller) Effective() map[authz.Feature]authz.Level {
	out := map[authz.Feature]authz.Level{}
	if c.Principal.Pending {
		return out
	}
	for _, a := range c.Principal.Assignments {
		r, err := c.role(a.Role)
		if err != nil || (r.Requires != "" && !hasTenantRole(c.Tenant, r.Requires)) {
			continue
		}
		for f, l := range r.Features {
			if l > out[f] {
				out[f] = l
			}
		}
	}
	return out
}

// ManagesUsers reports whether the caller may manage users somewhere.
func (c *Caller) ManagesUsers() bool {
	for _, a := range c.Principal.Assignments {
		if r, err := c.role(a.Role); err == nil && r.ManageUsers && !c.Principal.Pending {
			return true
		}
	}
	return false
}

// Bootstrap creates a tenant with its first user as Tenant Admin (used by
// the dev demo data and the create-tenant command; no caller).
func (s *Service) Bootstrap(ctx context.Context, t store.Tenant, email, displayName, password string) (store.Tenant, store.User, error) {
	email, err := NormalizeEmail("email", email)
	if err != nil {
		return store.Tenant{}, store.User{}, err
	}
	if t.Name, err = CheckName("name", t.Name); err != nil {
		return store.Tenant{}, store.User{}, err
	}
	if err := CheckPassword("password", password); err != nil {
		return store.Tenant{}, store.User{}, err
	}
	hash, err := HashPassword(password)
	if err != nil {
		return store.Tenant{}, store.User{}, err
	}
	t.CreatedAt = s.now().UTC()
	t, u, err := s.store.CreateTenantWithAdmin(ctx, t, store.User{Email: email, DisplayName: displayName, PasswordHash: hash, Status: store.UserActive})
	if err != nil {
		return store.Tenant{}, store.User{}, storeErr("create tenant", err)
	}
	s.audit(ctx, t.ID, "", "tenant.create", t.ID, fmt.Sprintf("%s (%s), first admin %s", t.Name, t.Kind, email))
	return t, u, nil
}

// CreateUserDirect creates an active user with roles without a caller
// (demo data only).
func (s *Service) CreateUserDirect(ctx context.Context, tenantID, email, displayName, password string, roles []store.RoleGrant) (store.User, error) {
	hash, err := HashPassword(password)
	if err != nil {
		return store.User{}, err
	}
	for i := range roles {
		if roles[i].Scope.Kind == "" {
			roles[i].Scope = authz.Scope{Kind: authz.ScopeTenant, ID: tenantID}
		}
	}
	u, err := s.store.CreateUser(ctx, store.User{TenantID: tenantID, Email: email, DisplayName: displayName, PasswordHash: hash, Status: store.UserActive, CreatedAt: s.now().UTC()}, roles, "")
	return u, storeErr("create user", err)
}

// InviteFirstAdmin invites the first user of a freshly created tenant t
// (a customer invited by its provider, seed 001): the invitee becomes the
// tenant's Tenant Admin. The caller's own permission to invite the
// customer is checked by the calling package.
func (s *Service) InviteFirstAdmin(ctx context.Context, c *Caller, t store.Tenant, email string) (Invite, error) {
	email, err := NormalizeEmail("admin_email", email)
	if err != nil {
		return Invite{}, err
	}
	if _, err := s.store.GetUserByEmail(ctx, email); err == nil {
		return Invite{}, errkind.New(errkind.Conflict, "admin_email", "a user with e-mail %s already exists", email)
	}
	us, err := s.store.ListUsers(ctx, t.ID)
	if err != nil {
		return Invite{}, err
	}
	if len(us) > 0 {
		return Invite{}, errkind.New(errkind.Precondition, "tenant", "tenant %s already has users; its admins invite further users", t.Name)
	}
	token, hash, err := NewToken()
	if err != nil {
		return Invite{}, err
	}
	now := s.now().UTC()
	roles := []store.RoleGrant{{Role: authz.TenantAdmin, Scope: authz.Scope{Kind: authz.ScopeTenant, ID: t.ID}}}
	inv, err := s.store.CreateInvitation(ctx, store.Invitation{TenantID: t.ID, Email: email, Roles: roles, TokenHash: hash,
		CreatedBy: c.User.ID, CreatedAt: now, ExpiresAt: now.Add(s.cfg.InvitationTTL)})
	if err != nil {
		return Invite{}, storeErr("invite first admin", err)
	}
	s.audit(ctx, t.ID, c.User.ID, "tenant.invite_first_admin", email, "invited by "+c.Tenant.Name)
	s.audit(ctx, c.Tenant.ID, c.User.ID, "customer.invite", t.ID, fmt.Sprintf("%s, first admin %s", t.Name, email))
	return Invite{Invitation: inv, Token: token, Link: s.link("/invite?token=" + url.QueryEscape(token))}, nil
}

func isStatusWord(s string) bool {
	if len(s) == 0 || len(s) > 32 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r == '_') {
			return false
		}
	}
	return true
}

// Engineers lists the active Maintenance Engineers of the caller's tenant
// (the possible assignees of internal cases). Any user who can edit cases
// may see them.
func (s *Service) Engineers(ctx context.Context, c *Caller) ([]store.User, error) {
	as, err := s.store.ListAssignments(ctx, c.Tenant.ID, "")
	if err != nil {
		return nil, err
	}
	var out []store.User
	seen := map[string]bool{}
	for _, a := range as {
		if a.Role != authz.MaintenanceEngineer || seen[a.UserID] {
			continue
		}
		seen[a.UserID] = true
		u, err := s.store.GetUser(ctx, a.UserID)
		if err == nil && u.Status == store.UserActive {
			out = append(out, u)
		}
	}
	return out, nil
}
