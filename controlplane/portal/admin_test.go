package portal_test

import (
	"context"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/gantry-iot/gantry/controlplane/authz"
	"github.com/gantry-iot/gantry/controlplane/server/servertest"
	"github.com/gantry-iot/gantry/controlplane/store"
	"github.com/google/go-cmp/cmp"
)

// selectOptions returns the option values of the first <select> whose
// data-testid is testid.
func selectOptions(t *testing.T, body, testid string) []string {
	t.Helper()
	i := strings.Index(body, `data-testid="`+testid+`"`)
	if i < 0 {
		t.Fatalf("no select %q on the page", testid)
	}
	end := strings.Index(body[i:], "</select>")
	var out []string
	for _, m := range regexp.MustCompile(`<option value="([^"]*)"`).FindAllStringSubmatch(body[i:i+end], -1) {
		if m[1] != "" {
			out = append(out, m[1])
		}
	}
	return out
}

func user(t *testing.T, srv *servertest.Server, email string) store.User {
	t.Helper()
	u, err := srv.Store.GetUserByEmail(context.Background(), email)
	if err != nil {
		t.Fatalf("user %s: %v", email, err)
	}
	return u
}

func assignments(t *testing.T, srv *servertest.Server, u store.User) []store.Assignment {
	t.Helper()
	as, err := srv.Store.ListAssignments(context.Background(), u.TenantID, u.ID)
	if err != nil {
		t.Fatal(err)
	}
	return as
}

func hasRole(as []store.Assignment, r authz.RoleID) (store.Assignment, bool) {
	for _, a := range as {
		if a.Role == r {
			return a, true
		}
	}
	return store.Assignment{}, false
}

// TestAdminPagesDeniedToOthers: the admin pages and their actions are
// refused (403 page) to users without the permission, and their
// navigation entries are hidden.
func TestAdminPagesDeniedToOthers(t *testing.T) {
	srv := demo(t)
	me := newBrowser(t, srv.URL)
	me.login("me@nordwerk.example")
	mo := user(t, srv, "mo@nordwerk.example")
	_, body := me.get("/cases")
	for _, nav := range []string{"nav-users", "nav-audit", "nav-roles", "nav-company"} {
		if strings.Contains(body, `data-testid="`+nav+`"`) {
			t.Errorf("Maintenance Engineer sees %s", nav)
		}
	}
	for _, path := range []string{"/users", "/audit", "/roles", "/company", "/users/" + mo.ID + "/delete"} {
		if code, body := me.get(path); code != 403 || !strings.Contains(body, "Not allowed") {
			t.Errorf("GET %s as Maintenance Engineer: %d", path, code)
		}
	}
	posts := map[string]url.Values{
		"/users/invite":               {"email": {"x@nordwerk.example"}, "role": {"machine_operator"}},
		"/users/" + mo.ID + "/roles":  {"role": {"workshop_manager"}},
		"/users/" + mo.ID + "/delete": nil,
		"/users/" + mo.ID + "/roles/" + assignments(t, srv, mo)[0].ID + "/revoke": nil,
		"/roles":   {"name": {"Sneaky"}, "rank": {"10"}},
		"/company": {"primary_color": {"#000000"}},
	}
	for path, form := range posts {
		if code, _ := me.post(path, form); code != 403 {
			t.Errorf("POST %s as Maintenance Engineer: %d", path, code)
		}
	}
	if _, err := srv.Store.GetUserByEmail(context.Background(), "x@nordwerk.example"); err == nil {
		t.Error("invitation by a non-admin created a user")
	}
	if len(assignments(t, srv, mo)) != 1 {
		t.Error("a non-admin changed roles")
	}
	if tn, _ := srv.Store.GetTenant(context.Background(), mo.TenantID); tn.PrimaryColor == "#000000" {
		t.Error("a non-admin changed the appearance")
	}
}

