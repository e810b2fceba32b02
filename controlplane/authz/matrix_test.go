package authz

import (
	"bytes"
	"encoding/csv"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRoleMatrixCopyCurrent fails when testdata/role-matrix.csv differs
// from ../shared/acceptance beside the repository root.
func TestRoleMatrixCopyCurrent(t *testing.T) {
	shared := filepath.Join("..", "..", "..", "shared", "acceptance", "role-matrix.csv")
	want, err := os.ReadFile(shared)
	if err != nil {
		t.Skipf("%s not present: cannot compare the oracle copy", shared)
	}
	got, err := os.ReadFile("testdata/role-matrix.csv")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(want, got) {
		t.Errorf("testdata/role-matrix.csv differs from %s: copy it again (never edit the expectation)", shared)
	}
}

// TestRoleMatrix checks every row of the role matrix oracle against the
// catalog; the catalog never reads the file.
func TestRoleMatrix(t *testing.T) {
	b, err := os.ReadFile("testdata/role-matrix.csv")
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
		t.Fatal(err)
	}
	if len(recs) < 2 || strings.Join(recs[0], ",") != "tenant_kind,role,feature,level" {
		t.Fatalf("unexpected header %v", recs[0])
	}
	checked := map[string]bool{}
	for _, r := range recs[1:] {
		kind, name, feat, lvl := TenantKind(r[0]), r[1], r[2], r[3]
		role, ok := RoleByName(kind, name)
		if !ok {
			t.Errorf("%s: no built-in role named %q", kind, name)
			continue
		}
		f, err := ParseFeature(feat)
		if err != nil {
			t.Errorf("row %v: %v", r, err)
			continue
		}
		want, err := ParseLevel(lvl)
		if err != nil {
			t.Errorf("row %v: %v", r, err)
			continue
		}
		if got := role.Features[f]; got != want {
			t.Errorf("%s / %s / %s = %s, want %s", kind, name, feat, got, want)
		}
		// The decision engine must agree with the table, tenant-wide.
		p := Principal{UserID: "u", Tenant: "t", TenantKind: kind, TenantRoles: []TenantRole{OperatorInternalService},
			Assignments: []Assignment{{Role: role.ID, Scope: Scope{Kind: ScopeTenant, ID: "t"}}}}
		res := Resource{Owner: Location{Tenant: "t"}}
		if got := LevelAt(p, f, res); got != want {
			t.Errorf("engine: %s / %s / %s = %s, want %s", kind, name, feat, got, want)
		}
		checked[string(kind)+"/"+name] = true
	}
	// Every built-in role of operator and provider tenants is covered.
	for _, k := range []TenantKind{KindOperator, KindServiceProvider} {
		for _, r := range BuiltinRoles(k) {
			if !checked[string(k)+"/"+r.Name] {
				t.Errorf("role %s of %s tenants is not in the oracle", r.Name, k)
			}
			// Features outside the tenant kind are never granted.
			for f := range r.Features {
				found := false
				for _, of := range FeaturesOf(k) {
					found = found || of == f
				}
				if !found {
					t.Errorf("%s grants %s, which %s tenants do not offer", r.Name, f, k)
				}
			}
		}
	}
}
