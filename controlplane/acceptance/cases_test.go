package acceptance

import (
	"context"
	"net/http"
	"sort"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/gantry-iot/gantry/controlplane/server/servertest"
	"github.com/gantry-iot/gantry/controlplane/store"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
	"github.com/gantry-iot/gantry/proto/gantry/v1/gantryv1connect"
	"github.com/google/go-cmp/cmp"
)

func (w *world) caseClient(key string) gantryv1connect.CaseServiceClient {
	return gantryv1connect.NewCaseServiceClient(http.DefaultClient, w.srv.URL, connect.WithProtoJSON(), servertest.Bearer(w.actor(key).Token))
}

// listExpect names the cases each list row must return, from the row's rule.
var listExpect = map[string][]string{
	"15": {"S1", "S2", "S3", "SB"},
	"25": {"I1"},
	"26": {"I1", "I3"},
	"27": {"S1", "S2", "S3"},
}

// countCases counts every case in the store through an all-seeing query.
func (w *world) countCases(t *testing.T) int {
	t.Helper()
	n := 0
	for _, key := range []string{"O1", "O2"} {
		cs, err := w.srv.Store.ListCases(context.Background(), store.CaseQuery{OperatorTenant: w.tenants[key].ID,
			SharedScope: store.ScopeSet{All: true}, InternalScope: store.ScopeSet{All: true}, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		n += len(cs)
	}
	return n
}

func runCaseRow(t *testing.T, w *world, r rule) error {
	t.Helper()
	ctx := context.Background()
	c := w.caseClient(r.Actor)
	switch {
	case strings.HasPrefix(r.Action, "create "):
		kind := strings.Fields(r.Action)[1]
		before := w.countCases(t)
		resp, err := c.CreateCase(ctx, connect.NewRequest(&gantryv1.CreateCaseRequest{AssetId: w.id(r.Target), Kind: kind, Title: "row " + r.ID}))
		after := w.countCases(t)
		if err != nil && after != before {
			t.Errorf("row %s: refused but a case was stored", r.ID)
		}
		if err == nil {
			if resp.Msg.Case.Kind != kind || resp.Msg.Case.State != "new" || resp.Msg.Case.AssetId != w.id(r.Target) {
				t.Errorf("row %s: created %v", r.ID, resp.Msg.Case)
			}
		}
		return err
	case r.Action == "read case":
		resp, err := c.GetCase(ctx, connect.NewRequest(&gantryv1.GetCaseRequest{Id: w.id(r.Target)}))
		if err == nil && resp.Msg.Case.Title != r.Target {
			t.Errorf("row %s: read %q, want %s", r.ID, resp.Msg.Case.Title, r.Target)
		}
		return err
	case strings.HasPrefix(r.Action, "list "):
		req := &gantryv1.ListCasesRequest{}
		switch {
		case strings.Contains(r.Action, "My Internal"):
			req.Kind, req.AssignedToMe = "internal", true
		case strings.Contains(r.Action, "kind=internal"):
			req.Kind = "internal"
		case strings.Contains(r.Action, "kind=shared"):
			req.Kind = "shared"
		}
		resp, err := c.ListCases(ctx, connect.NewRequest(req))
		if err != nil {
			return err
		}
		var got []string
		for _, cs := range resp.Msg.Cases {
			got = append(got, cs.Title)
		}
		sort.Strings(got)
		want, ok := listExpect[r.ID]
		if !ok {
			t.Fatalf("row %s: no list expectation", r.ID)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("row %s (%s): listed cases differ (-want +got):\n%s", r.ID, r.Rule, diff)
		}
		return nil
	case r.Action == "set state In Progress":
		resp, err := c.UpdateCase(ctx, connect.NewRequest(&gantryv1.UpdateCaseRequest{Id: w.id(r.Target), State: "in_progress"}))
		if err == nil && resp.Msg.Case.State != "in_progress" {
			t.Errorf("row %s: state = %s", r.ID, resp.Msg.Case.State)
		}
		if err != nil {
			if cs, _ := w.srv.Store.GetCase(ctx, w.id(r.Target)); cs.State != store.StateNew {
				t.Errorf("row %s: refused but state changed to %s", r.ID, cs.State)
			}
		}
		return err
	case strings.HasPrefix(r.Action, "set assignee "):
		assignee := w.actor(strings.TrimPrefix(r.Action, "set assignee "))
		before, _ := w.srv.Store.GetCase(ctx, w.id(r.Target))
		_, err := c.UpdateCase(ctx, connect.NewRequest(&gantryv1.UpdateCaseRequest{Id: w.id(r.Target), AssigneeId: assignee.ID}))
		after, _ := w.srv.Store.GetCase(ctx, w.id(r.Target))
		if err == nil && after.AssigneeID != assignee.ID {
			t.Errorf("row %s: assignee = %s", r.ID, after.AssigneeID)
		}
		if err != nil && after.AssigneeID != before.AssigneeID {
			t.Errorf("row %s: refused but assignee changed", r.ID)
		}
		// Assigning a non-engineer is a bad request, reported as a denial of the rule.
		if connect.CodeOf(err) == connect.CodeInvalidArgument {
			return connect.NewError(connect.CodePermissionDenied, err)
		}
		return err
	case r.Action == "post chat message":
		_, err := c.PostMessage(ctx, connect.NewRequest(&gantryv1.PostMessageRequest{CaseId: w.id(r.Target), Body: "hello from row " + r.ID}))
		return err
	case r.Action == "read chat":
		_, err := c.ListMessages(ctx, connect.NewRequest(&gantryv1.ListMessagesRequest{CaseId: w.id(r.Target)}))
		return err
	}
	t.Fatalf("row %s: no driver for case action %q", r.ID, r.Action)
	return nil
}

func runDomainRow(t *testing.T, w *world, r rule) error {
	t.Helper()
	ctx := context.Background()
	tok := servertest.Bearer(w.actor(r.Actor).Token)
	switch r.Action {
	case "invite customer":
		cu, err := w.srv.Store.CreateCustomer(ctx, store.Customer{TenantID: w.tenants["P1"].ID, ServiceOrgID: w.id("SO1"), Name: "New Customer GmbH"})
		if err != nil {
			t.Fatal(err)
		}
		cc := gantryv1connect.NewCustomerServiceClient(http.DefaultClient, w.srv.URL, connect.WithProtoJSON(), tok)
		resp, err := cc.InviteCustomer(ctx, connect.NewRequest(&gantryv1.InviteCustomerRequest{CustomerId: cu.ID, AdminEmail: "boss@newcustomer.example"}))
		if err != nil {
			return err
		}
		if resp.Msg.Tenant.Kind != "operator" {
			t.Errorf("row %s: new tenant kind %s", r.ID, resp.Msg.Tenant.Kind)
		}
		uc := gantryv1connect.NewUserServiceClient(http.DefaultClient, w.srv.URL, connect.WithProtoJSON())
		acc, err := uc.AcceptInvitation(ctx, connect.NewRequest(&gantryv1.AcceptInvitationRequest{Token: resp.Msg.InvitationToken, DisplayName: "Boss", Password: "a-good-password"}))
		if err != nil {
			t.Fatalf("row %s: accept the customer's invitation: %v", r.ID, err)
		}
		as, err := w.srv.Store.ListAssignments(ctx, resp.Msg.Tenant.Id, acc.Msg.User.Id)
		if err != nil || len(as) != 1 || as[0].Role != "tenant_admin" {
			t.Errorf("row %s: first user of the new tenant holds %v (%v), want Tenant Admin", r.ID, as, err)
		}
		return nil
	case "accept asset proposal":
		sc := gantryv1connect.NewShopfloorServiceClient(http.DefaultClient, w.srv.URL, connect.WithProtoJSON(), tok)
		resp, err := sc.AcceptAssetProposal(ctx, connect.NewRequest(&gantryv1.AcceptAssetProposalRequest{Id: w.id("PX"), FacilityId: w.id("F1")}))
		if err == nil {
			if resp.Msg.Asset.ProviderTenantId != w.tenants["P1"].ID {
				t.Errorf("row %s: accepted asset not linked to P1: %v", r.ID, resp.Msg.Asset)
			}
			cm, _ := w.srv.Store.GetCustomerMachine(ctx, w.id("CM-PX"))
			if cm.AssetID != resp.Msg.Asset.Id {
				t.Errorf("row %s: customer machine not linked to the new asset", r.ID)
			}
		} else if p, _ := w.srv.Store.GetProposal(ctx, w.id("PX")); p.State != store.ProposalPending {
			t.Errorf("row %s: refused but proposal is %s", r.ID, p.State)
		}
		return err
	case "edit remote-access template":
		mc := gantryv1connect.NewMachineModelServiceClient(http.DefaultClient, w.srv.URL, connect.WithProtoJSON(), tok)
		m := &gantryv1.MachineModel{Id: w.id("M1"), Name: "M1", RemoteAccess: &gantryv1.RemoteAccessTemplate{ConnectionTypes: []string{"vnc"}, VncTargets: []string{"10.0.0.11:5900"}}}
		_, err := mc.UpdateMachineModel(ctx, connect.NewRequest(&gantryv1.UpdateMachineModelRequest{Model: m}))
		stored, _ := w.srv.Store.GetMachineModel(ctx, w.id("M1"))
		changed := strings.Contains(string(stored.RemoteAccessJSON), "10.0.0.11:5900")
		if changed != (err == nil) {
			t.Errorf("row %s: call error %v but template changed = %v", r.ID, err, changed)
		}
		return err
	}
	t.Fatalf("row %s: no driver for domain action %q", r.ID, r.Action)
	return nil
}