// TestAdminCrossTenantDenied: an admin cannot act on users or assignments
// of another tenant by ID; they look like they do not exist.
func TestAdminCrossTenantDenied(t *testing.T) {
	srv := demo(t)
	admin := newBrowser(t, srv.URL)
	admin.login("admin@nordwerk.example")
	st := user(t, srv, "st@acme.example")
	stAssign := assignments(t, srv, st)[0]
	if code, _ := admin.get("/users/" + st.ID + "/delete"); code != 404 {
		t.Errorf("confirm page for another tenant's user: %d", code)
	}
	if code, _ := admin.post("/users/"+st.ID+"/delete", nil); code != 404 {
		t.Errorf("delete another tenant's user: %d", code)
	}
	if code, _ := admin.post("/users/"+st.ID+"/roles", url.Values{"role": {"machine_operator"}}); code != 404 {
		t.Errorf("assign to another tenant's user: %d", code)
	}
	if code, _ := admin.post("/users/"+st.ID+"/roles/"+stAssign.ID+"/revoke", nil); code != 404 {
		t.Errorf("revoke another tenant's assignment: %d", code)
	}
	if code, _ := admin.post("/users/"+st.ID+"/verify", url.Values{"role": {"machine_operator"}}); code != 404 {
		t.Errorf("verify another tenant's user: %d", code)
	}
	if got := assignments(t, srv, st); len(got) != 1 || got[0].ID != stAssign.ID {
		t.Errorf("another tenant's user changed: %+v", got)
	}
	_, body := admin.get("/users")
	if strings.Contains(body, "st@acme.example") {
		t.Error("users page lists another tenant's user")
	}
}

