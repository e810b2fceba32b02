package acceptance

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/gantry-iot/gantry/controlplane/server/servertest"
	"github.com/gantry-iot/gantry/controlplane/store"
	"github.com/gantry-iot/gantry/controlplane/store/storetest"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
	"github.com/gantry-iot/gantry/proto/gantry/v1/gantryv1connect"
)

// TestDomainBadInput: unknown IDs, other tenants' IDs, invalid state
// transitions and malformed templates get a clear 4xx and store nothing.
func TestDomainBadInput(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		w := newWorld(t, newStore(t))
		ctx := context.Background()
		before := w.countCases(t)
		me := w.caseClient("O1/ME")
		for _, tc := range []struct {
			name string
			call func() error
			code connect.Code
			msg  string
		}{
			{"unknown asset", func() error {
				_, err := me.CreateCase(ctx, connect.NewRequest(&gantryv1.CreateCaseRequest{AssetId: "nope", Kind: "internal", Title: "x"}))
				return err
			}, connect.CodeNotFound, "asset"},
			{"other tenant's asset", func() error {
				_, err := me.CreateCase(ctx, connect.NewRequest(&gantryv1.CreateCaseRequest{AssetId: w.id("B1"), Kind: "internal", Title: "x"}))
				return err
			}, connect.CodeNotFound, "asset"},
			{"bad kind", func() error {
				_, err := me.CreateCase(ctx, connect.NewRequest(&gantryv1.CreateCaseRequest{AssetId: w.id("A1"), Kind: "secret", Title: "x"}))
				return err
			}, connect.CodeInvalidArgument, "internal or shared"},
			{"empty title", func() error {
				_, err := me.CreateCase(ctx, connect.NewRequest(&gantryv1.CreateCaseRequest{AssetId: w.id("A1"), Kind: "internal", Title: "  "}))
				return err
			}, connect.CodeInvalidArgument, "title"},
			{"over-long title", func() error {
				_, err := me.CreateCase(ctx, connect.NewRequest(&gantryv1.CreateCaseRequest{AssetId: w.id("A1"), Kind: "internal", Title: strings.Repeat("t", 201)}))
				return err
			}, connect.CodeInvalidArgument, "title"},
			{"unknown case", func() error {
				_, err := me.GetCase(ctx, connect.NewRequest(&gantryv1.GetCaseRequest{Id: "nope"}))
				return err
			}, connect.CodeNotFound, "not found"},
			{"other tenant's case", func() error {
				_, err := me.UpdateCase(ctx, connect.NewRequest(&gantryv1.UpdateCaseRequest{Id: w.id("SB"), State: "closed"}))
				return err
			}, connect.CodeNotFound, "not found"},
			{"unknown state", func() error {
				_, err := me.UpdateCase(ctx, connect.NewRequest(&gantryv1.UpdateCaseRequest{Id: w.id("I1"), State: "done"}))
				return err
			}, connect.CodeInvalidArgument, "use one of new, in_progress, closed"},
			{"invalid transition", func() error {
				_, err := me.UpdateCase(ctx, connect.NewRequest(&gantryv1.UpdateCaseRequest{Id: w.id("I1"), State: "new"}))
				return err
			}, connect.CodeFailedPrecondition, "cannot go from new to new"},
			{"assignee of other tenant", func() error {
				_, err := me.UpdateCase(ctx, connect.NewRequest(&gantryv1.UpdateCaseRequest{Id: w.id("I1"), AssigneeId: w.actor("O2/MO").ID}))
				return err
			}, connect.CodeInvalidArgument, "not an active user"},
			{"empty chat", func() error {
				_, err := me.PostMessage(ctx, connect.NewRequest(&gantryv1.PostMessageRequest{CaseId: w.id("I1"), Body: " "}))
				return err
			}, connect.CodeInvalidArgument, "message"},
			{"bad page token", func() error {
				_, err := me.ListCases(ctx, connect.NewRequest(&gantryv1.ListCasesRequest{PageToken: "!!"}))
				return err
			}, connect.CodeInvalidArgument, "page token"},
			{"list bad kind", func() error {
				_, err := me.ListCases(ctx, connect.NewRequest(&gantryv1.ListCasesRequest{Kind: "everything"}))
				return err
			}, connect.CodeInvalidArgument, "kind"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				err := tc.call()
				if connect.CodeOf(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
					t.Errorf("got %v, want %v mentioning %q", err, tc.code, tc.msg)
				}
			})
		}
		if after := w.countCases(t); after != before {
			t.Errorf("%d cases stored by refused calls", after-before)
		}
		if cs, _ := w.srv.Store.GetCase(ctx, w.id("I1")); cs.State != store.StateNew || cs.AssigneeID != w.actor("O1/ME").ID {
			t.Errorf("I1 changed by refused calls: %+v", cs)
		}

		// Closed → reopen works; New → Closed works.
		if _, err := me.UpdateCase(ctx, connect.NewRequest(&gantryv1.UpdateCaseRequest{Id: w.id("I1"), State: "closed"})); err != nil {
			t.Fatalf("new → closed: %v", err)
		}
		if _, err := me.UpdateCase(ctx, connect.NewRequest(&gantryv1.UpdateCaseRequest{Id: w.id("I1"), State: "in_progress"})); err != nil {
			t.Fatalf("reopen closed → in_progress: %v", err)
		}

		// Malformed templates are refused with the field path, and nothing changes.
		mc := gantryv1connect.NewMachineModelServiceClient(http.DefaultClient, w.srv.URL, connect.WithProtoJSON(), servertest.Bearer(w.actor("P1/MDM").Token))
		orig, _ := w.srv.Store.GetMachineModel(ctx, w.id("M1"))
		for _, tc := range []struct {
			name string
			m    *gantryv1.MachineModel
			path string
		}{
			{"vnc without target", &gantryv1.MachineModel{Id: w.id("M1"), Name: "M1", RemoteAccess: &gantryv1.RemoteAccessTemplate{ConnectionTypes: []string{"vnc"}}}, "remote_access.vnc_targets"},
			{"bad subnet", &gantryv1.MachineModel{Id: w.id("M1"), Name: "M1", RemoteAccess: &gantryv1.RemoteAccessTemplate{ConnectionTypes: []string{"ssc"}, MachineSubnets: []string{"10.0.0.0/33"}}}, "machine_subnets[0]"},
			{"subnet too large for SSC", &gantryv1.MachineModel{Id: w.id("M1"), Name: "M1", RemoteAccess: &gantryv1.RemoteAccessTemplate{ConnectionTypes: []string{"ssc"}, MachineSubnets: []string{"10.0.0.0/8"}}}, "machine_subnets[0]"},
			{"bad ssc port", &gantryv1.MachineModel{Id: w.id("M1"), Name: "M1", RemoteAccess: &gantryv1.RemoteAccessTemplate{ConnectionTypes: []string{"ssc"}, MachineSubnets: []string{"10.0.0.0/24"}, SscPorts: []string{"tcp/0"}}}, "ssc_ports[0]"},
			{"bad node id", &gantryv1.MachineModel{Id: w.id("M1"), Name: "M1", Opcua: &gantryv1.OpcuaTemplate{EndpointUrl: "opc.tcp://1.2.3.4:4840", SecurityMode: "None",
				DataPoints: []*gantryv1.DataPoint{{NodeId: "spindle", Name: "Spindle"}}}}, "data_points[0].node_id"},
			{"bad endpoint", &gantryv1.MachineModel{Id: w.id("M1"), Name: "M1", Opcua: &gantryv1.OpcuaTemplate{EndpointUrl: "http://x", SecurityMode: "None"}}, "opcua.endpoint_url"},
			{"other provider's model", &gantryv1.MachineModel{Id: "nope", Name: "M1"}, "not found"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := mc.UpdateMachineModel(ctx, connect.NewRequest(&gantryv1.UpdateMachineModelRequest{Model: tc.m}))
				if err == nil || !strings.Contains(err.Error(), tc.path) {
					t.Errorf("got %v, want an error naming %s", err, tc.path)
				}
			})
		}
		if now, _ := w.srv.Store.GetMachineModel(ctx, w.id("M1")); string(now.RemoteAccessJSON) != string(orig.RemoteAccessJSON) || string(now.OPCUAJSON) != string(orig.OPCUAJSON) {
			t.Errorf("refused template edits changed the model")
		}
		// P2 cannot see or change P1's model.
		p2 := gantryv1connect.NewMachineModelServiceClient(http.DefaultClient, w.srv.URL, connect.WithProtoJSON(), servertest.Bearer(w.actor("P2/ST").Token))
		if _, err := p2.GetMachineModel(ctx, connect.NewRequest(&gantryv1.GetMachineModelRequest{Id: w.id("M1")})); connect.CodeOf(err) != connect.CodeNotFound {
			t.Errorf("P2 reads P1's model: %v", err)
		}
		// Accepting a proposal into another tenant's facility, or twice.
		wm := gantryv1connect.NewShopfloorServiceClient(http.DefaultClient, w.srv.URL, connect.WithProtoJSON(), servertest.Bearer(w.actor("O1/WM").Token))
		if _, err := wm.AcceptAssetProposal(ctx, connect.NewRequest(&gantryv1.AcceptAssetProposalRequest{Id: w.id("PX"), FacilityId: w.id("FB")})); connect.CodeOf(err) != connect.CodeNotFound {
			t.Errorf("accept into foreign facility: %v", err)
		}
		if _, err := wm.AcceptAssetProposal(ctx, connect.NewRequest(&gantryv1.AcceptAssetProposalRequest{Id: w.id("PX"), FacilityId: w.id("F2")})); err != nil {
			t.Fatalf("accept: %v", err)
		}
		if _, err := wm.AcceptAssetProposal(ctx, connect.NewRequest(&gantryv1.AcceptAssetProposalRequest{Id: w.id("PX"), FacilityId: w.id("F2")})); connect.CodeOf(err) != connect.CodeFailedPrecondition {
			t.Errorf("accept twice: %v", err)
		}
	})
}
