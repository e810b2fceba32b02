package authz

import (
	"fmt"
	"strings"
)

// The built-in roles of SPEC §2 (seed 001), as data. This table is the only
// place where feature levels of built-in roles are written down.
//
// App Developer tenants have only the Tenant Admin role: the seeds name no
// operational roles for them.
var builtins = []Role{
	{ID: TenantAdmin, Name: "Tenant Admin", Kind: KindOperator, Rank: 100, ManageUsers: true, Assignable: true, BuiltIn: true},
	{ID: TenantAdmin, Name: "Tenant Admin", Kind: KindServiceProvider, Rank: 100, ManageUsers: true, Assignable: true, BuiltIn: true},
	{ID: TenantAdmin, Name: "Tenant Admin", Kind: KindAppDeveloper, Rank: 100, ManageUsers: true, Assignable: true, BuiltIn: true},

	{ID: MachineOperator, Name: "Machine Operator", Kind: KindOperator, Rank: 30, Assignable: true, BuiltIn: true, Features: map[Feature]Level{
		ServiceCaseManagement: Manage, DigitalShopfloor: Read, DocumentsMedia: Read}},
	{ID: WorkshopManager, Name: "Workshop Manager", Kind: KindOperator, Rank: 50, Assignable: true, BuiltIn: true, Features: map[Feature]Level{
		ServiceCaseManagement: Manage, DigitalShopfloor: Manage, DocumentsMedia: Manage}},
	{ID: OperatorInternalCases, Name: "Operator - internal Service Cases", Kind: KindOperator, Rank: 30, Assignable: true, BuiltIn: true,
		Requires: OperatorInternalService, Features: map[Feature]Level{
			ServiceCaseManagement: Read, DigitalShopfloor: Read, DocumentsMedia: Read, InternalServiceCases: Manage}},
	{ID: MaintenanceEngineer, Name: "Maintenance Engineer", Kind: KindOperator, Rank: 50, Assignable: true, BuiltIn: true,
		Requires: OperatorInternalService, Features: map[Feature]Level{
			ServiceCaseManagement: Manage, DigitalShopfloor: Read, DocumentsMedia: Read, InternalServiceCases: Manage}},

	{ID: FirstLevelSupport, Name: "1st Level Support", Kind: KindServiceProvider, Rank: 30, Assignable: true, BuiltIn: true, Features: map[Feature]Level{
		ServiceCaseManagement: Manage, MachineModels: Read, DocumentsMedia: Manage, EdgeDevices: Read, Applications: Read, MachineLicenses: Read}},
	{ID: ServiceTechnician, Name: "Service Technician", Kind: KindServiceProvider, Rank: 50, Assignable: true, BuiltIn: true, Features: map[Feature]Level{
		ServiceCaseManagement: Manage, RemoteAccess: Manage, MachineModels: Read, DocumentsMedia: Manage, EdgeDevices: Manage, Applications: Read, MachineLicenses: Read}},
	{ID: MasterDataManager, Name: "Master Data Manager", Kind: KindServiceProvider, Rank: 40, Assignable: true, BuiltIn: true, Features: map[Feature]Level{
		MachineModels: Manage, DocumentsMedia: Manage, EdgeDevices: Read, Applications: Manage, MachineLicenses: Read}},
	{ID: CustomerDataManager, Name: "Customer Data Manager", Kind: KindServiceProvider, Rank: 50, Assignable: true, BuiltIn: true, Features: map[Feature]Level{
		CustomerManagement: Manage, MachineModels: Read, DocumentsMedia: Manage, EdgeDevices: Manage, Applications: Read, MachineLicenses: Read}},
	{ID: ServiceManagerDeprecated, Name: "Service Manager (deprecated)", Kind: KindServiceProvider, Rank: 60, Assignable: false, BuiltIn: true, Features: map[Feature]Level{
		ServiceCaseManagement: Manage, RemoteAccess: Manage, CustomerManagement: Manage, MachineModels: Manage, DocumentsMedia: Manage,
		EdgeDevices: Manage, Applications: Manage, MachineLicenses: Read}},
}

