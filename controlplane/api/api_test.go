package api_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/gantry-iot/gantry/controlplane/authz"
	"github.com/gantry-iot/gantry/controlplane/server/servertest"
	"github.com/gantry-iot/gantry/controlplane/store"
	"github.com/gantry-iot/gantry/controlplane/store/storetest"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
	"github.com/gantry-iot/gantry/proto/gantry/v1/gantryv1connect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// fixture: two operator tenants and a provider, each with an admin and a
// few users, sessions ready.
type fixture struct {
	srv     *servertest.Server
	tenants map[string]store.Tenant
	users   map[string]store.User
	tokens  map[string]string
}

func newFixture(t *testing.T, st store.Store) *fixture {
	t.Helper()
	ctx := context.Background()
	f := &fixture{srv: servertest.Start(t, st), tenants: map[string]store.Tenant{}, users: map[string]store.User{}, tokens: map[string]string{}}
	hash := servertest.PasswordHash(t)
	add := func(key string, u store.User, ten store.Tenant) {
		f.users[key] = u
		f.tokens[key] = f.srv.Session(t, u.ID, ten.ID)
	}
	for _, spec := range []struct {
		key   string
		kind  authz.TenantKind
		roles []authz.TenantRole
		users map[string]authz.RoleID
	}{
		{"A", authz.KindOperator, []authz.TenantRole{authz.OperatorInternalService}, map[string]authz.RoleID{"wm": authz.WorkshopManager, "me": authz.MaintenanceEngineer, "mo": authz.MachineOperator}},
		{"B", authz.KindOperator, nil, map[string]authz.RoleID{"wm": authz.WorkshopManager, "mo": authz.MachineOperator}},
		{"P", authz.KindServiceProvider, nil, map[string]authz.RoleID{"st": authz.ServiceTechnician}},
	} {
		ten, admin, err := st.CreateTenantWithAdmin(ctx, store.Tenant{Name: "Tenant " + spec.key, Kind: spec.kind, TenantRoles: spec.roles},
			store.User{Email: "admin@" + strings.ToLower(spec.key) + ".example", DisplayName: "Admin " + spec.key, PasswordHash: hash, Status: store.UserActive})
		if err != nil {
			t.Fatal(err)
		}
		f.tenants[spec.key] = ten
		add(spec.key+"/admin", admin, ten)
		for name, role := range spec.users {
			u, err := st.CreateUser(ctx, store.User{TenantID: ten.ID, Email: name + "@" + strings.ToLower(spec.key) + ".example", DisplayName: name, PasswordHash: hash, Status: store.UserActive},
				[]store.RoleGrant{{Role: role, Scope: authz.Scope{Kind: authz.ScopeTenant, ID: ten.ID}}}, "")
			if err != nil {
				t.Fatal(err)
			}
			add(spec.key+"/"+name, u, ten)
		}
	}
	return f
}

func (f *fixture) users_(key string) gantryv1connect.UserServiceClient {
	return gantryv1connect.NewUserServiceClient(http.DefaultClient, f.srv.URL, connect.WithProtoJSON(), servertest.Bearer(f.tokens[key]))
}

func (f *fixture) roles(key string) gantryv1connect.RoleServiceClient {
	return gantryv1connect.NewRoleServiceClient(http.DefaultClient, f.srv.URL, connect.WithProtoJSON(), servertest.Bearer(f.tokens[key]))
}

// postJSON calls a procedure with a raw JSON body and returns status and body.
func (f *fixture) postJSON(t *testing.T, procedure, token, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, f.srv.URL+procedure, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := f.srv.HTTP.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: response is not JSON (%d): %s", procedure, resp.StatusCode, b)
	}
	return resp.StatusCode, m
}

