package authz

import (
	"errors"
	"fmt"
	"strings"
)

// Contains reports whether scope s (held in tenant) covers loc.
func (s Scope) Contains(loc Location, tenant string) bool {
	if loc.Tenant != tenant {
		return false
	}
	if s.Kind == ScopeTenant {
		return s.ID == tenant
	}
	for _, n := range loc.Chain {
		if n == s {
			return true
		}
	}
	return false
}

// role resolves a role the principal may hold: a custom role of its
// tenant or a built-in role of its tenant kind. ok is false for unknown
// roles and for roles whose required tenant role the tenant lacks.
func (p *Principal) role(id RoleID) (r *Role, ok bool) {
	if cr, found := p.CustomRoles[id]; found {
		if cr.Kind != p.TenantKind && cr.Kind != "" {
			return nil, false
		}
		r = &cr
	} else if r, ok = builtinFor(p.TenantKind, id); !ok {
		return nil, false
	}
	if r.Requires != "" && !hasTenantRole(p.TenantRoles, r.Requires) {
		return nil, false
	}
	return r, true
}

func hasTenantRole(rs []TenantRole, r TenantRole) bool {
	for _, x := range rs {
		if x == r {
			return true
		}
	}
	return false
}

// locationFor picks the location of r that applies to p, or a reason why
// none does.
func locationFor(p *Principal, r *Resource) (Location, string) {
	if r.Owner.Tenant == p.Tenant {
		return r.Owner, ""
	}
	if r.TenantPrivate {
		return Location{}, "it is internal to another tenant and never leaves the operator tenant"
	}
	for _, l := range r.Shared {
		if l.Tenant == p.Tenant {
			return l, ""
		}
	}
	return Location{}, "it belongs to another tenant and is not shared with yours"
}

// levelAt is the highest level of f that p's assignments give at loc.
func (p *Principal) levelAt(f Feature, loc Location) Level {
	best := None
	for i := range p.Assignments {
		a := &p.Assignments[i]
		if !a.Scope.Contains(loc, p.Tenant) {
			continue
		}
		r, ok := p.role(a.Role)
		if !ok {
			continue
		}
		if l := r.Features[f]; l > best {
			best = l
		}
	}
	return best
}

// LevelAt returns the level of feature f that p has on r.
func LevelAt(p Principal, f Feature, r Resource) Level {
	if p.Pending {
		return None
	}
	loc, why := locationFor(&p, &r)
	if why != "" {
		return None
	}
	return p.levelAt(f, loc)
}

// Decide reports whether p has at least min of feature f on r, with a
// reason naming the missing permission when not.
func Decide(p Principal, f Feature, min Level, r Resource) Decision {
	if p.Pending {
		return Decision{Reason: "your account is pending verification by a tenant admin"}
	}
	loc, why := locationFor(&p, &r)
	if why != "" {
		return Decision{Reason: fmt.Sprintf("needs %s = %s, but %s", FeatureName(f), min, why)}
	}
	have := p.levelAt(f, loc)
	if have >= min {
		return Decision{Allowed: true}
	}
	reason := fmt.Sprintf("needs %s = %s here; your roles give %s", FeatureName(f), min, have)
	if p.onlyAdmin() {
		reason += " (Tenant Admin has no operational permissions)"
	}
	return Decision{Reason: reason}
}

// onlyAdmin reports whether every assignment of p is Tenant Admin.
func (p *Principal) onlyAdmin() bool {
	if len(p.Assignments) == 0 {
		return false
	}
	for _, a := range p.Assignments {
		if a.Role != TenantAdmin {
			return false
		}
	}
	return true
}

// ScopesWith returns the scopes of p's assignments whose role gives at
// least min of f. List queries turn them into filters.
func ScopesWith(p Principal, f Feature, min Level) []Scope {
	if p.Pending {
		return nil
	}
	var out []Scope
	for _, a := range p.Assignments {
		if r, ok := p.role(a.Role); ok && r.Features[f] >= min {
			out = append(out, a.Scope)
		}
	}
	return out
}

// CanManageUsers reports whether p may manage users at target (Tenant
// Admin, or a role with user management whose scope contains target).
func CanManageUsers(p Principal, target Location) Decision {
	if p.Pending {
		return Decision{Reason: "your account is pending verification by a tenant admin"}
	}
	if target.Tenant != p.Tenant {
		return Decision{Reason: "users of other tenants are managed by their own admins"}
	}
	for _, a := range p.Assignments {
		if r, ok := p.role(a.Role); ok && r.ManageUsers && a.Scope.Contains(target, p.Tenant) {
			return Decision{Allowed: true}
		}
	}
	return Decision{Reason: "needs user management (Tenant Admin, or a role with \"manage users\" whose scope covers this)"}
}

// ErrDenied is the sentinel wrapped by every delegation refusal.
var ErrDenied = errors.New("permission denied")

