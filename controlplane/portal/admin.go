package portal

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/gantry-iot/gantry/controlplane/authz"
	"github.com/gantry-iot/gantry/controlplane/errkind"
	"github.com/gantry-iot/gantry/controlplane/identity"
	"github.com/gantry-iot/gantry/controlplane/store"
)

// Tenant admin pages: users (invite, verify, assign and revoke roles,
// delete), the audit log, custom roles and company information. Every
// action goes through package identity, which enforces the rules; the
// pages only hide what the caller may not do.

// formFail is a failed form submission: which form (Form, and Key for
// per-user or per-assignment forms), the service's message and the values
// that were posted, so the page shows the error next to that form and
// keeps what the user typed.
type formFail struct {
	Form, Key string
	Message   string
	Values    url.Values
}

// On reports whether the failure belongs to the form form/key.
func (f *formFail) On(form, key string) bool { return f != nil && f.Form == form && f.Key == key }

// Value is the posted value of field name if the failure belongs to form/key.
func (f *formFail) Value(form, key, name string) string {
	if f.On(form, key) {
		return f.Values.Get(name)
	}
	return ""
}

// failFrom turns a user-facing service error into a formFail; other
// errors (internal, not found) return nil and are shown as error pages.
func failFrom(err error, r *http.Request, form, key string) *formFail {
	k := errkind.Of(err)
	if k == nil || k == errkind.NotFound {
		return nil
	}
	msg := err.Error()
	var ke *errkind.Error
	if errors.As(err, &ke) {
		msg = ke.Message
		if ke.Field != "" {
			msg = ke.Field + ": " + ke.Message
		}
	}
	_ = r.ParseForm()
	return &formFail{Form: form, Key: key, Message: msg, Values: r.PostForm}
}

// failStatus is the HTTP status of a re-rendered form with an error.
func failStatus(err error) int {
	switch errkind.Of(err) {
	case errkind.Denied:
		return http.StatusForbidden
	case errkind.Precondition, errkind.Conflict:
		return http.StatusConflict
	}
	return http.StatusBadRequest
}

// grantFrom reads a role grant (role, scope_kind, scope_id) from a form.
// An empty or "tenant" scope kind means tenant-wide.
func grantFrom(r *http.Request) store.RoleGrant {
	g := store.RoleGrant{Role: authz.RoleID(r.PostFormValue("role"))}
	if k := r.PostFormValue("scope_kind"); k != "" && k != string(authz.ScopeTenant) {
		g.Scope = authz.Scope{Kind: authz.ScopeKind(k), ID: r.PostFormValue("scope_id")}
	}
	return g
}

// scopeKinds are the hierarchy levels a role can be scoped to, per tenant kind.
func scopeKinds(k authz.TenantKind) []authz.ScopeKind {
	switch k {
	case authz.KindOperator:
		return []authz.ScopeKind{authz.ScopeFacility, authz.ScopeAsset}
	case authz.KindServiceProvider:
		return []authz.ScopeKind{authz.ScopeServiceOrg, authz.ScopeCustomer, authz.ScopeCustomerMachine}
	}
	return nil
}

func scopeText(s authz.Scope) string {
	if s.Kind == authz.ScopeTenant || s.Kind == "" {
		return "whole tenant"
	}
	return stateLabel(string(s.Kind)) + " " + s.ID
}

type assignmentView struct {
	ID, Role, Scope string
	RoleID          authz.RoleID
	// Revocable: the caller may assign this role, so the page offers to
	// revoke it; the service decides (own or last Tenant Admin, scope).
	Revocable bool
}

type userRow struct {
	store.User
	Assignments []assignmentView
}

// usersPage lists the tenant's users with their roles and scopes.
func (p *Portal) usersPage(w http.ResponseWriter, r *http.Request, c *identity.Caller) {
	p.renderUsers(w, r, c, http.StatusOK, nil, nil)
}

