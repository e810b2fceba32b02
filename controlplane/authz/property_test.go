package authz

import (
	"fmt"
	"testing"

	"pgregory.net/rapid"
)

var (
	allRoleIDs = []RoleID{TenantAdmin, MachineOperator, WorkshopManager, OperatorInternalCases, MaintenanceEngineer,
		FirstLevelSupport, ServiceTechnician, MasterDataManager, CustomerDataManager, ServiceManagerDeprecated, "custom:a", "custom:b"}
	scopeKinds = []ScopeKind{ScopeTenant, ScopeFacility, ScopeAsset, ScopeServiceOrg, ScopeCustomer, ScopeCustomerMachine}
	kinds      = []TenantKind{KindOperator, KindServiceProvider, KindAppDeveloper}
)

func genScope(tenant string) *rapid.Generator[Scope] {
	return rapid.Custom(func(t *rapid.T) Scope {
		k := rapid.SampledFrom(scopeKinds).Draw(t, "kind")
		if k == ScopeTenant {
			return Scope{Kind: k, ID: rapid.SampledFrom([]string{tenant, "T1", "T2", "T3"}).Draw(t, "tenantID")}
		}
		return Scope{Kind: k, ID: rapid.SampledFrom([]string{"n1", "n2", "n3", "n4"}).Draw(t, "id")}
	})
}

func genPrincipal(t *rapid.T, tenant string) Principal {
	p := Principal{
		UserID:     "u",
		Tenant:     tenant,
		TenantKind: rapid.SampledFrom(kinds).Draw(t, "kind"),
		Pending:    rapid.Bool().Draw(t, "pending"),
	}
	if rapid.Bool().Draw(t, "ois") {
		p.TenantRoles = []TenantRole{OperatorInternalService}
	}
	n := rapid.IntRange(0, 6).Draw(t, "n")
	for i := 0; i < n; i++ {
		p.Assignments = append(p.Assignments, Assignment{Role: rapid.SampledFrom(allRoleIDs).Draw(t, "role"), Scope: genScope(tenant).Draw(t, "scope")})
	}
	p.CustomRoles = map[RoleID]Role{
		"custom:a": {ID: "custom:a", Kind: p.TenantKind, Rank: 70, ManageUsers: true, Features: map[Feature]Level{ServiceCaseManagement: Manage, DigitalShopfloor: Manage, RemoteAccess: Manage}},
		"custom:b": {ID: "custom:b", Kind: p.TenantKind, Rank: 10, Features: map[Feature]Level{InternalServiceCases: Manage, EdgeDevices: Manage}},
	}
	return p
}

func genLocation(t *rapid.T, tenant, label string) Location {
	loc := Location{Tenant: tenant}
	n := rapid.IntRange(0, 3).Draw(t, label+"depth")
	for i := 0; i < n; i++ {
		loc.Chain = append(loc.Chain, Scope{Kind: rapid.SampledFrom(scopeKinds[1:]).Draw(t, label+"k"), ID: rapid.SampledFrom([]string{"n1", "n2", "n3", "n4"}).Draw(t, label+"id")})
	}
	return loc
}

// TestUnrelatedTenantsNeverAllowed: a principal is never allowed anything
// on a resource of another tenant that is not shared with its tenant — for
// every feature and level, whatever its roles, scopes or custom roles.
// Resources marked TenantPrivate are never allowed to other tenants even
// when shared with them.
func TestUnrelatedTenantsNeverAllowed(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		p := genPrincipal(t, "T0")
		r := Resource{Owner: genLocation(t, rapid.SampledFrom([]string{"T1", "T2", "T3"}).Draw(t, "owner"), "o"), TenantPrivate: rapid.Bool().Draw(t, "private")}
		for i := rapid.IntRange(0, 3).Draw(t, "shared"); i > 0; i-- {
			other := rapid.SampledFrom([]string{"T1", "T2", "T3", "T0"}).Draw(t, "sharedTenant")
			if other == "T0" && !r.TenantPrivate {
				other = "T3" // unrelated: never shared with T0 unless private
			}
			r.Shared = append(r.Shared, genLocation(t, other, fmt.Sprint("s", i)))
		}
		for _, f := range allFeatures {
			for _, l := range []Level{Read, Manage} {
				if d := Decide(p, f, l, r); d.Allowed {
					t.Fatalf("principal of T0 allowed %s=%s on %+v (principal %+v)", f, l, r, p)
				}
				if LevelAt(p, f, r) != None {
					t.Fatalf("LevelAt gives T0 %s on %+v", f, r)
				}
			}
		}
		for _, s := range ScopesWith(p, ServiceCaseManagement, Read) {
			_ = s // scopes are of the principal's own tenant; containment is checked per tenant
		}
		for _, role := range allRoleIDs {
			rl, ok := builtinFor(p.TenantKind, role)
			if !ok {
				continue
			}
			if err := CheckAssign(p, *rl, r.Owner, TenantInfo{Kind: p.TenantKind}); err == nil {
				t.Fatalf("principal of T0 may assign %s in %s", role, r.Owner.Tenant)
			}
		}
	})
}

// FuzzDecide: arbitrary principals and resources never panic, and foreign
// unshared resources are never allowed.
func FuzzDecide(f *testing.F) {
	f.Add(uint8(0), uint8(1), "n1", "T1", true, uint8(2))
	f.Fuzz(func(t *testing.T, roleIdx, scopeIdx uint8, node, owner string, private bool, feat uint8) {
		p := Principal{UserID: "u", Tenant: "T0", TenantKind: kinds[int(roleIdx)%len(kinds)], TenantRoles: []TenantRole{OperatorInternalService},
			Assignments: []Assignment{{Role: allRoleIDs[int(roleIdx)%len(allRoleIDs)], Scope: Scope{Kind: scopeKinds[int(scopeIdx)%len(scopeKinds)], ID: node}}}}
		if owner == "T0" {
			owner = "T1"
		}
		r := Resource{Owner: Location{Tenant: owner, Chain: []Scope{{ScopeFacility, node}}}, TenantPrivate: private,
			Shared: []Location{{Tenant: "T0", Chain: []Scope{{ScopeCustomer, node}}}}}
		f := allFeatures[int(feat)%len(allFeatures)]
		d := Decide(p, f, Read, r)
		if private && d.Allowed {
			t.Fatalf("private resource of %s allowed to T0", owner)
		}
	})
}
