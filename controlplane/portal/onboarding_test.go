package portal_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/gantry-iot/gantry/controlplane/server/servertest"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
	"github.com/gantry-iot/gantry/proto/gantry/v1/gantryv1connect"
)

// TestInvitationAndRegistrationPages: the link an invitation carries opens
// a page that creates the account; self-registration leaves a pending user.
func TestInvitationAndRegistrationPages(t *testing.T) {
	srv := demo(t)
	ctx := context.Background()
	admin, err := srv.Store.GetUserByEmail(ctx, "admin@nordwerk.example")
	if err != nil {
		t.Fatal(err)
	}
	users := gantryv1connect.NewUserServiceClient(http.DefaultClient, srv.URL, connect.WithProtoJSON(), servertest.Bearer(srv.Session(t, admin.ID, admin.TenantID)))
	inv, err := users.InviteUser(ctx, connect.NewRequest(&gantryv1.InviteUserRequest{Email: "newbie@nordwerk.example", Roles: []*gantryv1.RoleGrant{{RoleId: "machine_operator"}}}))
	if err != nil {
		t.Fatal(err)
	}
	link, err := url.Parse(inv.Msg.Link)
	if err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t, srv.URL)
	if code, body := b.get(link.RequestURI()); code != 200 || !strings.Contains(body, inv.Msg.Token) {
		t.Fatalf("invitation link: %d", code)
	}
	if code, body := b.post("/invite", url.Values{"token": {inv.Msg.Token}, "display_name": {"New Bie"}, "password": {"short"}}); code != 400 || !strings.Contains(body, `data-testid="password-error"`) {
		t.Errorf("short password not shown next to the field: %d", code)
	}
	if code, body := b.post("/invite", url.Values{"token": {inv.Msg.Token}, "display_name": {"New Bie"}, "password": {"a-long-password"}}); code != 200 || !strings.Contains(body, "invite-done") {
		t.Fatalf("accept: %d\n%s", code, body)
	}
	if code, body := b.post("/invite", url.Values{"token": {inv.Msg.Token}, "display_name": {"Again"}, "password": {"a-long-password"}}); code != 400 || !strings.Contains(body, "already used") {
		t.Errorf("second use: %d", code)
	}
	nb := newBrowser(t, srv.URL)
	if code, body := nb.post("/login", url.Values{"email": {"newbie@nordwerk.example"}, "password": {"a-long-password"}}); code != 200 || !strings.Contains(body, "nav-cases") {
		t.Errorf("the invited user cannot log in: %d", code)
	}

	r := newBrowser(t, srv.URL)
	if code, body := r.post("/register", url.Values{"tenant_id": {admin.TenantID}, "email": {"bad"}, "display_name": {"X"}, "password": {"a-long-password"}}); code != 400 || !strings.Contains(body, "field-error") {
		t.Errorf("bad e-mail: %d", code)
	}
	if code, body := r.post("/register", url.Values{"tenant_id": {admin.TenantID}, "email": {"self@nordwerk.example"}, "display_name": {"Self"}, "password": {"a-long-password"}}); code != 200 || !strings.Contains(body, "register-done") {
		t.Fatalf("register: %d", code)
	}
	if code, body := r.post("/login", url.Values{"email": {"self@nordwerk.example"}, "password": {"a-long-password"}}); code != 401 || !strings.Contains(body, "waiting for verification") {
		t.Errorf("pending user logs in: %d", code)
	}
}