// Features offered per tenant kind, in display order.
var kindFeatures = map[TenantKind][]Feature{
	KindOperator:        {ServiceCaseManagement, DigitalShopfloor, DocumentsMedia, InternalServiceCases},
	KindServiceProvider: {ServiceCaseManagement, RemoteAccess, CustomerManagement, MachineModels, DocumentsMedia, EdgeDevices, Applications, MachineLicenses},
	KindAppDeveloper:    nil,
}

var featureNames = map[Feature]string{
	ServiceCaseManagement: "Service Case Management",
	DigitalShopfloor:      "Digital Shopfloor",
	DocumentsMedia:        "Documents & Media",
	InternalServiceCases:  "Internal Service Cases",
	RemoteAccess:          "Remote Access / File Transfer",
	CustomerManagement:    "Customer Management",
	MachineModels:         "Machine Models",
	EdgeDevices:           "Edge Devices",
	Applications:          "Applications",
	MachineLicenses:       "Machine Licenses",
}

// allFeatures lists every feature once, operator features first.
var allFeatures = []Feature{ServiceCaseManagement, DigitalShopfloor, DocumentsMedia, InternalServiceCases,
	RemoteAccess, CustomerManagement, MachineModels, EdgeDevices, Applications, MachineLicenses}

// builtinByKey indexes builtins by (kind, id).
var builtinByKey = func() map[TenantKind]map[RoleID]*Role {
	m := map[TenantKind]map[RoleID]*Role{}
	for i := range builtins {
		r := &builtins[i]
		if m[r.Kind] == nil {
			m[r.Kind] = map[RoleID]*Role{}
		}
		m[r.Kind][r.ID] = r
	}
	return m
}()

// BuiltinRoles returns copies of the built-in roles of a tenant kind.
func BuiltinRoles(kind TenantKind) []Role {
	var out []Role
	for _, r := range builtins {
		if r.Kind == kind {
			out = append(out, r)
		}
	}
	return out
}

// BuiltinRole returns a built-in role by ID. Tenant Admin exists for every
// kind; this returns its operator entry (kinds differ only in Kind).
func BuiltinRole(id RoleID) (Role, bool) {
	for _, r := range builtins {
		if r.ID == id {
			return r, true
		}
	}
	return Role{}, false
}

// builtinFor returns the built-in role id of a tenant kind.
func builtinFor(kind TenantKind, id RoleID) (*Role, bool) {
	r, ok := builtinByKey[kind][id]
	return r, ok
}

// RoleByName finds a built-in role of a kind by display name (case-insensitive).
func RoleByName(kind TenantKind, name string) (Role, bool) {
	for _, r := range builtins {
		if r.Kind == kind && strings.EqualFold(r.Name, name) {
			return r, true
		}
	}
	return Role{}, false
}

// FeaturesOf lists the features a tenant kind offers.
func FeaturesOf(kind TenantKind) []Feature { return append([]Feature(nil), kindFeatures[kind]...) }

// AllFeatures lists every feature.
func AllFeatures() []Feature { return append([]Feature(nil), allFeatures...) }

// FeatureName is a feature's display name.
func FeatureName(f Feature) string {
	if n, ok := featureNames[f]; ok {
		return n
	}
	return string(f)
}

// ParseFeature parses a feature key such as "digital_shopfloor".
func ParseFeature(s string) (Feature, error) {
	f := Feature(s)
	if _, ok := featureNames[f]; !ok {
		keys := make([]string, len(allFeatures))
		for i, f := range allFeatures {
			keys[i] = string(f)
		}
		return "", fmt.Errorf("unknown feature %q; use one of %s", s, strings.Join(keys, ", "))
	}
	return f, nil
}

func (l Level) String() string {
	switch l {
	case None:
		return "none"
	case Read:
		return "read"
	case Manage:
		return "manage"
	}
	return fmt.Sprintf("Level(%d)", uint8(l))
}

// ParseLevel parses "none", "read" or "manage".
func ParseLevel(s string) (Level, error) {
	switch s {
	case "none":
		return None, nil
	case "read":
		return Read, nil
	case "manage":
		return Manage, nil
	}
	return None, fmt.Errorf("unknown level %q; use none, read or manage", s)
}