func TestLoginLogoutAndSessions(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		f := newFixture(t, newStore(t))
		ctx := context.Background()
		sess := gantryv1connect.NewSessionServiceClient(http.DefaultClient, f.srv.URL, connect.WithProtoJSON())
		if _, err := sess.Login(ctx, connect.NewRequest(&gantryv1.LoginRequest{Email: "admin@a.example", Password: "wrong-password"})); connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Fatalf("wrong password: want unauthenticated, got %v", err)
		}
		if _, err := sess.Login(ctx, connect.NewRequest(&gantryv1.LoginRequest{Email: "nobody@a.example", Password: servertest.Password})); connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Fatalf("unknown user: want unauthenticated, got %v", err)
		}
		resp, err := sess.Login(ctx, connect.NewRequest(&gantryv1.LoginRequest{Email: "ADMIN@a.example", Password: servertest.Password}))
		if err != nil {
			t.Fatalf("login: %v", err)
		}
		if resp.Msg.ExpiresAt.AsTime().Before(time.Now()) {
			t.Errorf("session already expired: %v", resp.Msg.ExpiresAt.AsTime())
		}
		authed := gantryv1connect.NewSessionServiceClient(http.DefaultClient, f.srv.URL, connect.WithProtoJSON(), servertest.Bearer(resp.Msg.Token))
		who, err := authed.WhoAmI(ctx, connect.NewRequest(&gantryv1.WhoAmIRequest{}))
		if err != nil {
			t.Fatalf("whoami: %v", err)
		}
		if who.Msg.User.Email != "admin@a.example" || !who.Msg.ManageUsers || len(who.Msg.Features) != 0 {
			t.Errorf("whoami = %v; want admin@a.example managing users with no operational features", who.Msg)
		}
		if _, err := authed.Logout(ctx, connect.NewRequest(&gantryv1.LogoutRequest{})); err != nil {
			t.Fatalf("logout: %v", err)
		}
		if _, err := authed.WhoAmI(ctx, connect.NewRequest(&gantryv1.WhoAmIRequest{})); connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Fatalf("after logout: want unauthenticated, got %v", err)
		}
		// Expired session.
		expired := f.srv.Session(t, f.users["A/mo"].ID, f.tenants["A"].ID)
		f.srv.Identity.SetClock(func() time.Time { return time.Now().Add(2 * time.Hour) })
		t.Cleanup(func() { f.srv.Identity.SetClock(time.Now) })
		ex := gantryv1connect.NewSessionServiceClient(http.DefaultClient, f.srv.URL, connect.WithProtoJSON(), servertest.Bearer(expired))
		if _, err := ex.WhoAmI(ctx, connect.NewRequest(&gantryv1.WhoAmIRequest{})); connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Fatalf("expired session: want unauthenticated, got %v", err)
		}
	})
}

func TestInvitationFlow(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		f := newFixture(t, newStore(t))
		ctx := context.Background()
		admin := f.users_("A/admin")
		// The admin's only role is Tenant Admin, which is never a default: roles must be named.
		if _, err := admin.InviteUser(ctx, connect.NewRequest(&gantryv1.InviteUserRequest{Email: "new@a.example"})); connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Fatalf("invite without roles by a pure admin: want invalid argument, got %v", err)
		}
		inv, err := admin.InviteUser(ctx, connect.NewRequest(&gantryv1.InviteUserRequest{Email: "new@a.example",
			Roles: []*gantryv1.RoleGrant{{RoleId: string(authz.MaintenanceEngineer)}}}))
		if err != nil {
			t.Fatalf("invite: %v", err)
		}
		if !strings.Contains(inv.Msg.Link, inv.Msg.Token) || inv.Msg.Token == "" {
			t.Errorf("link %q does not carry the token", inv.Msg.Link)
		}
		anon := gantryv1connect.NewUserServiceClient(http.DefaultClient, f.srv.URL, connect.WithProtoJSON())
		if _, err := anon.AcceptInvitation(ctx, connect.NewRequest(&gantryv1.AcceptInvitationRequest{Token: inv.Msg.Token, DisplayName: "New", Password: "short"})); connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Fatalf("short password: want invalid argument, got %v", err)
		}
		acc, err := anon.AcceptInvitation(ctx, connect.NewRequest(&gantryv1.AcceptInvitationRequest{Token: inv.Msg.Token, DisplayName: "New User", Password: "a-good-password"}))
		if err != nil {
			t.Fatalf("accept: %v", err)
		}
		if _, err := anon.AcceptInvitation(ctx, connect.NewRequest(&gantryv1.AcceptInvitationRequest{Token: inv.Msg.Token, DisplayName: "Again", Password: "a-good-password"})); connect.CodeOf(err) != connect.CodeFailedPrecondition {
			t.Fatalf("second use: want failed precondition, got %v", err)
		}
		as, err := f.srv.Store.ListAssignments(ctx, f.tenants["A"].ID, acc.Msg.User.Id)
		if err != nil || len(as) != 1 || as[0].Role != authz.MaintenanceEngineer {
			t.Fatalf("invitee assignments = %v, %v; want Maintenance Engineer", as, err)
		}
		// Expired invitation.
		inv2, err := admin.InviteUser(ctx, connect.NewRequest(&gantryv1.InviteUserRequest{Email: "late@a.example", Roles: []*gantryv1.RoleGrant{{RoleId: string(authz.MachineOperator)}}}))
		if err != nil {
			t.Fatal(err)
		}
		f.srv.Identity.SetClock(func() time.Time { return time.Now().Add(8 * 24 * time.Hour) })
		_, err = anon.AcceptInvitation(ctx, connect.NewRequest(&gantryv1.AcceptInvitationRequest{Token: inv2.Msg.Token, DisplayName: "Late", Password: "a-good-password"}))
		f.srv.Identity.SetClock(time.Now)
		if connect.CodeOf(err) != connect.CodeFailedPrecondition || !strings.Contains(err.Error(), "expired") {
			t.Fatalf("expired invitation: want failed precondition mentioning expiry, got %v", err)
		}
	})
}

