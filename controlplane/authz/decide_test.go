package authz

import (
	"errors"
	"strings"
	"testing"
)

func tenantScope(t string) Scope { return Scope{Kind: ScopeTenant, ID: t} }

func op(assign ...Assignment) Principal {
	return Principal{UserID: "u1", Tenant: "O1", TenantKind: KindOperator, TenantRoles: []TenantRole{OperatorInternalService}, Assignments: assign}
}

func prov(assign ...Assignment) Principal {
	return Principal{UserID: "p1", Tenant: "P1", TenantKind: KindServiceProvider, Assignments: assign}
}

// asset A1 in facility F1 of O1, linked to P1's machine CM1 (customer C1, org SO1).
var a1 = Resource{
	Owner:  Location{Tenant: "O1", Chain: []Scope{{ScopeFacility, "F1"}, {ScopeAsset, "A1"}}},
	Shared: []Location{{Tenant: "P1", Chain: []Scope{{ScopeServiceOrg, "SO1"}, {ScopeCustomer, "C1"}, {ScopeCustomerMachine, "CM1"}}}},
}

func TestDecide(t *testing.T) {
	private := a1
	private.TenantPrivate = true
	a3 := Resource{Owner: Location{Tenant: "O1", Chain: []Scope{{ScopeFacility, "F2"}, {ScopeAsset, "A3"}}}}
	for _, tc := range []struct {
		name   string
		p      Principal
		f      Feature
		min    Level
		r      Resource
		want   bool
		reason string
	}{
		{"tenant-wide ME", op(Assignment{MaintenanceEngineer, tenantScope("O1")}), InternalServiceCases, Manage, a1, true, ""},
		{"facility-scoped ME inside", op(Assignment{MaintenanceEngineer, Scope{ScopeFacility, "F1"}}), ServiceCaseManagement, Read, a1, true, ""},
		{"facility-scoped ME outside", op(Assignment{MaintenanceEngineer, Scope{ScopeFacility, "F1"}}), ServiceCaseManagement, Read, a3, false, "Service Case Management = read"},
		{"asset-scoped", op(Assignment{MachineOperator, Scope{ScopeAsset, "A1"}}), ServiceCaseManagement, Manage, a1, true, ""},
		{"MO has no ISC", op(Assignment{MachineOperator, tenantScope("O1")}), InternalServiceCases, Manage, a1, false, "Internal Service Cases = manage"},
		{"admin only", op(Assignment{TenantAdmin, tenantScope("O1")}), ServiceCaseManagement, Read, a1, false, "no operational permissions"},
		{"pending", func() Principal { p := op(Assignment{WorkshopManager, tenantScope("O1")}); p.Pending = true; return p }(), DigitalShopfloor, Read, a1, false, "pending"},
		{"ME without tenant role", func() Principal {
			p := op(Assignment{MaintenanceEngineer, tenantScope("O1")})
			p.TenantRoles = nil
			return p
		}(), ServiceCaseManagement, Read, a1, false, "give none"},
		{"provider tenant-wide", prov(Assignment{FirstLevelSupport, tenantScope("P1")}), ServiceCaseManagement, Read, a1, true, ""},
		{"provider customer scope inside", prov(Assignment{ServiceTechnician, Scope{ScopeCustomer, "C1"}}), RemoteAccess, Manage, a1, true, ""},
		{"provider org scope inside", prov(Assignment{ServiceTechnician, Scope{ScopeServiceOrg, "SO1"}}), RemoteAccess, Manage, a1, true, ""},
		{"provider customer scope outside", prov(Assignment{ServiceTechnician, Scope{ScopeCustomer, "C2"}}), RemoteAccess, Manage, a1, false, "give none"},
		{"provider on private", prov(Assignment{ServiceTechnician, tenantScope("P1")}), ServiceCaseManagement, Read, private, false, "never leaves"},
		{"unlinked provider", func() Principal {
			p := prov(Assignment{ServiceTechnician, tenantScope("P2")})
			p.Tenant = "P2"
			return p
		}(), ServiceCaseManagement, Read, a1, false, "not shared"},
		{"MDM no SCM", prov(Assignment{MasterDataManager, tenantScope("P1")}), ServiceCaseManagement, Read, a1, false, "give none"},
		{"operator feature via provider", prov(Assignment{ServiceTechnician, tenantScope("P1")}), DigitalShopfloor, Read, a1, false, ""},
		{"custom role", func() Principal {
			p := op(Assignment{"custom:x", tenantScope("O1")})
			p.CustomRoles = map[RoleID]Role{"custom:x": {ID: "custom:x", Kind: KindOperator, Rank: 20, Features: map[Feature]Level{DigitalShopfloor: Manage}}}
			return p
		}(), DigitalShopfloor, Manage, a1, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Decide(tc.p, tc.f, tc.min, tc.r)
			if d.Allowed != tc.want {
				t.Fatalf("Decide = %+v, want allowed=%v", d, tc.want)
			}
			if !d.Allowed && !strings.Contains(d.Reason, tc.reason) {
				t.Errorf("reason %q should mention %q", d.Reason, tc.reason)
			}
		})
	}
}