// TestUsersPage: listing, inviting, assigning, revoking, verifying and
// deleting as Tenant Admin, with service errors next to their forms.
func TestUsersPage(t *testing.T) {
	srv := demo(t)
	admin := newBrowser(t, srv.URL)
	admin.login("admin@nordwerk.example")
	adminUser := user(t, srv, "admin@nordwerk.example")
	_, body := admin.get("/users")
	for _, want := range []string{"me@nordwerk.example", "Maintenance Engineer", "whole tenant", `data-testid="nav-audit"`, `data-testid="nav-roles"`, `data-testid="nav-company"`} {
		if !strings.Contains(body, want) {
			t.Errorf("users page lacks %s", want)
		}
	}
	// A Tenant Admin of an operator with Operator Internal Service may
	// assign every operator role, Tenant Admin included (chosen explicitly).
	wantRoles := []string{"tenant_admin", "maintenance_engineer", "workshop_manager", "machine_operator", "operator_internal_service_cases"}
	got := selectOptions(t, body, "invite-role")
	slices.Sort(got)
	slices.Sort(wantRoles)
	if diff := cmp.Diff(wantRoles, got); diff != "" {
		t.Errorf("invite role options (-want +got):\n%s", diff)
	}

	t.Run("invite", func(t *testing.T) {
		code, body := admin.post("/users/invite", url.Values{"email": {"me@nordwerk.example"}, "role": {"machine_operator"}})
		if code != 409 || !strings.Contains(body, `data-testid="invite-error"`) || !strings.Contains(body, "already exists") || !strings.Contains(body, `value="me@nordwerk.example"`) {
			t.Errorf("duplicate invitation: %d, error or e-mail missing", code)
		}
		if !strings.Contains(body, `<option value="machine_operator" selected>`) {
			t.Error("the chosen role is lost after an error")
		}
		code, body = admin.post("/users/invite", url.Values{"email": {"fresh@nordwerk.example"}, "role": {"machine_operator"}, "scope_kind": {"facility"}, "scope_id": {"no-such-facility"}})
		if code != 400 || !strings.Contains(body, "invite-error") || !strings.Contains(body, `value="no-such-facility"`) {
			t.Errorf("unknown scope: %d", code)
		}
		code, body = admin.post("/users/invite", url.Values{"email": {"fresh@nordwerk.example"}})
		if code != 400 || !strings.Contains(body, "none of your own roles") {
			t.Errorf("admin inviting with default roles: %d", code)
		}
		code, body = admin.post("/users/invite", url.Values{"email": {"fresh@nordwerk.example"}, "role": {"machine_operator"}})
		m := regexp.MustCompile(`href="([^"]*/invite\?token=[^"]+)" data-testid="invite-link"`).FindStringSubmatch(body)
		if code != 200 || m == nil {
			t.Fatalf("invite: %d, no link", code)
		}
		if !strings.Contains(body, `data-testid="invitations"`) {
			t.Error("open invitation not listed")
		}
		link, _ := url.Parse(strings.ReplaceAll(m[1], "&amp;", "&"))
		nb := newBrowser(t, srv.URL)
		nb.post("/invite", url.Values{"token": {link.Query().Get("token")}, "display_name": {"Fresh"}, "password": {"a-long-password"}})
		nb.login2("fresh@nordwerk.example", "a-long-password")
	})

	mo := user(t, srv, "mo@nordwerk.example")
	t.Run("assign and revoke", func(t *testing.T) {
		if code, _ := admin.post("/users/"+mo.ID+"/roles", url.Values{"role": {"workshop_manager"}, "scope_kind": {"tenant"}}); code != 200 {
			t.Fatalf("assign: %d", code) // 303 followed to the users page
		}
		a, ok := hasRole(assignments(t, srv, mo), authz.WorkshopManager)
		if !ok {
			t.Fatal("role not assigned")
		}
		_, body := admin.get("/users")
		if !strings.Contains(body, "/users/"+mo.ID+"/roles/"+a.ID+"/revoke") {
			t.Error("no revoke form for the new assignment")
		}
		if code, _ := admin.post("/users/"+mo.ID+"/roles/"+a.ID+"/revoke", nil); code != 200 {
			t.Fatalf("revoke: %d", code)
		}
		if _, ok := hasRole(assignments(t, srv, mo), authz.WorkshopManager); ok {
			t.Error("role not revoked")
		}
		// Unknown roles are refused next to the form.
		code, body := admin.post("/users/"+mo.ID+"/roles", url.Values{"role": {"first_level_support"}})
		if code != 400 || !strings.Contains(body, `data-testid="assign-error"`) {
			t.Errorf("provider role on an operator user: %d", code)
		}
	})

	t.Run("own admin role cannot be revoked", func(t *testing.T) {
		a, _ := hasRole(assignments(t, srv, adminUser), authz.TenantAdmin)
		code, body := admin.post("/users/"+adminUser.ID+"/roles/"+a.ID+"/revoke", nil)
		if code != 403 || !strings.Contains(body, `data-testid="revoke-error"`) || !strings.Contains(body, "cannot delete themselves or remove their own Tenant Admin role") {
			t.Errorf("revoking own Tenant Admin: %d", code)
		}
		if _, ok := hasRole(assignments(t, srv, adminUser), authz.TenantAdmin); !ok {
			t.Error("own Tenant Admin role removed")
		}
	})

	t.Run("verify pending", func(t *testing.T) {
		r := newBrowser(t, srv.URL)
		r.post("/register", url.Values{"tenant_id": {adminUser.TenantID}, "email": {"self@nordwerk.example"}, "display_name": {"Self Registered"}, "password": {"a-long-password"}})
		self := user(t, srv, "self@nordwerk.example")
		_, body := admin.get("/users")
		if !strings.Contains(body, `data-testid="pending-user" data-email="self@nordwerk.example"`) {
			t.Fatal("pending user not listed")
		}
		if code, body := admin.post("/users/"+self.ID+"/verify", url.Values{"role": {""}}); code != 400 || !strings.Contains(body, `data-testid="verify-error"`) {
			t.Errorf("verify without role: %d", code)
		}
		if code, _ := admin.post("/users/"+self.ID+"/verify", url.Values{"role": {"machine_operator"}}); code != 200 {
			t.Errorf("verify: %d", code)
		}
		r.login2("self@nordwerk.example", "a-long-password")
	})

	t.Run("delete with confirm", func(t *testing.T) {
		wm := user(t, srv, "wm@nordwerk.example")
		code, body := admin.get("/users/" + wm.ID + "/delete")
		if code != 200 || !strings.Contains(body, `data-testid="confirm-delete"`) || !strings.Contains(body, "wm@nordwerk.example") {
			t.Fatalf("confirm page: %d", code)
		}
		if _, err := srv.Store.GetUser(context.Background(), wm.ID); err != nil {
			t.Fatal("the confirm page deleted the user")
		}
		if code, _ := admin.post("/users/"+wm.ID+"/delete", nil); code != 200 {
			t.Errorf("delete: %d", code)
		}
		if _, err := srv.Store.GetUser(context.Background(), wm.ID); err == nil {
			t.Error("user not deleted")
		}
		code, body = admin.post("/users/"+adminUser.ID+"/delete", nil)
		if code != 403 || !strings.Contains(body, `data-testid="delete-error"`) {
			t.Errorf("deleting oneself: %d", code)
		}
	})
}