func TestDefaultInviteeRoles(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		f := newFixture(t, newStore(t))
		ctx := context.Background()
		// A custom user-manager role (rank 60) held together with Workshop Manager:
		// the invitee gets Workshop Manager (below 60), not the manager role itself.
		r, err := f.roles("A/admin").CreateCustomRole(ctx, connect.NewRequest(&gantryv1.CreateCustomRoleRequest{Name: "Site Lead", Rank: 60, ManageUsers: true,
			Features: []*gantryv1.FeatureLevel{{Feature: "digital_shopfloor", Level: "manage"}}}))
		if err != nil {
			t.Fatalf("create custom role: %v", err)
		}
		if _, err := f.roles("A/admin").AssignRole(ctx, connect.NewRequest(&gantryv1.AssignRoleRequest{UserId: f.users["A/wm"].ID, RoleId: r.Msg.Role.Id})); err != nil {
			t.Fatalf("assign custom role: %v", err)
		}
		inv, err := f.users_("A/wm").InviteUser(ctx, connect.NewRequest(&gantryv1.InviteUserRequest{Email: "colleague@a.example"}))
		if err != nil {
			t.Fatalf("invite with default roles: %v", err)
		}
		if len(inv.Msg.Roles) != 1 || inv.Msg.Roles[0].RoleId != string(authz.WorkshopManager) {
			t.Errorf("default invitee roles = %v, want exactly Workshop Manager", inv.Msg.Roles)
		}
	})
}

func TestSelfRegistrationAndVerification(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		f := newFixture(t, newStore(t))
		ctx := context.Background()
		anon := gantryv1connect.NewUserServiceClient(http.DefaultClient, f.srv.URL, connect.WithProtoJSON())
		reg, err := anon.Register(ctx, connect.NewRequest(&gantryv1.RegisterRequest{TenantId: f.tenants["A"].ID, Email: "self@a.example", DisplayName: "Self", Password: "a-good-password"}))
		if err != nil {
			t.Fatalf("register: %v", err)
		}
		if reg.Msg.User.Status != "pending" {
			t.Fatalf("status = %q, want pending", reg.Msg.User.Status)
		}
		sess := gantryv1connect.NewSessionServiceClient(http.DefaultClient, f.srv.URL, connect.WithProtoJSON())
		if _, err := sess.Login(ctx, connect.NewRequest(&gantryv1.LoginRequest{Email: "self@a.example", Password: "a-good-password"})); connect.CodeOf(err) != connect.CodeFailedPrecondition {
			t.Fatalf("pending login: want failed precondition, got %v", err)
		}
		// Another tenant's admin cannot see or verify them.
		if _, err := f.users_("B/admin").VerifyUser(ctx, connect.NewRequest(&gantryv1.VerifyUserRequest{Id: reg.Msg.User.Id, Roles: []*gantryv1.RoleGrant{{RoleId: "machine_operator"}}})); connect.CodeOf(err) != connect.CodeNotFound {
			t.Fatalf("foreign verify: want not found, got %v", err)
		}
		if _, err := f.users_("A/admin").VerifyUser(ctx, connect.NewRequest(&gantryv1.VerifyUserRequest{Id: reg.Msg.User.Id})); connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Fatalf("verify without roles: want invalid argument, got %v", err)
		}
		v, err := f.users_("A/admin").VerifyUser(ctx, connect.NewRequest(&gantryv1.VerifyUserRequest{Id: reg.Msg.User.Id, Roles: []*gantryv1.RoleGrant{{RoleId: "machine_operator"}}}))
		if err != nil || v.Msg.User.Status != "active" {
			t.Fatalf("verify: %v %v", v, err)
		}
		if _, err := sess.Login(ctx, connect.NewRequest(&gantryv1.LoginRequest{Email: "self@a.example", Password: "a-good-password"})); err != nil {
			t.Fatalf("login after verification: %v", err)
		}
	})
}

