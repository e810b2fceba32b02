// Package authz is the single place where Gantry decides who may do what.
//
// It holds the feature×level matrices of the built-in roles (SPEC §2) as
// data, scoped role assignments, rank-based delegation rules and the
// decision function. It is pure: it never touches the store or the network.
// Callers resolve where a resource sits (its tenant and scope chain, and the
// provider-side chains it is shared into) and pass that in.
package authz

// Level is how much of a feature a role grants. Levels are ordered:
// None < Read < Manage.
type Level uint8

// Feature levels.
const (
	None Level = iota
	Read
	Manage
)

// Feature is a permission area of SPEC §2.
type Feature string

// Features. Operator tenants use the first four; Service Provider tenants
// use SCM, Documents & Media and the provider-only ones.
const (
	ServiceCaseManagement Feature = "service_case_management"
	DigitalShopfloor      Feature = "digital_shopfloor"
	DocumentsMedia        Feature = "documents_media"
	InternalServiceCases  Feature = "internal_service_cases"
	RemoteAccess          Feature = "remote_access_file_transfer"
	CustomerManagement    Feature = "customer_management"
	MachineModels         Feature = "machine_models"
	EdgeDevices           Feature = "edge_devices"
	Applications          Feature = "applications"
	MachineLicenses       Feature = "machine_licenses"
)

// TenantKind is the role of a company on the platform.
type TenantKind string

// Tenant kinds.
const (
	KindOperator        TenantKind = "operator"
	KindServiceProvider TenantKind = "service_provider"
	KindAppDeveloper    TenantKind = "app_developer"
)

// TenantRole is an optional capability switched on for a tenant.
type TenantRole string

// OperatorInternalService adds the internal-service roles to an operator
// tenant (seed 000).
const OperatorInternalService TenantRole = "operator_internal_service"

// RoleID names a role. Built-in roles use the constants below; custom
// (individual) roles use "custom:<uuid>".
type RoleID string

// Built-in role IDs.
const (
	TenantAdmin              RoleID = "tenant_admin"
	MachineOperator          RoleID = "machine_operator"
	WorkshopManager          RoleID = "workshop_manager"
	OperatorInternalCases    RoleID = "operator_internal_service_cases"
	MaintenanceEngineer      RoleID = "maintenance_engineer"
	FirstLevelSupport        RoleID = "first_level_support"
	ServiceTechnician        RoleID = "service_technician"
	MasterDataManager        RoleID = "master_data_manager"
	CustomerDataManager      RoleID = "customer_data_manager"
	ServiceManagerDeprecated RoleID = "service_manager"
)

// ScopeKind is a level of a tenant's resource hierarchy.
// Operator side: tenant ⊃ facility ⊃ asset.
// Provider side: tenant ⊃ service_org ⊃ customer ⊃ customer_machine.
type ScopeKind string

// Scope kinds.
const (
	ScopeTenant          ScopeKind = "tenant"
	ScopeFacility        ScopeKind = "facility"
	ScopeAsset           ScopeKind = "asset"
	ScopeServiceOrg      ScopeKind = "service_org"
	ScopeCustomer        ScopeKind = "customer"
	ScopeCustomerMachine ScopeKind = "customer_machine"
)

// Scope is where a role assignment holds: the whole tenant (Kind
// ScopeTenant, ID = tenant ID) or one node of the tenant's hierarchy and
// everything below it.
type Scope struct {
	Kind ScopeKind
	ID   string
}

// Location says where something sits: its tenant and the chain of
// hierarchy nodes from the top (facility / service org) down to the node
// itself. A tenant-wide thing has an empty Chain.
type Location struct {
	Tenant string
	Chain  []Scope
}

// Role is a built-in or custom role of one tenant kind.
type Role struct {
	ID          RoleID
	Name        string // display name, e.g. "Maintenance Engineer"
	Kind        TenantKind
	Rank        int
	Features    map[Feature]Level
	ManageUsers bool       // may invite/delete users and assign roles (delegation rules apply)
	Assignable  bool       // false for Service Manager (deprecated): can be held, not newly assigned
	Requires    TenantRole // non-empty: the tenant must have this tenant role to offer the role
	BuiltIn     bool
}

// Assignment is one role held by a user within a scope.
type Assignment struct {
	Role  RoleID
	Scope Scope
}

// Principal is an authenticated, active user as the engine sees them.
type Principal struct {
	UserID      string
	Tenant      string
	TenantKind  TenantKind
	TenantRoles []TenantRole
	Pending     bool // self-registered and not yet verified: may do nothing
	Assignments []Assignment
	// CustomRoles are the individual roles of the principal's tenant that
	// its assignments may reference.
	CustomRoles map[RoleID]Role
}

// TenantInfo is what delegation needs to know about the target tenant.
type TenantInfo struct {
	Kind        TenantKind
	TenantRoles []TenantRole
}

// Resource is the thing a decision is about, as located by the caller.
//
// Owner is where it lives in its own tenant. Shared lists the provider-side
// locations it is visible in (e.g. a shared service case on an asset linked
// to a provider's customer machine). TenantPrivate resources (internal
// service cases and everything attached to them) are never visible outside
// Owner.Tenant, whatever Shared says.
type Resource struct {
	Owner         Location
	Shared        []Location
	TenantPrivate bool
}

// Decision is the outcome of a check. Reason is a human-readable sentence
// naming the missing permission when denied, e.g.
// "denied: needs Internal Service Cases = manage on asset A1; you have none".
type Decision struct {
	Allowed bool
	Reason  string
}
