package identity

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/gantry-iot/gantry/controlplane/authz"
	"github.com/gantry-iot/gantry/controlplane/errkind"
	"github.com/gantry-iot/gantry/controlplane/store"
	"github.com/google/uuid"
)

func tenantInfo(t store.Tenant) authz.TenantInfo {
	return authz.TenantInfo{Kind: t.Kind, TenantRoles: t.TenantRoles}
}

// role resolves a role ID (built-in or custom) in the caller's tenant.
func (c *Caller) role(id authz.RoleID) (authz.Role, error) {
	if r, ok := c.Principal.CustomRoles[id]; ok {
		return r, nil
	}
	// Tenant Admin exists once per tenant kind, so look the role up among
	// the built-ins of the caller's kind rather than by ID alone.
	for _, r := range authz.BuiltinRoles(c.Tenant.Kind) {
		if r.ID == id {
			return r, nil
		}
	}
	return authz.Role{}, errkind.Invalidf("role_id", "unknown role %q for a %s tenant; list the roles with ListRoles", id, c.Tenant.Kind)
}

// RoleName returns a role's display name for output.
func (c *Caller) RoleName(id authz.RoleID) string {
	if r, err := c.role(id); err == nil {
		return r.Name
	}
	return string(id)
}

// RoleView is a role as listed to a user.
type RoleView struct {
	authz.Role
	CanAssign bool
}