// DenyError is a refusal with a reason a user can act on.
type DenyError struct{ Reason string }

func (e *DenyError) Error() string { return e.Reason }

// Unwrap makes errors.Is(err, ErrDenied) true.
func (e *DenyError) Unwrap() error { return ErrDenied }

func deny(format string, args ...any) error { return &DenyError{Reason: fmt.Sprintf(format, args...)} }

// highestRank is the highest rank among p's counting assignments.
func (p *Principal) highestRank() int {
	best := 0
	for _, a := range p.Assignments {
		if r, ok := p.role(a.Role); ok && r.Rank > best {
			best = r.Rank
		}
	}
	return best
}

// CheckAssign decides whether actor may give role at target (the scope's
// location) to a user of a tenant described by tenant. Rules (SPEC §2,
// seed 003): user management in a scope covering target; the role must
// belong to the tenant's kind and be offered by the tenant; deprecated
// roles cannot be newly assigned; Tenant Admin only tenant-wide and only
// by a Tenant Admin; any other role only strictly below the actor's
// highest rank.
func CheckAssign(actor Principal, role Role, target Location, tenant TenantInfo) error {
	if actor.Pending {
		return deny("your account is pending verification by a tenant admin")
	}
	if target.Tenant != actor.Tenant || tenant.Kind != actor.TenantKind {
		return deny("roles can only be assigned inside your own tenant")
	}
	if role.Kind != tenant.Kind && role.Kind != "" {
		return deny("%s is a role of %s tenants, not of this %s tenant", role.Name, role.Kind, tenant.Kind)
	}
	if role.Requires != "" && !hasTenantRole(tenant.TenantRoles, role.Requires) {
		return deny("%s needs the %s tenant role, which the tenant lacks", role.Name, tenantRoleName(role.Requires))
	}
	if !role.Assignable {
		return deny("%s can still be held but not newly assigned; use the roles that replace it", role.Name)
	}
	if role.ID == TenantAdmin && len(target.Chain) > 0 {
		return deny("Tenant Admin assignments are always tenant-wide; leave the scope empty")
	}
	managing := false
	isAdmin := false
	for _, a := range actor.Assignments {
		r, ok := actor.role(a.Role)
		if !ok || !r.ManageUsers || !a.Scope.Contains(target, actor.Tenant) {
			continue
		}
		managing = true
		isAdmin = isAdmin || r.ID == TenantAdmin
	}
	if !managing {
		return deny("you may not manage users and roles here: that needs Tenant Admin or a role with \"manage users\" whose scope covers the target")
	}
	if role.ID == TenantAdmin {
		if isAdmin {
			return nil
		}
		return deny("only a Tenant Admin may make another user Tenant Admin")
	}
	if top := actor.highestRank(); role.Rank >= top {
		return deny("%s has rank %d, which is not below your highest rank %d; you can only assign roles ranked below your own", role.Name, role.Rank, top)
	}
	return nil
}

func tenantRoleName(r TenantRole) string {
	if r == OperatorInternalService {
		return "Operator Internal Service"
	}
	return string(r)
}

// DefaultInviteeRoles returns the inviter's own assignments that the
// inviter may pass on (seed 003: "the same role as the colleague who
// invites them"), never Tenant Admin.
func DefaultInviteeRoles(actor Principal, tenant TenantInfo) []Assignment {
	var out []Assignment
	seen := map[Assignment]bool{}
	for _, a := range actor.Assignments {
		if a.Role == TenantAdmin || seen[a] {
			continue
		}
		r, ok := actor.role(a.Role)
		if !ok {
			continue
		}
		loc := Location{Tenant: actor.Tenant}
		if a.Scope.Kind != ScopeTenant {
			loc.Chain = []Scope{a.Scope}
		}
		if CheckAssign(actor, *r, loc, tenant) == nil {
			out = append(out, a)
			seen[a] = true
		}
	}
	return out
}

// ValidateCustomRole checks an individual role for a tenant kind.
func ValidateCustomRole(kind TenantKind, r Role) error {
	name := strings.TrimSpace(r.Name)
	if name == "" || len(name) > 64 {
		return deny("a role name of 1..64 characters is required")
	}
	if _, clash := RoleByName(kind, name); clash {
		return deny("%q is the name of a built-in role; choose another", name)
	}
	if r.Rank < 1 || r.Rank > 99 {
		return deny("rank must be between 1 and 99 (Tenant Admin is 100); got %d", r.Rank)
	}
	offered := map[Feature]bool{}
	for _, f := range kindFeatures[kind] {
		offered[f] = true
	}
	for f, l := range r.Features {
		if !offered[f] {
			return deny("feature %s is not offered to %s tenants", f, kind)
		}
		if l > Manage {
			return deny("feature %s: level must be none, read or manage", f)
		}
	}
	return nil
}