// TestRoleDropdownFollowsDelegation: the role choices are exactly the
// roles the caller may assign, and the server refuses the others anyway.
func TestRoleDropdownFollowsDelegation(t *testing.T) {
	srv := demo(t)
	ctx := context.Background()
	// Acme's admin may not newly assign the deprecated Service Manager.
	acme := newBrowser(t, srv.URL)
	acme.login("admin@acme.example")
	_, body := acme.get("/users")
	opts := selectOptions(t, body, "invite-role")
	if slices.Contains(opts, "service_manager") || !slices.Contains(opts, "service_technician") {
		t.Errorf("Acme admin role options: %v", opts)
	}
	if !strings.Contains(body, "Service Manager (deprecated)") && !strings.Contains(body, "Service Manager") {
		t.Error("held Service Manager role not listed")
	}
	// Sudhaus lacks Operator Internal Service: no Maintenance Engineer.
	sud := newBrowser(t, srv.URL)
	sud.login("admin@sudhaus.example")
	_, body = sud.get("/users")
	if opts := selectOptions(t, body, "invite-role"); slices.Contains(opts, "maintenance_engineer") || slices.Contains(opts, "operator_internal_service_cases") {
		t.Errorf("Sudhaus admin role options: %v", opts)
	}

	// A user manager of rank 45 (custom role) sees only roles below 45.
	admin := newBrowser(t, srv.URL)
	admin.login("admin@nordwerk.example")
	if code, body := admin.post("/roles", url.Values{"name": {"Shift Lead"}, "rank": {"45"}, "manage_users": {"on"}, "feature_digital_shopfloor": {"read"}}); code != 200 || !strings.Contains(body, "Shift Lead") {
		t.Fatalf("create custom role: %d", code)
	}
	mo := user(t, srv, "mo@nordwerk.example")
	crs, err := srv.Store.ListCustomRoles(ctx, mo.TenantID)
	if err != nil || len(crs) != 1 {
		t.Fatalf("custom roles: %v %v", crs, err)
	}
	if code, _ := admin.post("/users/"+mo.ID+"/roles", url.Values{"role": {string(crs[0].ID)}}); code != 200 {
		t.Fatalf("assign custom role: %d", code)
	}
	lead := newBrowser(t, srv.URL)
	lead.login("mo@nordwerk.example")
	code, body := lead.get("/users")
	if code != 200 {
		t.Fatalf("user manager on /users: %d", code)
	}
	got := selectOptions(t, body, "assign-role")
	slices.Sort(got)
	want := []string{"machine_operator", "operator_internal_service_cases"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("rank-45 manager's role options (-want +got):\n%s", diff)
	}
	if strings.Contains(body, "nav-audit") || strings.Contains(body, "nav-roles") {
		t.Error("a non-admin user manager sees admin-only navigation")
	}
	if code, _ := lead.get("/audit"); code != 403 {
		t.Errorf("non-admin user manager on /audit: %d", code)
	}
	// The server refuses what the dropdown does not offer.
	me := user(t, srv, "me@nordwerk.example")
	code, body = lead.post("/users/"+me.ID+"/roles", url.Values{"role": {"workshop_manager"}})
	if code != 403 || !strings.Contains(body, `data-testid="assign-error"`) || !strings.Contains(body, "not below your highest rank") {
		t.Errorf("assigning a role above one's rank: %d", code)
	}
	if _, ok := hasRole(assignments(t, srv, me), authz.WorkshopManager); ok {
		t.Error("role above the manager's rank assigned")
	}
	code, body = lead.post("/users/"+me.ID+"/roles", url.Values{"role": {"tenant_admin"}})
	if code != 403 || !strings.Contains(body, "only a Tenant Admin may make another user Tenant Admin") {
		t.Errorf("non-admin making a Tenant Admin: %d", code)
	}
}