// ListRoles lists the roles of the caller's tenant kind that the tenant
// offers (built-in and custom), marking those the caller may assign
// tenant-wide.
func (s *Service) ListRoles(ctx context.Context, c *Caller, assignableOnly bool) ([]RoleView, error) {
	var out []RoleView
	all := authz.BuiltinRoles(c.Tenant.Kind)
	for _, r := range c.Principal.CustomRoles {
		all = append(all, r)
	}
	tenantWide := authz.Location{Tenant: c.Tenant.ID}
	for _, r := range all {
		if r.Requires != "" && !hasTenantRole(c.Tenant, r.Requires) {
			continue
		}
		can := authz.CheckAssign(c.Principal, r, tenantWide, tenantInfo(c.Tenant)) == nil
		if assignableOnly && !can {
			continue
		}
		out = append(out, RoleView{Role: r, CanAssign: can})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Rank != out[j].Rank {
			return out[i].Rank > out[j].Rank
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

// AssignableRoles lists the roles the caller may assign somewhere:
// tenant-wide, or inside a scope in which one of the caller's roles
// manages users (the same authz.CheckAssign decision AssignRole makes for
// that scope). Pages offer exactly these; the service still checks the
// scope actually chosen.
func (s *Service) AssignableRoles(ctx context.Context, c *Caller) ([]RoleView, error) {
	all, err := s.ListRoles(ctx, c, false)
	if err != nil {
		return nil, err
	}
	var scopes []authz.Location
	for _, a := range c.Principal.Assignments {
		if r, err := c.role(a.Role); err == nil && r.ManageUsers && a.Scope.Kind != authz.ScopeTenant {
			scopes = append(scopes, authz.Location{Tenant: c.Tenant.ID, Chain: []authz.Scope{a.Scope}})
		}
	}
	var out []RoleView
	for _, rv := range all {
		for _, loc := range scopes {
			if rv.CanAssign {
				break
			}
			rv.CanAssign = authz.CheckAssign(c.Principal, rv.Role, loc, tenantInfo(c.Tenant)) == nil
		}
		if rv.CanAssign {
			out = append(out, rv)
		}
	}
	return out, nil
}

func hasTenantRole(t store.Tenant, r authz.TenantRole) bool {
	for _, x := range t.TenantRoles {
		if x == r {
			return true
		}
	}
	return false
}

// checkGrant validates one role grant for a user of the caller's tenant
// and returns it with the scope resolved.
func (s *Service) checkGrant(ctx context.Context, c *Caller, g store.RoleGrant) (store.RoleGrant, error) {
	r, err := c.role(g.Role)
	if err != nil {
		return g, err
	}
	if g.Scope.Kind == "" {
		g.Scope.Kind = authz.ScopeTenant
	}
	if g.Scope.Kind == authz.ScopeTenant && g.Scope.ID == "" {
		g.Scope.ID = c.Tenant.ID
	}
	loc, err := s.locator.Locate(ctx, c.Tenant.ID, g.Scope)
	if err != nil {
		return g, err
	}
	if err := authz.CheckAssign(c.Principal, r, loc, tenantInfo(c.Tenant)); err != nil {
		return g, errkind.Deniedf("cannot assign %s: %s", r.Name, denyReason(err))
	}
	return g, nil
}

func denyReason(err error) string {
	var de *authz.DenyError
	if errors.As(err, &de) {
		return de.Reason
	}
	return err.Error()
}

// AssignRole gives a user of the caller's tenant a role within a scope.
func (s *Service) AssignRole(ctx context.Context, c *Caller, userID string, g store.RoleGrant) (store.Assignment, error) {
	if err := CheckID("user_id", userID); err != nil {
		return store.Assignment{}, err
	}
	target, err := s.userInTenant(ctx, c, userID)
	if err != nil {
		return store.Assignment{}, err
	}
	if target.Status != store.UserActive {
		return store.Assignment{}, errkind.New(errkind.Precondition, "user_id", "user %s is pending; verify them with their roles instead", target.Email)
	}
	g, err = s.checkGrant(ctx, c, g)
	if err != nil {
		return store.Assignment{}, err
	}
	a, err := s.store.AddAssignment(ctx, store.Assignment{TenantID: c.Tenant.ID, UserID: userID, Role: g.Role, Scope: g.Scope, CreatedBy: c.User.ID})
	if err != nil {
		return store.Assignment{}, storeErr("assign role", err)
	}
	s.audit(ctx, c.Tenant.ID, c.User.ID, "role.assign", userID, fmt.Sprintf("%s on %s %s", c.RoleName(g.Role), g.Scope.Kind, g.Scope.ID))
	return a, nil
}

// RevokeRole removes an assignment. The caller must be allowed to assign
// that role at that scope; the store refuses removing one's own or the
// last Tenant Admin role.
func (s *Service) RevokeRole(ctx context.Context, c *Caller, assignmentID string) error {
	if err := CheckID("assignment_id", assignmentID); err != nil {
		return err
	}
	a, err := s.store.GetAssignment(ctx, assignmentID)
	if err != nil || a.TenantID != c.Tenant.ID {
		return errkind.NotFoundf("assignment %q not found in your tenant", assignmentID)
	}
	if a.Role == authz.TenantAdmin && a.UserID == c.User.ID {
		return storeErr("revoke role", store.ErrSelf)
	}
	if _, err := s.checkGrant(ctx, c, store.RoleGrant{Role: a.Role, Scope: a.Scope}); err != nil {
		return errkind.Deniedf("cannot revoke this assignment: %s", strings.TrimPrefix(err.Error(), "cannot assign "))
	}
	if err := s.store.RemoveAssignment(ctx, c.User.ID, assignmentID); err != nil {
		return storeErr("revoke role", err)
	}
	s.audit(ctx, c.Tenant.ID, c.User.ID, "role.revoke", a.UserID, fmt.Sprintf("%s on %s %s", c.RoleName(a.Role), a.Scope.Kind, a.Scope.ID))
	return nil
}

// ListAssignments lists a user's assignments. Everyone may list their own;
// listing others' needs user management.
func (s *Service) ListAssignments(ctx context.Context, c *Caller, userID string) ([]store.Assignment, error) {
	if userID == "" {
		userID = c.User.ID
	}
	if userID != c.User.ID {
		if err := s.requireUserManagement(c); err != nil {
			return nil, err
		}
		if _, err := s.userInTenant(ctx, c, userID); err != nil {
			return nil, err
		}
	}
	return s.store.ListAssignments(ctx, c.Tenant.ID, userID)
}

// CustomRoleSpec is the input for CreateCustomRole.
type CustomRoleSpec struct {
	Name        string
	Rank        int
	Features    map[authz.Feature]authz.Level
	ManageUsers bool
}

// CreateCustomRole defines an individual role (Tenant Admin only).
func (s *Service) CreateCustomRole(ctx context.Context, c *Caller, spec CustomRoleSpec) (authz.Role, error) {
	if err := requireAdmin(c, "define individual roles"); err != nil {
		return authz.Role{}, err
	}
	name, err := CheckName("name", spec.Name)
	if err != nil {
		return authz.Role{}, err
	}
	for _, r := range c.Principal.CustomRoles {
		if strings.EqualFold(r.Name, name) {
			return authz.Role{}, errkind.New(errkind.Conflict, "name", "a role named %q already exists", name)
		}
	}
	r := authz.Role{ID: authz.RoleID("custom:" + uuid.NewString()), Name: name, Kind: c.Tenant.Kind, Rank: spec.Rank,
		Features: spec.Features, ManageUsers: spec.ManageUsers, Assignable: true}
	if err := authz.ValidateCustomRole(c.Tenant.Kind, r); err != nil {
		return authz.Role{}, errkind.Invalidf("", "%s", denyReason(err))
	}
	cr, err := s.store.CreateCustomRole(ctx, store.CustomRole{ID: r.ID, TenantID: c.Tenant.ID, Name: name, Rank: spec.Rank, Features: spec.Features, ManageUsers: spec.ManageUsers})
	if err != nil {
		return authz.Role{}, storeErr("create custom role", err)
	}
	s.audit(ctx, c.Tenant.ID, c.User.ID, "role.custom.create", string(cr.ID), name)
	return customToRole(c.Tenant.Kind, cr), nil
}

// DeleteCustomRole removes an unused individual role (Tenant Admin only).
func (s *Service) DeleteCustomRole(ctx context.Context, c *Caller, id string) error {
	if err := requireAdmin(c, "delete individual roles"); err != nil {
		return err
	}
	if _, ok := c.Principal.CustomRoles[authz.RoleID(id)]; !ok {
		return errkind.NotFoundf("custom role %q not found in your tenant", id)
	}
	if err := s.store.DeleteCustomRole(ctx, c.Tenant.ID, authz.RoleID(id)); err != nil {
		return storeErr("delete custom role", err)
	}
	s.audit(ctx, c.Tenant.ID, c.User.ID, "role.custom.delete", id, "")
	return nil
}

// isAdmin reports whether the caller holds Tenant Admin.
func isAdmin(c *Caller) bool {
	if c.Principal.Pending {
		return false
	}
	for _, a := range c.Principal.Assignments {
		if a.Role == authz.TenantAdmin {
			return true
		}
	}
	return false
}

// IsTenantAdmin reports whether the caller holds Tenant Admin (and is not
// pending): what company information, custom roles and the audit log
// require. Pages use it to decide what to show; the service still checks.
func (c *Caller) IsTenantAdmin() bool { return isAdmin(c) }

func requireAdmin(c *Caller, what string) error {
	if !isAdmin(c) {
		return errkind.Deniedf("only a Tenant Admin may %s", what)
	}
	return nil
}

func (s *Service) requireUserManagement(c *Caller) error {
	d := authz.CanManageUsers(c.Principal, authz.Location{Tenant: c.Tenant.ID})
	if d.Allowed {
		return nil
	}
	for _, a := range c.Principal.Assignments {
		if r, err := c.role(a.Role); err == nil && r.ManageUsers {
			return nil // user management within a narrower scope
		}
	}
	return denied(d)
}

// TenantAssignments returns all assignments of the caller's tenant by user
// (user management).
func (s *Service) TenantAssignments(ctx context.Context, c *Caller) (map[string][]store.Assignment, error) {
	if err := s.requireUserManagement(c); err != nil {
		return nil, err
	}
	as, err := s.store.ListAssignments(ctx, c.Tenant.ID, "")
	if err != nil {
		return nil, err
	}
	m := make(map[string][]store.Assignment)
	for _, a := range as {
		m[a.UserID] = append(m[a.UserID], a)
	}
	return m, nil
}