func TestDelegation(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		f := newFixture(t, newStore(t))
		ctx := context.Background()
		admin := f.roles("A/admin")
		r, err := admin.CreateCustomRole(ctx, connect.NewRequest(&gantryv1.CreateCustomRoleRequest{Name: "Shift Lead", Rank: 50, ManageUsers: true}))
		if err != nil {
			t.Fatalf("create custom role: %v", err)
		}
		if _, err := admin.AssignRole(ctx, connect.NewRequest(&gantryv1.AssignRoleRequest{UserId: f.users["A/wm"].ID, RoleId: r.Msg.Role.Id})); err != nil {
			t.Fatal(err)
		}
		wm := f.roles("A/wm")
		for _, tc := range []struct {
			role string
			want connect.Code
		}{
			{"machine_operator", 0},                            // rank 30 < 50
			{"workshop_manager", connect.CodePermissionDenied}, // equal rank
			{"tenant_admin", connect.CodePermissionDenied},     // higher
		} {
			_, err := wm.AssignRole(ctx, connect.NewRequest(&gantryv1.AssignRoleRequest{UserId: f.users["A/me"].ID, RoleId: tc.role}))
			if connect.CodeOf(err) != tc.want && !(tc.want == 0 && err == nil) {
				t.Errorf("shift lead assigns %s: got %v, want code %v", tc.role, err, tc.want)
			}
			if err != nil && !strings.Contains(err.Error(), "rank") && !strings.Contains(err.Error(), "Tenant Admin") {
				t.Errorf("denial %q does not explain the rank rule", err)
			}
		}
		// Tenant Admin exception.
		if _, err := admin.AssignRole(ctx, connect.NewRequest(&gantryv1.AssignRoleRequest{UserId: f.users["A/me"].ID, RoleId: "tenant_admin"})); err != nil {
			t.Errorf("admin makes another admin: %v", err)
		}
		// The same for a service-provider tenant: Tenant Admin exists once
		// per tenant kind and must resolve for each kind.
		if _, err := f.roles("P/admin").AssignRole(ctx, connect.NewRequest(&gantryv1.AssignRoleRequest{UserId: f.users["P/st"].ID, RoleId: "tenant_admin"})); err != nil {
			t.Errorf("provider admin makes another provider admin: %v", err)
		}
		// Tenant Admin must be tenant-wide.
		_, err = admin.AssignRole(ctx, connect.NewRequest(&gantryv1.AssignRoleRequest{UserId: f.users["A/mo"].ID, RoleId: "tenant_admin", Scope: &gantryv1.Scope{Kind: "facility", Id: "F1"}}))
		if err == nil {
			t.Errorf("scoped Tenant Admin was accepted")
		}
		// Roles the tenant does not offer.
		if _, err := f.roles("B/admin").AssignRole(ctx, connect.NewRequest(&gantryv1.AssignRoleRequest{UserId: f.users["B/mo"].ID, RoleId: "maintenance_engineer"})); connect.CodeOf(err) != connect.CodePermissionDenied {
			t.Errorf("ME in tenant without Operator Internal Service: got %v", err)
		}
		// Provider roles in an operator tenant.
		if _, err := admin.AssignRole(ctx, connect.NewRequest(&gantryv1.AssignRoleRequest{UserId: f.users["A/mo"].ID, RoleId: "service_technician"})); connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("provider role in operator tenant: got %v", err)
		}
	})
}