func (p *Portal) renderUsers(w http.ResponseWriter, r *http.Request, c *identity.Caller, status int, fail *formFail, inv *identity.Invite) {
	ctx := r.Context()
	us, err := p.id.ListUsers(ctx, c)
	if err != nil {
		p.fail(w, c, err)
		return
	}
	as, err := p.id.TenantAssignments(ctx, c)
	if err != nil {
		p.fail(w, c, err)
		return
	}
	// The roles the caller may assign: identity.AssignableRoles applies
	// the delegation rules of authz.CheckAssign, the same check AssignRole,
	// InviteUser and VerifyUser make.
	roles, err := p.id.AssignableRoles(ctx, c)
	if err != nil {
		p.fail(w, c, err)
		return
	}
	assignable := map[authz.RoleID]bool{}
	for _, rv := range roles {
		assignable[rv.ID] = true
	}
	invs, err := p.id.ListInvitations(ctx, c)
	if err != nil {
		p.fail(w, c, err)
		return
	}
	var open []store.Invitation
	now := time.Now()
	for _, in := range invs {
		if in.UsedAt == nil && in.ExpiresAt.After(now) {
			open = append(open, in)
		}
	}
	var active, pending []userRow
	for _, u := range us {
		row := userRow{User: u}
		for _, a := range as[u.ID] {
			row.Assignments = append(row.Assignments, assignmentView{ID: a.ID, RoleID: a.Role, Role: c.RoleName(a.Role), Scope: scopeText(a.Scope), Revocable: assignable[a.Role]})
		}
		if u.Status == store.UserPending {
			pending = append(pending, row)
		} else {
			active = append(active, row)
		}
	}
	if fail == nil {
		fail = &formFail{}
	}
	p.render(w, status, "users", map[string]any{
		"Nav": navFor(c, "users"), "Users": active, "Pending": pending, "Invitations": open,
		"Roles": roles, "ScopeKinds": scopeKinds(c.Tenant.Kind), "Fail": fail, "Invite": inv,
		"RoleName": c.RoleName,
	})
}

// mutated finishes a users-page action: on success redirect back, on a
// user-facing error re-render the page with the error next to the form.
func (p *Portal) mutated(w http.ResponseWriter, r *http.Request, c *identity.Caller, err error, form, key, anchor string) {
	if err == nil {
		http.Redirect(w, r, "/users"+anchor, http.StatusSeeOther)
		return
	}
	f := failFrom(err, r, form, key)
	if f == nil {
		p.fail(w, c, err)
		return
	}
	p.renderUsers(w, r, c, failStatus(err), f, nil)
}

func (p *Portal) inviteUser(w http.ResponseWriter, r *http.Request, c *identity.Caller) {
	var roles []store.RoleGrant
	if g := grantFrom(r); g.Role != "" {
		roles = append(roles, g)
	}
	inv, err := p.id.InviteUser(r.Context(), c, r.PostFormValue("email"), roles)
	if err != nil {
		p.mutated(w, r, c, err, "invite", "", "")
		return
	}
	p.renderUsers(w, r, c, http.StatusOK, nil, &inv)
}

func (p *Portal) assignRole(w http.ResponseWriter, r *http.Request, c *identity.Caller) {
	id := r.PathValue("id")
	_, err := p.id.AssignRole(r.Context(), c, id, grantFrom(r))
	p.mutated(w, r, c, err, "assign", id, "#u-"+id)
}

func (p *Portal) revokeRole(w http.ResponseWriter, r *http.Request, c *identity.Caller) {
	err := p.id.RevokeRole(r.Context(), c, r.PathValue("aid"))
	p.mutated(w, r, c, err, "revoke", r.PathValue("aid"), "#u-"+r.PathValue("id"))
}

func (p *Portal) verifyUser(w http.ResponseWriter, r *http.Request, c *identity.Caller) {
	id := r.PathValue("id")
	var roles []store.RoleGrant
	if g := grantFrom(r); g.Role != "" {
		roles = append(roles, g)
	}
	_, err := p.id.VerifyUser(r.Context(), c, id, roles)
	p.mutated(w, r, c, err, "verify", id, "#u-"+id)
}