// TestScopedUserManager: a role that manages users in one facility is
// offered the roles it may assign there, and the server keeps it inside
// that facility.
func TestScopedUserManager(t *testing.T) {
	srv := demo(t)
	ctx := context.Background()
	admin := newBrowser(t, srv.URL)
	admin.login("admin@nordwerk.example")
	admin.post("/roles", url.Values{"name": {"Facility Lead"}, "rank": {"45"}, "manage_users": {"on"}, "feature_digital_shopfloor": {"read"}})
	oisc := user(t, srv, "oisc@nordwerk.example")
	crs, _ := srv.Store.ListCustomRoles(ctx, oisc.TenantID)
	fs, err := srv.Store.ListFacilities(ctx, oisc.TenantID)
	if err != nil || len(crs) != 1 || len(fs) == 0 {
		t.Fatalf("setup: %v %v %v", crs, fs, err)
	}
	if code, body := admin.post("/users/"+oisc.ID+"/roles", url.Values{"role": {string(crs[0].ID)}, "scope_kind": {"facility"}, "scope_id": {fs[0].ID}}); code != 200 || !strings.Contains(body, "Facility "+fs[0].ID) {
		t.Fatalf("assign facility-scoped manager: %d", code)
	}
	lead := newBrowser(t, srv.URL)
	lead.login("oisc@nordwerk.example")
	_, body := lead.get("/users")
	got := selectOptions(t, body, "assign-role")
	slices.Sort(got)
	if diff := cmp.Diff([]string{"machine_operator", "operator_internal_service_cases"}, got); diff != "" {
		t.Errorf("facility manager's role options (-want +got):\n%s", diff)
	}
	mo := user(t, srv, "mo@nordwerk.example")
	if code, body := lead.post("/users/"+mo.ID+"/roles", url.Values{"role": {"operator_internal_service_cases"}}); code != 403 || !strings.Contains(body, "assign-error") {
		t.Errorf("tenant-wide assignment by a facility manager: %d", code)
	}
	if code, _ := lead.post("/users/"+mo.ID+"/roles", url.Values{"role": {"operator_internal_service_cases"}, "scope_kind": {"facility"}, "scope_id": {fs[0].ID}}); code != 200 {
		t.Errorf("assignment inside the facility: %d", code)
	}
	if a, ok := hasRole(assignments(t, srv, mo), authz.OperatorInternalCases); !ok || a.Scope.ID != fs[0].ID {
		t.Errorf("facility assignment not stored: %+v", a)
	}
}

// TestAuditPage: newest first, paged, shows the invitation.
func TestAuditPage(t *testing.T) {
	srv := demo(t)
	admin := newBrowser(t, srv.URL)
	admin.login("admin@nordwerk.example")
	admin.post("/users/invite", url.Values{"email": {"audited@nordwerk.example"}, "role": {"machine_operator"}})
	code, body := admin.get("/audit")
	if code != 200 || !strings.Contains(body, `data-action="user.invite"`) || !strings.Contains(body, "audited@nordwerk.example") {
		t.Fatalf("audit page lacks the invitation: %d", code)
	}
	if !strings.Contains(body, "Admin (Nordwerk Plant)") {
		t.Error("actor shown without a name")
	}
	ids := func(body string) []int {
		var out []int
		for _, m := range regexp.MustCompile(`data-testid="audit-event" data-action="[^"]*"><td>(\d+)</td>`).FindAllStringSubmatch(body, -1) {
			n, _ := strconv.Atoi(m[1])
			out = append(out, n)
		}
		return out
	}
	first := ids(body)
	if len(first) < 3 || !slices.IsSortedFunc(first, func(a, b int) int { return b - a }) {
		t.Fatalf("not newest first: %v", first)
	}
	_, p1 := admin.get("/audit?limit=2")
	page1 := ids(p1)
	m := regexp.MustCompile(`href="/audit\?before=(\d+)&amp;limit=2" data-testid="audit-older"`).FindStringSubmatch(p1)
	if len(page1) != 2 || m == nil {
		t.Fatalf("page 1: %v, older link %v", page1, m)
	}
	_, p2 := admin.get("/audit?before=" + m[1] + "&limit=2")
	page2 := ids(p2)
	if len(page2) == 0 || page2[0] >= page1[1] {
		t.Errorf("page 2 %v does not continue page 1 %v", page2, page1)
	}
	if strings.Contains(p2, "audit-older") != (len(first) > 4) {
		t.Errorf("older link on page 2 with %d events", len(first))
	}
	if !strings.Contains(p2, "audit-newest") || strings.Contains(p1, "audit-newest") {
		t.Error("newest link wrong")
	}
	if diff := cmp.Diff(first[:min(4, len(first))], append(page1, page2...)); diff != "" {
		t.Errorf("pages differ from the full list (-want +got):\n%s", diff)
	}
	// Another tenant's admin does not see Nordwerk's events.
	acme := newBrowser(t, srv.URL)
	acme.login("admin@acme.example")
	if _, body := acme.get("/audit"); strings.Contains(body, "audited@nordwerk.example") {
		t.Error("audit log leaks across tenants")
	}
	if code, _ := admin.get("/audit?before=x"); code != 400 {
		t.Errorf("bad before: %d", code)
	}
}