// TestConcurrentAdminDemotion: two admins demote each other at once through
// the API; the tenant always keeps an admin.
func TestConcurrentAdminDemotion(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		f := newFixture(t, newStore(t))
		ctx := context.Background()
		for i := 0; i < 10; i++ {
			other := f.users["A/wm"]
			if _, err := f.roles("A/admin").AssignRole(ctx, connect.NewRequest(&gantryv1.AssignRoleRequest{UserId: other.ID, RoleId: "tenant_admin"})); err != nil {
				t.Fatal(err)
			}
			tokB := f.tokens["A/wm"]
			adminA := f.users["A/admin"]
			find := func(uid string) string {
				as, _ := f.srv.Store.ListAssignments(ctx, f.tenants["A"].ID, uid)
				for _, a := range as {
					if a.Role == authz.TenantAdmin {
						return a.ID
					}
				}
				return ""
			}
			aAssign, bAssign := find(adminA.ID), find(other.ID)
			var wg sync.WaitGroup
			errs := make([]error, 2)
			start := make(chan struct{})
			for j, call := range []struct{ tok, id string }{{f.tokens["A/admin"], bAssign}, {tokB, aAssign}} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					c := gantryv1connect.NewRoleServiceClient(http.DefaultClient, f.srv.URL, connect.WithProtoJSON(), servertest.Bearer(call.tok))
					_, errs[j] = c.RevokeRole(ctx, connect.NewRequest(&gantryv1.RevokeRoleRequest{AssignmentId: call.id}))
				}()
			}
			close(start)
			wg.Wait()
			admins := 0
			for _, uid := range []string{adminA.ID, other.ID} {
				if find(uid) != "" {
					admins++
				}
			}
			if admins == 0 {
				t.Fatalf("round %d: both demotions succeeded (%v, %v): tenant has no admin", i, errs[0], errs[1])
			}
			if errs[0] == nil && errs[1] == nil {
				t.Fatalf("round %d: both calls succeeded", i)
			}
			// Restore: whoever is still admin re-promotes the other for the next round.
			if find(adminA.ID) == "" {
				f.tokens["A/admin"], f.tokens["A/wm"] = f.tokens["A/wm"], f.tokens["A/admin"]
				f.users["A/admin"], f.users["A/wm"] = f.users["A/wm"], f.users["A/admin"]
			}
		}
	})
}

// TestBadInput: malformed or invalid requests get a 4xx with a JSON body
// that says what was wrong, never a 500.
func TestBadInput(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		f := newFixture(t, newStore(t))
		tok := f.tokens["A/admin"]
		long := strings.Repeat("x", 300)
		for _, tc := range []struct {
			name, proc, token, body string
			status                  int
			msg                     string
		}{
			{"malformed JSON", "/gantry.v1.UserService/InviteUser", tok, `{"email": `, 400, ""},
			{"unknown field", "/gantry.v1.UserService/InviteUser", tok, `{"email":"x@a.example","bogus":1}`, 400, "bogus"},
			{"wrong type", "/gantry.v1.UserService/InviteUser", tok, `{"email":42}`, 400, ""},
			{"bad email", "/gantry.v1.UserService/InviteUser", tok, `{"email":"not-an-email","roles":[{"roleId":"machine_operator"}]}`, 400, "e-mail"},
			{"over-long email", "/gantry.v1.UserService/InviteUser", tok, `{"email":"` + long + `@a.example","roles":[{"roleId":"machine_operator"}]}`, 400, "longer"},
			{"over-long name", "/gantry.v1.TenantService/UpdateTenant", tok, `{"name":"` + long + `"}`, 400, "at most"},
			{"bad colour", "/gantry.v1.TenantService/UpdateTenant", tok, `{"primaryColor":"red"}`, 400, "#"},
			{"unknown role", "/gantry.v1.RoleService/AssignRole", tok, `{"userId":"` + f.users["A/mo"].ID + `","roleId":"wizard"}`, 400, "unknown role"},
			{"bad scope kind", "/gantry.v1.RoleService/AssignRole", tok, `{"userId":"` + f.users["A/mo"].ID + `","roleId":"machine_operator","scope":{"kind":"galaxy","id":"x"}}`, 400, "scope kind"},
			{"other tenant's user", "/gantry.v1.RoleService/AssignRole", tok, `{"userId":"` + f.users["B/mo"].ID + `","roleId":"machine_operator"}`, 404, "not found"},
			{"other tenant id", "/gantry.v1.TenantService/GetTenant", tok, `{"id":"` + f.tenants["B"].ID + `"}`, 404, "not found"},
			{"garbage id", "/gantry.v1.UserService/DeleteUser", tok, `{"id":"a b\u0000c"}`, 400, "not a valid ID"},
			{"empty id", "/gantry.v1.UserService/DeleteUser", tok, `{}`, 400, "required"},
			{"register unknown tenant", "/gantry.v1.UserService/Register", "", `{"tenantId":"nope","email":"z@z.example","displayName":"Z","password":"long-enough-pw"}`, 404, "tenant"},
			{"no token", "/gantry.v1.UserService/ListUsers", "", `{}`, 401, "log in"},
			{"bad token", "/gantry.v1.UserService/ListUsers", "garbage", `{}`, 401, "log in"},
			{"bad custom level", "/gantry.v1.RoleService/CreateCustomRole", tok, `{"name":"X","rank":10,"features":[{"feature":"digital_shopfloor","level":"godmode"}]}`, 400, "level"},
			{"custom feature of other kind", "/gantry.v1.RoleService/CreateCustomRole", tok, `{"name":"X","rank":10,"features":[{"feature":"customer_management","level":"read"}]}`, 400, "customer"},
			{"custom rank too high", "/gantry.v1.RoleService/CreateCustomRole", tok, `{"name":"X","rank":100}`, 400, "rank"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				status, body := f.postJSON(t, tc.proc, tc.token, tc.body)
				if status != tc.status {
					t.Fatalf("status = %d, want %d (body %v)", status, tc.status, body)
				}
				msg, _ := body["message"].(string)
				if msg == "" || !strings.Contains(strings.ToLower(msg), strings.ToLower(tc.msg)) {
					t.Errorf("message %q should mention %q", msg, tc.msg)
				}
			})
		}
	})
}