// deleteUserPage is the confirm step before deleting a user.
func (p *Portal) deleteUserPage(w http.ResponseWriter, r *http.Request, c *identity.Caller) {
	u, err := p.id.GetUser(r.Context(), c, r.PathValue("id"))
	if err != nil {
		p.fail(w, c, err)
		return
	}
	p.render(w, http.StatusOK, "userdelete", map[string]any{"Nav": navFor(c, "users"), "User": u})
}

func (p *Portal) deleteUser(w http.ResponseWriter, r *http.Request, c *identity.Caller) {
	id := r.PathValue("id")
	err := p.id.DeleteUser(r.Context(), c, id)
	if err == nil {
		http.Redirect(w, r, "/users", http.StatusSeeOther)
		return
	}
	u, gerr := p.id.GetUser(r.Context(), c, id)
	if gerr != nil || failFrom(err, r, "delete", id) == nil {
		p.fail(w, c, err)
		return
	}
	p.render(w, failStatus(err), "userdelete", map[string]any{"Nav": navFor(c, "users"), "User": u, "Error": err.Error()})
}

// auditPageSize is the audit page's default length.
const auditPageSize = 50

// auditPage shows the tenant's audit log, newest first, paged by event ID.
func (p *Portal) auditPage(w http.ResponseWriter, r *http.Request, c *identity.Caller) {
	q := r.URL.Query()
	limit := auditPageSize
	if n, err := strconv.Atoi(q.Get("limit")); err == nil && n > 0 && n <= 500 {
		limit = n
	}
	var before int64
	if q.Get("before") != "" {
		b, err := strconv.ParseInt(q.Get("before"), 10, 64)
		if err != nil || b < 0 {
			p.fail(w, c, errkind.Invalidf("before", "must be an event number"))
			return
		}
		before = b
	}
	evs, err := p.id.ListAudit(r.Context(), c, limit+1, before)
	if err != nil {
		p.fail(w, c, err)
		return
	}
	var older int64
	if len(evs) > limit {
		evs = evs[:limit]
		older = evs[len(evs)-1].ID
	}
	names := map[string]string{"system": "system", c.Tenant.ID: c.Tenant.Name}
	if us, err := p.id.ListUsers(r.Context(), c); err == nil {
		for _, u := range us {
			names[u.ID] = u.DisplayName + " <" + u.Email + ">"
		}
	}
	type row struct {
		store.AuditEvent
		Actor, TargetName string
	}
	rows := make([]row, 0, len(evs))
	for _, e := range evs {
		rr := row{AuditEvent: e, Actor: e.ActorID, TargetName: e.Target}
		if n, ok := names[e.ActorID]; ok {
			rr.Actor = n
		}
		if n, ok := names[e.Target]; ok {
			rr.TargetName = n
		}
		rows = append(rows, rr)
	}
	p.render(w, http.StatusOK, "audit", map[string]any{"Nav": navFor(c, "audit"), "Events": rows, "Older": older, "Limit": limit, "Paged": before != 0})
}

// requireAdminPage refuses pages that only a Tenant Admin may use. The
// actions behind them are checked again by package identity.
func requireAdminPage(c *identity.Caller, what string) error {
	if !c.IsTenantAdmin() {
		return errkind.Deniedf("only a Tenant Admin may %s", what)
	}
	return nil
}

type levelOption struct {
	Feature authz.Feature
	Name    string
}

// rolesPage lists the tenant's roles and lets the admin define custom ones.
func (p *Portal) rolesPage(w http.ResponseWriter, r *http.Request, c *identity.Caller) {
	p.renderRoles(w, r, c, http.StatusOK, nil)
}

