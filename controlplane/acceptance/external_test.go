package acceptance

import (
	"context"
	"net/http"
	"sort"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/gantry-iot/gantry/controlplane/authz"
	"github.com/gantry-iot/gantry/controlplane/server/servertest"
	"github.com/gantry-iot/gantry/controlplane/store"
	"github.com/gantry-iot/gantry/controlplane/store/storetest"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
	"github.com/gantry-iot/gantry/proto/gantry/v1/gantryv1connect"
)

// addExternal creates O1/EXT (Machine Operator, tenant-wide) and lets P1's
// Customer Data Manager restrict it as an external user of customer C1.
func addExternal(t *testing.T, w *world) *gantryv1.ExternalUser {
	t.Helper()
	ctx := context.Background()
	o1 := w.tenants["O1"].ID
	u, err := w.srv.Store.CreateUser(ctx, store.User{TenantID: o1, Email: "ext@O1.example", DisplayName: "External", PasswordHash: servertest.PasswordHash(t), Status: store.UserActive},
		[]store.RoleGrant{{Role: authz.MachineOperator, Scope: authz.Scope{Kind: authz.ScopeTenant, ID: o1}}}, "")
	if err != nil {
		t.Fatal(err)
	}
	w.actors["O1/EXT"] = actor{ID: u.ID, Tenant: o1, Token: w.srv.Session(t, u.ID, o1)}
	cc := gantryv1connect.NewCustomerServiceClient(http.DefaultClient, w.srv.URL, connect.WithProtoJSON(), servertest.Bearer(w.actor("P1/CDM").Token))
	ext := &gantryv1.ExternalUser{UserId: u.ID, CustomerId: w.id("C1"), AddressFacilityId: w.id("F1"), ReadFacilityIds: []string{w.id("F1")},
		WriteFacilityIds: []string{w.id("F1")}, Contact: &gantryv1.ContactPerson{Name: "Eva Extern", Email: "eva@o1.example", Phone: "+49 30 1234"},
		ResponsibleUserIds: []string{w.actor("P1/ST").ID}, ResponsibleGroups: []string{"Support"}, TicketTypes: []string{"repair"},
		RestrictStatuses: true, Statuses: []string{"closed"}}
	r, err := cc.SetExternalUser(ctx, connect.NewRequest(&gantryv1.SetExternalUserRequest{ExternalUser: ext}))
	if err != nil {
		t.Fatalf("CDM defines external user: %v", err)
	}
	return r.Msg.ExternalUser
}