// TestTenantIsolation walks every endpoint that takes an ID with another
// tenant's IDs: nothing is revealed or changed.
func TestTenantIsolation(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		f := newFixture(t, newStore(t))
		ctx := context.Background()
		foreignUser := f.users["B/mo"].ID
		foreignAssign, err := f.srv.Store.ListAssignments(ctx, f.tenants["B"].ID, foreignUser)
		if err != nil || len(foreignAssign) == 0 {
			t.Fatal(err)
		}
		tok := f.tokens["A/admin"]
		for _, tc := range []struct{ proc, body string }{
			{"/gantry.v1.UserService/GetUser", `{"id":"` + foreignUser + `"}`},
			{"/gantry.v1.UserService/DeleteUser", `{"id":"` + foreignUser + `"}`},
			{"/gantry.v1.UserService/VerifyUser", `{"id":"` + foreignUser + `","roles":[{"roleId":"machine_operator"}]}`},
			{"/gantry.v1.RoleService/AssignRole", `{"userId":"` + foreignUser + `","roleId":"machine_operator"}`},
			{"/gantry.v1.RoleService/RevokeRole", `{"assignmentId":"` + foreignAssign[0].ID + `"}`},
			{"/gantry.v1.RoleService/ListAssignments", `{"userId":"` + foreignUser + `"}`},
			{"/gantry.v1.TenantService/GetTenant", `{"id":"` + f.tenants["B"].ID + `"}`},
			{"/gantry.v1.TenantService/UpdateTenant", `{"id":"` + f.tenants["B"].ID + `","name":"Hijacked"}`},
			{"/gantry.v1.RoleService/DeleteCustomRole", `{"id":"custom:00000000-0000-0000-0000-000000000000"}`},
		} {
			status, body := f.postJSON(t, tc.proc, tok, tc.body)
			if status != http.StatusNotFound {
				t.Errorf("%s with another tenant's ID: status %d (%v), want 404", tc.proc, status, body)
			}
		}
		// Lists only ever contain the caller's tenant.
		users, err := f.users_("A/admin").ListUsers(ctx, connect.NewRequest(&gantryv1.ListUsersRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range users.Msg.Users {
			if u.TenantId != f.tenants["A"].ID {
				t.Errorf("ListUsers leaked %s of tenant %s", u.Email, u.TenantId)
			}
		}
		audit := gantryv1connect.NewAuditServiceClient(http.DefaultClient, f.srv.URL, connect.WithProtoJSON(), servertest.Bearer(f.tokens["B/admin"]))
		evs, err := audit.ListAudit(ctx, connect.NewRequest(&gantryv1.ListAuditRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs.Msg.Events {
			if strings.Contains(e.Detail, "a.example") {
				t.Errorf("tenant B's audit log shows tenant A's event %v", e)
			}
		}
		// Nothing changed in B.
		if u, err := f.srv.Store.GetUser(ctx, foreignUser); err != nil || u.Status != store.UserActive {
			t.Errorf("foreign user changed: %v %v", u, err)
		}
		if ten, _ := f.srv.Store.GetTenant(ctx, f.tenants["B"].ID); ten.Name == "Hijacked" {
			t.Errorf("foreign tenant renamed")
		}
	})
}

// TestNonAdminsCannotManage: operational roles cannot list, invite,
// delete or read the audit log.
func TestNonAdminsCannotManage(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		f := newFixture(t, newStore(t))
		tok := f.tokens["A/wm"]
		for _, tc := range []struct{ proc, body string }{
			{"/gantry.v1.UserService/ListUsers", `{}`},
			{"/gantry.v1.UserService/InviteUser", `{"email":"x@a.example","roles":[{"roleId":"machine_operator"}]}`},
			{"/gantry.v1.UserService/DeleteUser", `{"id":"` + f.users["A/mo"].ID + `"}`},
			{"/gantry.v1.AuditService/ListAudit", `{}`},
			{"/gantry.v1.TenantService/UpdateTenant", `{"name":"X"}`},
			{"/gantry.v1.RoleService/CreateCustomRole", `{"name":"X","rank":10}`},
		} {
			status, body := f.postJSON(t, tc.proc, tok, tc.body)
			if status != http.StatusForbidden {
				t.Errorf("%s as Workshop Manager: status %d (%v), want 403", tc.proc, status, body)
			}
		}
	})
}

