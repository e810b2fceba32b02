package acceptance

import (
	"context"
	"net/http"
	"sort"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/gantry-iot/gantry/controlplane/server/servertest"
	"github.com/gantry-iot/gantry/controlplane/store/storetest"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
	"github.com/gantry-iot/gantry/proto/gantry/v1/gantryv1connect"
)

// Scenario tests for rules of seed 000 and SPEC §3 beyond the oracle rows,
// each named after its rule.

func TestRule_EveryCaseHasAConferencingLink(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		w := newWorld(t, newStore(t))
		for _, who := range []string{"O1/MO", "P1/1LS"} {
			r, err := w.caseClient(who).GetCase(context.Background(), connect.NewRequest(&gantryv1.GetCaseRequest{Id: w.id("S1")}))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasSuffix(r.Msg.Case.ConferenceUrl, "/gantry-case-"+w.id("S1")) {
				t.Errorf("%s: conference URL %q", who, r.Msg.Case.ConferenceUrl)
			}
		}
	})
}

func TestRule_OperatorInternalServiceCasesEditsInternalCases(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		w := newWorld(t, newStore(t))
		r, err := w.caseClient("O1/OISC").UpdateCase(context.Background(), connect.NewRequest(&gantryv1.UpdateCaseRequest{Id: w.id("I1"), State: "in_progress", AssigneeId: w.actor("O1/ME2").ID}))
		if err != nil || r.Msg.Case.State != "in_progress" || r.Msg.Case.AssigneeId != w.actor("O1/ME2").ID {
			t.Fatalf("OISC edits internal case: %v %v", r, err)
		}
		// But OISC (SCM read) cannot edit shared cases.
		if _, err := w.caseClient("O1/OISC").UpdateCase(context.Background(), connect.NewRequest(&gantryv1.UpdateCaseRequest{Id: w.id("S1"), State: "closed"})); connect.CodeOf(err) != connect.CodePermissionDenied {
			t.Errorf("OISC edits shared case: %v", err)
		}
	})
}

func TestRule_LinkedProviderManagesSharedCaseState(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		w := newWorld(t, newStore(t))
		ctx := context.Background()
		if _, err := w.caseClient("P1/ST").UpdateCase(ctx, connect.NewRequest(&gantryv1.UpdateCaseRequest{Id: w.id("S1"), State: "in_progress"})); err != nil {
			t.Errorf("ST updates shared case: %v", err)
		}
		if _, err := w.caseClient("P1/ST-C2").UpdateCase(ctx, connect.NewRequest(&gantryv1.UpdateCaseRequest{Id: w.id("S1"), State: "closed"})); connect.CodeOf(err) != connect.CodeNotFound {
			t.Errorf("out-of-scope ST updates S1: %v", err)
		}
		if _, err := w.caseClient("P1/ST-C2").GetCase(ctx, connect.NewRequest(&gantryv1.GetCaseRequest{Id: w.id("SB")})); err != nil {
			t.Errorf("ST-C2 reads SB of its customer: %v", err)
		}
	})
}

func TestRule_ProvidersDoNotOpenCases(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		w := newWorld(t, newStore(t))
		_, err := w.caseClient("P1/ST").CreateCase(context.Background(), connect.NewRequest(&gantryv1.CreateCaseRequest{AssetId: w.id("A1"), Kind: "shared", Title: "x"}))
		if connect.CodeOf(err) != connect.CodePermissionDenied {
			t.Errorf("provider opens a case: %v", err)
		}
	})
}

func TestRule_ScopedMaintenanceEngineerSeesOnlyItsFacility(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		w := newWorld(t, newStore(t))
		r, err := w.caseClient("O1/ME-F1").ListCases(context.Background(), connect.NewRequest(&gantryv1.ListCasesRequest{}))
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, c := range r.Msg.Cases {
			got = append(got, c.Title)
		}
		sort.Strings(got)
		if strings.Join(got, ",") != "I1,S1,S2" {
			t.Errorf("ME-F1 lists %v, want exactly the cases on A1 in F1: I1, S1, S2", got)
		}
	})
}

func TestRule_ProviderDefinesFurtherTicketStatuses(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		w := newWorld(t, newStore(t))
		ctx := context.Background()
		tc := gantryv1connect.NewTenantServiceClient(http.DefaultClient, w.srv.URL, connect.WithProtoJSON(), servertest.Bearer(w.actor("P1/admin").Token))
		if _, err := tc.UpdateTenant(ctx, connect.NewRequest(&gantryv1.UpdateTenantRequest{CaseStatuses: []string{"waiting_for_parts"}, SetCaseStatuses: true})); err != nil {
			t.Fatalf("P1 admin defines statuses: %v", err)
		}
		if _, err := tc.UpdateTenant(ctx, connect.NewRequest(&gantryv1.UpdateTenantRequest{CaseStatuses: []string{"closed"}, SetCaseStatuses: true})); connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("redefining closed: %v", err)
		}
		otc := gantryv1connect.NewTenantServiceClient(http.DefaultClient, w.srv.URL, connect.WithProtoJSON(), servertest.Bearer(w.actor("O1/admin").Token))
		if _, err := otc.UpdateTenant(ctx, connect.NewRequest(&gantryv1.UpdateTenantRequest{CaseStatuses: []string{"x"}, SetCaseStatuses: true})); connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("operator defines statuses: %v", err)
		}
		st := w.caseClient("P1/ST")
		for _, step := range []string{"waiting_for_parts", "in_progress", "waiting_for_parts", "closed"} {
			if _, err := st.UpdateCase(ctx, connect.NewRequest(&gantryv1.UpdateCaseRequest{Id: w.id("S1"), State: step})); err != nil {
				t.Fatalf("S1 → %s: %v", step, err)
			}
		}
		if _, err := st.UpdateCase(ctx, connect.NewRequest(&gantryv1.UpdateCaseRequest{Id: w.id("S1"), State: "waiting_for_parts"})); connect.CodeOf(err) != connect.CodeFailedPrecondition {
			t.Errorf("closed → waiting_for_parts: %v", err)
		}
		if _, err := w.caseClient("O1/ME").UpdateCase(ctx, connect.NewRequest(&gantryv1.UpdateCaseRequest{Id: w.id("I1"), State: "waiting_for_parts"})); connect.CodeOf(err) != connect.CodeInvalidArgument {
			t.Errorf("internal case with a provider status: %v", err)
		}
		r, err := w.caseClient("O1/MO").ListCases(ctx, connect.NewRequest(&gantryv1.ListCasesRequest{State: "closed", Kind: "shared"}))
		if err != nil || len(r.Msg.Cases) != 1 || r.Msg.Cases[0].Title != "S1" {
			t.Errorf("filter by state: %v %v", r, err)
		}
	})
}