func TestExternalUsers(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		w := newWorld(t, newStore(t))
		ctx := context.Background()
		ext := addExternal(t, w)
		c := w.caseClient("O1/EXT")
		create := func(asset, kind, tt, resp string) error {
			_, err := c.CreateCase(ctx, connect.NewRequest(&gantryv1.CreateCaseRequest{AssetId: w.id(asset), Kind: kind, Title: "ext", TicketType: tt, Responsible: resp}))
			return err
		}
		st := w.actor("P1/ST").ID

		t.Run("contact person is kept", func(t *testing.T) {
			cc := gantryv1connect.NewCustomerServiceClient(http.DefaultClient, w.srv.URL, connect.WithProtoJSON(), servertest.Bearer(w.actor("P1/CDM").Token))
			r, err := cc.GetExternalUser(ctx, connect.NewRequest(&gantryv1.GetExternalUserRequest{UserId: ext.UserId}))
			if err != nil || r.Msg.ExternalUser.Contact.GetEmail() != "eva@o1.example" {
				t.Fatalf("get: %v %v", r, err)
			}
			p2 := gantryv1connect.NewCustomerServiceClient(http.DefaultClient, w.srv.URL, connect.WithProtoJSON(), servertest.Bearer(w.actor("P2/ST").Token))
			if _, err := p2.GetExternalUser(ctx, connect.NewRequest(&gantryv1.GetExternalUserRequest{UserId: ext.UserId})); connect.CodeOf(err) != connect.CodeNotFound {
				t.Errorf("P2 reads the profile: %v", err)
			}
		})
		t.Run("read addresses limit what is visible", func(t *testing.T) {
			r, err := c.ListCases(ctx, connect.NewRequest(&gantryv1.ListCasesRequest{}))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, cs := range r.Msg.Cases {
				got = append(got, cs.Title)
			}
			sort.Strings(got)
			if strings.Join(got, ",") != "I1,S1,S2" {
				t.Errorf("external user lists %v, want only cases on F1 assets (I1, S1, S2)", got)
			}
			if _, err := c.GetCase(ctx, connect.NewRequest(&gantryv1.GetCaseRequest{Id: w.id("S3")})); connect.CodeOf(err) != connect.CodeNotFound {
				t.Errorf("S3 on F2 readable: %v", err)
			}
		})
		t.Run("write addresses limit where cases are opened", func(t *testing.T) {
			if err := create("A1", "shared", "repair", st); err != nil {
				t.Errorf("open on F1: %v", err)
			}
			if err := create("A3", "shared", "repair", st); connect.CodeOf(err) != connect.CodePermissionDenied {
				t.Errorf("open on F2: %v", err)
			}
		})
		t.Run("cases go only to responsible persons or groups", func(t *testing.T) {
			if err := create("A1", "shared", "repair", "group:Support"); err != nil {
				t.Errorf("to group Support: %v", err)
			}
			for _, r := range []string{w.actor("P1/1LS").ID, "group:Sales", ""} {
				if err := create("A1", "shared", "repair", r); connect.CodeOf(err) != connect.CodeInvalidArgument {
					t.Errorf("to %q: %v", r, err)
				}
			}
		})
		t.Run("only allowed ticket types", func(t *testing.T) {
			if err := create("A1", "shared", "question", st); connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "repair") {
				t.Errorf("ticket type question: %v", err)
			}
		})
		t.Run("only allowed statuses", func(t *testing.T) {
			if _, err := c.UpdateCase(ctx, connect.NewRequest(&gantryv1.UpdateCaseRequest{Id: w.id("S1"), State: "in_progress"})); connect.CodeOf(err) != connect.CodePermissionDenied {
				t.Errorf("set in_progress: %v", err)
			}
			if _, err := c.UpdateCase(ctx, connect.NewRequest(&gantryv1.UpdateCaseRequest{Id: w.id("S1"), State: "closed"})); err != nil {
				t.Errorf("set closed: %v", err)
			}
		})
		t.Run("no internal cases, no assignee changes", func(t *testing.T) {
			if err := create("A1", "internal", "repair", st); connect.CodeOf(err) != connect.CodePermissionDenied {
				t.Errorf("external user opened an internal case")
			}
			if _, err := c.UpdateCase(ctx, connect.NewRequest(&gantryv1.UpdateCaseRequest{Id: w.id("S2"), ClearAssignee: true})); connect.CodeOf(err) != connect.CodePermissionDenied {
				t.Errorf("assignee change: %v", err)
			}
		})
		t.Run("defining external users", func(t *testing.T) {
			set := func(who string, e *gantryv1.ExternalUser) error {
				cc := gantryv1connect.NewCustomerServiceClient(http.DefaultClient, w.srv.URL, connect.WithProtoJSON(), servertest.Bearer(w.actor(who).Token))
				_, err := cc.SetExternalUser(ctx, connect.NewRequest(&gantryv1.SetExternalUserRequest{ExternalUser: e}))
				return err
			}
			base := func() *gantryv1.ExternalUser {
				return &gantryv1.ExternalUser{UserId: ext.UserId, CustomerId: w.id("C1"), AddressFacilityId: w.id("F1"), ResponsibleGroups: []string{"Support"}, TicketTypes: []string{"repair"}}
			}
			if err := set("P1/ST", base()); connect.CodeOf(err) != connect.CodePermissionDenied {
				t.Errorf("Service Technician defines external users: %v", err)
			}
			other := base()
			other.UserId = w.actor("O2/MO").ID
			if err := set("P1/CDM", other); connect.CodeOf(err) != connect.CodeNotFound {
				t.Errorf("user of another customer: %v", err)
			}
			badSite := base()
			badSite.WriteFacilityIds = []string{w.id("FB")}
			if err := set("P1/CDM", badSite); connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "write_facility_ids[0]") {
				t.Errorf("site of another customer: %v", err)
			}
			noResp := base()
			noResp.ResponsibleGroups = nil
			if err := set("P1/CDM", noResp); connect.CodeOf(err) != connect.CodeInvalidArgument {
				t.Errorf("no responsible: %v", err)
			}
			badStatus := base()
			badStatus.Statuses = []string{"archived"}
			if err := set("P1/CDM", badStatus); connect.CodeOf(err) != connect.CodeInvalidArgument {
				t.Errorf("bad status: %v", err)
			}
		})
	})
}