func TestCheckAssign(t *testing.T) {
	o1 := TenantInfo{Kind: KindOperator, TenantRoles: []TenantRole{OperatorInternalService}}
	o2 := TenantInfo{Kind: KindOperator}
	wide := Location{Tenant: "O1"}
	f1 := Location{Tenant: "O1", Chain: []Scope{{ScopeFacility, "F1"}}}
	f2 := Location{Tenant: "O1", Chain: []Scope{{ScopeFacility, "F2"}}}
	admin := op(Assignment{TenantAdmin, tenantScope("O1")})
	lead := op(Assignment{"custom:lead", Scope{ScopeFacility, "F1"}})
	lead.CustomRoles = map[RoleID]Role{"custom:lead": {ID: "custom:lead", Name: "Lead", Kind: KindOperator, Rank: 60, ManageUsers: true, Assignable: true}}
	wm := op(Assignment{WorkshopManager, tenantScope("O1")})
	role := func(id RoleID) Role { r, _ := builtinFor(KindOperator, id); return *r }
	spRole := func(id RoleID) Role { r, _ := builtinFor(KindServiceProvider, id); return *r }
	for _, tc := range []struct {
		name   string
		actor  Principal
		role   Role
		target Location
		tenant TenantInfo
		ok     bool
		reason string
	}{
		{"admin assigns ME", admin, role(MaintenanceEngineer), wide, o1, true, ""},
		{"admin makes admin", admin, role(TenantAdmin), wide, o1, true, ""},
		{"scoped admin refused", admin, role(TenantAdmin), f1, o1, false, "tenant-wide"},
		{"ME without tenant role", func() Principal { p := admin; p.TenantRoles = nil; return p }(), role(MaintenanceEngineer), wide, o2, false, "Operator Internal Service"},
		{"WM has no user management", wm, role(MachineOperator), wide, o1, false, "manage users"},
		{"lead below rank in scope", lead, role(WorkshopManager), f1, o1, true, ""},
		{"lead outside scope", lead, role(WorkshopManager), f2, o1, false, "manage users"},
		{"lead tenant-wide refused", lead, role(MachineOperator), wide, o1, false, "manage users"},
		{"lead cannot make admins", lead, role(TenantAdmin), wide, o1, false, ""},
		{"equal rank refused", func() Principal {
			p := lead
			p.CustomRoles = map[RoleID]Role{"custom:lead": {ID: "custom:lead", Name: "Lead", Kind: KindOperator, Rank: 50, ManageUsers: true, Assignable: true}}
			return p
		}(), role(WorkshopManager), f1, o1, false, "not below your highest rank"},
		{"deprecated", prov(Assignment{TenantAdmin, tenantScope("P1")}), spRole(ServiceManagerDeprecated), Location{Tenant: "P1"}, TenantInfo{Kind: KindServiceProvider}, false, "not newly assigned"},
		{"cross tenant", admin, role(MachineOperator), Location{Tenant: "O2"}, o2, false, "own tenant"},
		{"wrong kind", admin, spRole(ServiceTechnician), wide, o1, false, "service_provider"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckAssign(tc.actor, tc.role, tc.target, tc.tenant)
			if (err == nil) != tc.ok {
				t.Fatalf("CheckAssign = %v, want ok=%v", err, tc.ok)
			}
			if err != nil {
				if !errors.Is(err, ErrDenied) {
					t.Errorf("error %v does not wrap ErrDenied", err)
				}
				if !strings.Contains(err.Error(), tc.reason) {
					t.Errorf("error %q should mention %q", err, tc.reason)
				}
			}
		})
	}
}

func TestDefaultInviteeRoles(t *testing.T) {
	o1 := TenantInfo{Kind: KindOperator, TenantRoles: []TenantRole{OperatorInternalService}}
	admin := op(Assignment{TenantAdmin, tenantScope("O1")})
	if got := DefaultInviteeRoles(admin, o1); len(got) != 0 {
		t.Errorf("pure admin passes on %v, want nothing (Tenant Admin is never a default)", got)
	}
	both := op(Assignment{TenantAdmin, tenantScope("O1")}, Assignment{MaintenanceEngineer, tenantScope("O1")})
	got := DefaultInviteeRoles(both, o1)
	if len(got) != 1 || got[0].Role != MaintenanceEngineer {
		t.Errorf("admin+ME passes on %v, want ME", got)
	}
}

func TestValidateCustomRole(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    Role
		ok   bool
	}{
		{"good", Role{Name: "Site Lead", Rank: 60, Features: map[Feature]Level{DigitalShopfloor: Manage}}, true},
		{"empty name", Role{Name: " ", Rank: 10}, false},
		{"builtin name", Role{Name: "workshop manager", Rank: 10}, false},
		{"rank 100", Role{Name: "X", Rank: 100}, false},
		{"rank 0", Role{Name: "X", Rank: 0}, false},
		{"provider feature", Role{Name: "X", Rank: 10, Features: map[Feature]Level{RemoteAccess: Read}}, false},
		{"bad level", Role{Name: "X", Rank: 10, Features: map[Feature]Level{DigitalShopfloor: 7}}, false},
	} {
		if err := ValidateCustomRole(KindOperator, tc.r); (err == nil) != tc.ok {
			t.Errorf("%s: ValidateCustomRole = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

func TestScopesWith(t *testing.T) {
	p := op(Assignment{MachineOperator, Scope{ScopeFacility, "F1"}}, Assignment{MaintenanceEngineer, Scope{ScopeAsset, "A9"}}, Assignment{TenantAdmin, tenantScope("O1")})
	got := ScopesWith(p, InternalServiceCases, Manage)
	if len(got) != 1 || got[0] != (Scope{ScopeAsset, "A9"}) {
		t.Errorf("ScopesWith(ISC manage) = %v, want only A9", got)
	}
	if got := ScopesWith(p, ServiceCaseManagement, Read); len(got) != 2 {
		t.Errorf("ScopesWith(SCM read) = %v, want F1 and A9", got)
	}
}