// TestAuditLog: identity changes are recorded with actor, action and target.
func TestAuditLog(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		f := newFixture(t, newStore(t))
		ctx := context.Background()
		if _, err := f.roles("A/admin").AssignRole(ctx, connect.NewRequest(&gantryv1.AssignRoleRequest{UserId: f.users["A/mo"].ID, RoleId: "workshop_manager"})); err != nil {
			t.Fatal(err)
		}
		if _, err := f.users_("A/admin").DeleteUser(ctx, connect.NewRequest(&gantryv1.DeleteUserRequest{Id: f.users["A/me"].ID})); err != nil {
			t.Fatal(err)
		}
		audit := gantryv1connect.NewAuditServiceClient(http.DefaultClient, f.srv.URL, connect.WithProtoJSON(), servertest.Bearer(f.tokens["A/admin"]))
		evs, err := audit.ListAudit(ctx, connect.NewRequest(&gantryv1.ListAuditRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		var actions []string
		for _, e := range evs.Msg.Events {
			if e.ActorId == f.users["A/admin"].ID {
				actions = append(actions, e.Action+" "+e.Target)
			}
		}
		want := []string{"user.delete " + f.users["A/me"].ID, "role.assign " + f.users["A/mo"].ID}
		if len(actions) < 2 || actions[0] != want[0] || actions[1] != want[1] {
			t.Errorf("audit (newest first) = %v, want to start with %v", actions, want)
		}
	})
}

// TestGRPC: the same services over real gRPC (grpc-go client, h2c).
func TestGRPC(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		f := newFixture(t, newStore(t))
		conn, err := grpc.NewClient(strings.TrimPrefix(f.srv.URL, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		login, err := gantryv1.NewSessionServiceClient(conn).Login(ctx, &gantryv1.LoginRequest{Email: "admin@b.example", Password: servertest.Password})
		if err != nil {
			t.Fatalf("grpc login: %v", err)
		}
		actx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+login.Token)
		users, err := gantryv1.NewUserServiceClient(conn).ListUsers(actx, &gantryv1.ListUsersRequest{})
		if err != nil {
			t.Fatalf("grpc list users: %v", err)
		}
		if len(users.Users) != 3 {
			t.Errorf("tenant B has %d users over gRPC, want 3", len(users.Users))
		}
		_, err = gantryv1.NewUserServiceClient(conn).DeleteUser(actx, &gantryv1.DeleteUserRequest{Id: login.User.Id})
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("self-delete over gRPC: %v, want PermissionDenied", err)
		}
	})
}

func TestOpenAPIServed(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		f := newFixture(t, newStore(t))
		resp, err := f.srv.HTTP.Get(f.srv.URL + "/api/openapi.json")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var doc struct {
			Paths map[string]any `json:"paths"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{"/gantry.v1.SessionService/Login", "/gantry.v1.UserService/InviteUser", "/gantry.v1.RoleService/AssignRole"} {
			if _, ok := doc.Paths[p]; !ok {
				t.Errorf("OpenAPI document lacks %s", p)
			}
		}
	})
}