// TestRolesAndCompanyPages: custom roles and appearance, Tenant Admin only.
func TestRolesAndCompanyPages(t *testing.T) {
	srv := demo(t)
	admin := newBrowser(t, srv.URL)
	admin.login("admin@nordwerk.example")
	code, body := admin.post("/roles", url.Values{"name": {"Night Shift"}, "rank": {"100"}, "feature_digital_shopfloor": {"manage"}})
	if code != 400 || !strings.Contains(body, `data-testid="role-error"`) || !strings.Contains(body, `value="Night Shift"`) || !strings.Contains(body, `<option value="manage" selected>`) {
		t.Errorf("rank 100: %d, error or values missing", code)
	}
	if code, body = admin.post("/roles", url.Values{"name": {"Night Shift"}, "rank": {"20"}, "feature_digital_shopfloor": {"manage"}}); code != 200 || !strings.Contains(body, "Night Shift") {
		t.Fatalf("create: %d", code)
	}
	crs, _ := srv.Store.ListCustomRoles(context.Background(), user(t, srv, "admin@nordwerk.example").TenantID)
	if len(crs) != 1 || crs[0].Features[authz.DigitalShopfloor] != authz.Manage {
		t.Fatalf("stored role: %+v", crs)
	}
	// In use: refused next to the role.
	mo := user(t, srv, "mo@nordwerk.example")
	admin.post("/users/"+mo.ID+"/roles", url.Values{"role": {string(crs[0].ID)}})
	if code, body := admin.post("/roles/"+string(crs[0].ID)+"/delete", nil); code != 409 || !strings.Contains(body, `data-testid="role-delete-error"`) {
		t.Errorf("deleting a role in use: %d", code)
	}
	a, _ := hasRole(assignments(t, srv, mo), crs[0].ID)
	admin.post("/users/"+mo.ID+"/roles/"+a.ID+"/revoke", nil)
	if code, body := admin.post("/roles/"+string(crs[0].ID)+"/delete", nil); code != 200 || strings.Contains(body, "Night Shift") {
		t.Errorf("delete: %d", code)
	}

	code, body = admin.post("/company", url.Values{"name": {"Nordwerk Plant"}, "primary_color": {"red"}, "logo_url": {"https://cdn.example/logo.png"}})
	if code != 400 || !strings.Contains(body, `data-testid="color-error"`) || !strings.Contains(body, `value="https://cdn.example/logo.png"`) {
		t.Errorf("bad colour: %d", code)
	}
	if code, body = admin.post("/company", url.Values{"name": {"Nordwerk Plant GmbH"}, "primary_color": {"#AA3300"}, "logo_url": {"https://cdn.example/logo.png"}, "company_info": {"Werkstr. 1"}}); code != 200 || !strings.Contains(body, "company-saved") {
		t.Fatalf("save company: %d", code)
	}
	// Every user of the tenant sees the colour and logo; other tenants do not.
	me := newBrowser(t, srv.URL)
	me.login("me@nordwerk.example")
	_, body = me.get("/cases")
	if !strings.Contains(body, "--brand: #aa3300") || !strings.Contains(body, `src="https://cdn.example/logo.png"`) || !strings.Contains(body, "Nordwerk Plant GmbH") {
		t.Error("tenant appearance not applied for its users")
	}
	st := newBrowser(t, srv.URL)
	st.login("st@acme.example")
	if _, body = st.get("/cases"); strings.Contains(body, "#aa3300") || strings.Contains(body, "cdn.example") {
		t.Error("appearance leaks to another tenant")
	}
}

// login2 logs in with a password other than the demo one.
func (b *browser) login2(email, password string) {
	b.t.Helper()
	if code, body := b.post("/login", url.Values{"email": {email}, "password": {password}}); code != 200 || !strings.Contains(body, `data-testid="nav"`) {
		b.t.Fatalf("login %s: %d\n%s", email, code, body)
	}
}