func (p *Portal) renderRoles(w http.ResponseWriter, r *http.Request, c *identity.Caller, status int, fail *formFail) {
	if err := requireAdminPage(c, "manage roles"); err != nil {
		p.fail(w, c, err)
		return
	}
	roles, err := p.id.ListRoles(r.Context(), c, false)
	if err != nil {
		p.fail(w, c, err)
		return
	}
	var feats []levelOption
	for _, f := range authz.FeaturesOf(c.Tenant.Kind) {
		feats = append(feats, levelOption{Feature: f, Name: authz.FeatureName(f)})
	}
	if fail == nil {
		fail = &formFail{}
	}
	p.render(w, status, "roles", map[string]any{"Nav": navFor(c, "roles"), "Roles": roles, "Features": feats,
		"Levels": []authz.Level{authz.None, authz.Read, authz.Manage}, "Fail": fail,
		"FeatureName": authz.FeatureName})
}

func (p *Portal) createRole(w http.ResponseWriter, r *http.Request, c *identity.Caller) {
	spec := identity.CustomRoleSpec{Name: r.PostFormValue("name"), ManageUsers: r.PostFormValue("manage_users") == "on", Features: map[authz.Feature]authz.Level{}}
	var err error
	if spec.Rank, err = strconv.Atoi(r.PostFormValue("rank")); err != nil {
		err = errkind.Invalidf("rank", "a whole number between 1 and 99 is required")
	}
	for _, f := range authz.FeaturesOf(c.Tenant.Kind) {
		if err != nil {
			break
		}
		v := r.PostFormValue("feature_" + string(f))
		if v == "" {
			continue
		}
		l, perr := authz.ParseLevel(v)
		if perr != nil {
			err = errkind.Invalidf(string(f), "%s", perr.Error())
			break
		}
		if l > authz.None {
			spec.Features[f] = l
		}
	}
	if err == nil {
		_, err = p.id.CreateCustomRole(r.Context(), c, spec)
	}
	if err != nil {
		if f := failFrom(err, r, "create", ""); f != nil {
			p.renderRoles(w, r, c, failStatus(err), f)
			return
		}
		p.fail(w, c, err)
		return
	}
	http.Redirect(w, r, "/roles", http.StatusSeeOther)
}

func (p *Portal) deleteRole(w http.ResponseWriter, r *http.Request, c *identity.Caller) {
	id := r.PathValue("id")
	if err := p.id.DeleteCustomRole(r.Context(), c, id); err != nil {
		if f := failFrom(err, r, "delete", id); f != nil {
			p.renderRoles(w, r, c, failStatus(err), f)
			return
		}
		p.fail(w, c, err)
		return
	}
	http.Redirect(w, r, "/roles", http.StatusSeeOther)
}

// companyPage edits company information and appearance.
func (p *Portal) companyPage(w http.ResponseWriter, r *http.Request, c *identity.Caller) {
	if err := requireAdminPage(c, "change company information and appearance"); err != nil {
		p.fail(w, c, err)
		return
	}
	t, err := p.id.GetTenant(r.Context(), c, "")
	if err != nil {
		p.fail(w, c, err)
		return
	}
	p.render(w, http.StatusOK, "company", map[string]any{"Nav": navFor(c, "company"), "In": identity.TenantUpdate{
		Name: t.Name, CompanyInfo: t.CompanyInfo, LogoURL: t.LogoURL, PrimaryColor: t.PrimaryColor}, "Saved": r.URL.Query().Get("saved") != ""})
}

func (p *Portal) updateCompany(w http.ResponseWriter, r *http.Request, c *identity.Caller) {
	in := identity.TenantUpdate{Name: r.PostFormValue("name"), CompanyInfo: r.PostFormValue("company_info"),
		LogoURL: r.PostFormValue("logo_url"), PrimaryColor: r.PostFormValue("primary_color")}
	if _, err := p.id.UpdateTenant(r.Context(), c, "", in); err != nil {
		var ke *errkind.Error
		if errkind.Of(err) == nil || errkind.Of(err) == errkind.Denied || !errors.As(err, &ke) {
			p.fail(w, c, err)
			return
		}
		p.render(w, failStatus(err), "company", map[string]any{"Nav": navFor(c, "company"), "In": in, "Err": ke})
		return
	}
	http.Redirect(w, r, "/company?saved=1", http.StatusSeeOther)
}
