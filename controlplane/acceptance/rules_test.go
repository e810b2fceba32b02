package acceptance

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"connectrpc.com/connect"
	"github.com/gantry-iot/gantry/controlplane/authz"
	"github.com/gantry-iot/gantry/controlplane/store/storetest"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
)

type rule struct {
	ID, Actor, Action, Target, Expected, Rule, Area string
}

func readRules(t *testing.T) []rule {
	t.Helper()
	b, err := os.ReadFile("testdata/case-rules.csv")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(l, "#") && strings.TrimSpace(l) != "" {
			lines = append(lines, l)
		}
	}
	recs, err := csv.NewReader(strings.NewReader(strings.Join(lines, "\n"))).ReadAll()
	if err != nil {
		t.Fatalf("parse case-rules.csv: %v", err)
	}
	var out []rule
	for _, r := range recs[1:] {
		if len(r) != 7 {
			t.Fatalf("row %v: want 7 columns", r)
		}
		out = append(out, rule{r[0], r[1], r[2], r[3], r[4], r[5], r[6]})
	}
	return out
}

// TestOracleCopiesCurrent fails when testdata/ differs from
// ../shared/acceptance beside the repository root (where CI has it).
func TestOracleCopiesCurrent(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	shared := filepath.Join(root, "..", "shared", "acceptance")
	if _, err := os.Stat(shared); err != nil {
		t.Skipf("%s not present: cannot compare the oracle copies", shared)
	}
	for _, f := range []string{"case-rules.csv", "role-matrix.csv"} {
		want, err := os.ReadFile(filepath.Join(shared, f))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join("testdata", f))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(want, got) {
			t.Errorf("testdata/%s differs from %s: copy the shared file again (never edit the expectation)", f, shared)
		}
	}
}

// pendingAction names the issue that brings actions not yet served.
func pendingAction(rule) string { return "" }

func TestCaseRules(t *testing.T) {
	rules := readRules(t)
	if len(rules) != 58 {
		t.Fatalf("case-rules.csv has %d rows, want 58", len(rules))
	}
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		for _, r := range rules {
			t.Run(r.ID+"_"+strings.ReplaceAll(r.Action, " ", "_"), func(t *testing.T) {
				// Every row builds its own world (store, server, agent), so
				// rows run in parallel; they mostly wait on the databases.
				t.Parallel()
				if why := pendingAction(r); why != "" {
					t.Skipf("row %s: %s", r.ID, why)
				}
				w := newWorld(t, newStore(t))
				var err error
				switch r.Area {
				case "identity":
					err = runIdentityRow(t, w, r)
				case "cases":
					err = runCaseRow(t, w, r)
				case "domain":
					err = runDomainRow(t, w, r)
				case "devices":
					err = runDeviceRow(t, w, r)
				case "remote-access":
					err = runRemoteRow(t, w, r)
				default:
					t.Fatalf("row %s: unknown area %q", r.ID, r.Area)
				}
				checkOutcome(t, r, err)
			})
		}
	})
}

func checkOutcome(t *testing.T, r rule, err error) {
	t.Helper()
	switch r.Expected {
	case "allow":
		if err != nil {
			t.Fatalf("row %s: %s %s %s: want allowed (%s), got %v", r.ID, r.Actor, r.Action, r.Target, r.Rule, err)
		}
	case "deny":
		// Denied outright, hidden as not found (another tenant's case), or
		// refused as impossible (shared case on an unlinked asset).
		switch connect.CodeOf(err) {
		case connect.CodePermissionDenied, connect.CodeNotFound, connect.CodeFailedPrecondition:
		default:
			t.Fatalf("row %s: %s %s %s: want a denial (%s), got %v", r.ID, r.Actor, r.Action, r.Target, r.Rule, err)
		}
		var ce *connect.Error
		if errors.As(err, &ce) && len(ce.Message()) < 10 {
			t.Errorf("row %s: denial message %q does not explain the missing permission", r.ID, ce.Message())
		}
	default:
		t.Fatalf("row %s: unknown expectation %q", r.ID, r.Expected)
	}
}

var roleIDs = map[string]authz.RoleID{
	"Tenant Admin":                 authz.TenantAdmin,
	"Machine Operator":             authz.MachineOperator,
	"Maintenance Engineer":         authz.MaintenanceEngineer,
	"Service Manager (deprecated)": authz.ServiceManagerDeprecated,
}

// runIdentityRow performs an identity row's action through the API.
func runIdentityRow(t *testing.T, w *world, r rule) error {
	t.Helper()
	ctx := context.Background()
	c := w.clients(r.Actor)
	target := w.actor(r.Target)
	switch {
	case strings.HasPrefix(r.Action, "assign role "):
		name := strings.TrimPrefix(r.Action, "assign role ")
		role, ok := roleIDs[name]
		if !ok {
			t.Fatalf("row %s: unknown role %q", r.ID, name)
		}
		_, err := c.roles.AssignRole(ctx, connect.NewRequest(&gantryv1.AssignRoleRequest{UserId: target.ID, RoleId: string(role)}))
		if err == nil {
			assertHasRole(t, w, r.Actor, target.ID, role, true)
		}
		return err
	case strings.HasPrefix(r.Action, "revoke role "):
		role := roleIDs[strings.TrimPrefix(r.Action, "revoke role ")]
		as, err := c.roles.ListAssignments(ctx, connect.NewRequest(&gantryv1.ListAssignmentsRequest{UserId: target.ID}))
		if err != nil {
			t.Fatalf("row %s: list assignments: %v", r.ID, err)
		}
		for _, a := range as.Msg.Assignments {
			if a.RoleId == string(role) {
				_, err := c.roles.RevokeRole(ctx, connect.NewRequest(&gantryv1.RevokeRoleRequest{AssignmentId: a.Id}))
				assertHasRole(t, w, r.Actor, target.ID, role, err != nil)
				return err
			}
		}
		t.Fatalf("row %s: %s holds no %s", r.ID, r.Target, role)
	case r.Action == "delete user":
		_, err := c.users.DeleteUser(ctx, connect.NewRequest(&gantryv1.DeleteUserRequest{Id: target.ID}))
		if err != nil {
			if _, gerr := w.srv.Store.GetUser(ctx, target.ID); gerr != nil {
				t.Errorf("row %s: delete was refused but the user is gone: %v", r.ID, gerr)
			}
		}
		return err
	}
	t.Fatalf("row %s: no driver for identity action %q", r.ID, r.Action)
	return nil
}

// assertHasRole checks through the store that userID holds (or not) role.
func assertHasRole(t *testing.T, w *world, actorKey, userID string, role authz.RoleID, want bool) {
	t.Helper()
	as, err := w.srv.Store.ListAssignments(context.Background(), w.actor(actorKey).Tenant, userID)
	if err != nil {
		t.Fatal(err)
	}
	got := false
	for _, a := range as {
		got = got || a.Role == role
	}
	if got != want {
		t.Errorf("after the call, user holds %s = %v, want %v", role, got, want)
	}
}
