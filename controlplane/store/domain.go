package store

import (
	"context"
	"time"
)

// Facility is a site or hall of an operator tenant.
type Facility struct {
	ID        string
	TenantID  string
	Name      string
	CreatedAt time.Time
}

// Asset is a machine on an operator's shop floor. When linked to a
// Service Provider, ProviderTenantID and CustomerMachineID name the
// provider-side machine it corresponds to.
type Asset struct {
	ID                string
	TenantID          string
	FacilityID        string
	Name              string
	SerialNumber      string
	MachineModelID    string
	ProviderTenantID  string
	CustomerMachineID string
	CreatedAt         time.Time
}

// Proposal states.
const (
	ProposalPending  = "pending"
	ProposalAccepted = "accepted"
	ProposalRejected = "rejected"
)

// AssetProposal is a provider's proposal of a customer machine to the
// customer's operator tenant.
type AssetProposal struct {
	ID                string
	ProviderTenantID  string
	OperatorTenantID  string
	CustomerMachineID string
	Name              string
	SerialNumber      string
	MachineModelID    string
	State             string
	AssetID           string
	CreatedAt         time.Time
}

// ServiceOrg is a provider's service organisation.
type ServiceOrg struct {
	ID        string
	TenantID  string
	Name      string
	CreatedAt time.Time
}

// Customer is a provider's customer; OperatorTenantID is the customer's
// operator tenant once it is on the platform.
type Customer struct {
	ID               string
	TenantID         string
	ServiceOrgID     string
	Name             string
	OperatorTenantID string
	CreatedAt        time.Time
}

// CustomerMachine is a machine of a customer as the provider sees it,
// linked to one operator asset once the proposal is accepted.
type CustomerMachine struct {
	ID             string
	TenantID       string
	CustomerID     string
	Name           string
	SerialNumber   string
	MachineModelID string
	AssetID        string
	CreatedAt      time.Time
}

// MachineModel is a provider's machine model with its templates, stored
// as validated JSON documents.
type MachineModel struct {
	ID               string
	TenantID         string
	Name             string
	RemoteAccessJSON []byte
	OPCUAJSON        []byte
	CompatibleApps   []string
	CreatedAt        time.Time
	UpdatedAt        time.Time
}

// Case kinds and states.
const (
	CaseInternal = "internal"
	CaseShared   = "shared"

	StateNew        = "new"
	StateInProgress = "in_progress"
	StateClosed     = "closed"
)

// Case is a service case of an operator tenant on one asset.
type Case struct {
	ID               string
	TenantID         string
	AssetID          string
	Kind             string
	Title            string
	Description      string
	State            string
	AssigneeID       string
	CreatedBy        string
	ProviderTenantID string // shared cases: the asset's provider when opened
	TicketType       string // optional ticket type (e.g. repair)
	Responsible      string // optional provider user ID or "group:<name>"
	CreatedAt        time.Time
	UpdatedAt        time.Time
}

// ExternalUser holds the customer-portal restrictions a provider set for a
// user of its customer's operator tenant (seed 002).
type ExternalUser struct {
	UserID           string
	TenantID         string // the customer's operator tenant
	ProviderTenantID string
	CustomerID       string
	Profile          ExternalProfile
	UpdatedAt        time.Time
}

// ExternalProfile is the restriction set of an external user.
type ExternalProfile struct {
	AddressFacility   string   `json:"address_facility"`
	ReadFacilities    []string `json:"read_facilities"`
	WriteFacilities   []string `json:"write_facilities"`
	ContactName       string   `json:"contact_name,omitempty"`
	ContactEmail      string   `json:"contact_email,omitempty"`
	ContactPhone      string   `json:"contact_phone,omitempty"`
	ResponsibleUsers  []string `json:"responsible_users"`
	ResponsibleGroups []string `json:"responsible_groups"`
	TicketTypes       []string `json:"ticket_types"`
	RestrictStatuses  bool     `json:"restrict_statuses"`
	Statuses          []string `json:"statuses"`
}

// ExternalUsers is the part of Store that holds external-user profiles.
type ExternalUsers interface {
	SetExternalUser(ctx context.Context, e ExternalUser) error
	// GetExternalUser returns ErrNotFound for users without a profile.
	GetExternalUser(ctx context.Context, userID string) (ExternalUser, error)
}

// ChatMessage is one message in a case's chat room.
type ChatMessage struct {
	ID             string
	CaseID         string
	AuthorID       string
	AuthorName     string
	AuthorTenantID string
	Body           string
	At             time.Time
}

// ScopeSet is a set of hierarchy nodes a query is limited to; All means
// the whole tenant.
type ScopeSet struct {
	All              bool
	Facilities       []string
	Assets           []string
	ServiceOrgs      []string
	Customers        []string
	CustomerMachines []string
}

// Empty reports whether the set admits nothing.
func (s ScopeSet) Empty() bool {
	return !s.All && len(s.Facilities)+len(s.Assets)+len(s.ServiceOrgs)+len(s.Customers)+len(s.CustomerMachines) == 0
}

// CaseCursor pages through cases newest first.
type CaseCursor struct {
	CreatedAt time.Time
	ID        string
}

// CaseQuery selects the cases one user may see. Exactly one of
// OperatorTenant (operator view: SharedScope limits shared cases,
// InternalScope internal ones, by facility/asset) and ProviderTenant
// (provider view: shared cases of assets linked to that provider, limited
// by ProviderScope over service org/customer/customer machine) is set.
type CaseQuery struct {
	OperatorTenant string
	SharedScope    ScopeSet
	InternalScope  ScopeSet

	ProviderTenant string
	ProviderScope  ScopeSet

	Kind       string
	State      string
	AssetID    string
	AssigneeID string
	// OnlyFacilities, when non-nil, further limits cases to assets in these
	// facilities (external users' read addresses).
	OnlyFacilities []string
	Limit          int
	Before         *CaseCursor
}

// Domain is the part of Store that holds the shop floor, customers,
// machine models and service cases.
type Domain interface {
	CreateTenant(ctx context.Context, t Tenant) (Tenant, error)

	CreateFacility(ctx context.Context, f Facility) (Facility, error)
	GetFacility(ctx context.Context, id string) (Facility, error)
	ListFacilities(ctx context.Context, tenantID string) ([]Facility, error)
	// UpdateFacility renames a facility of f.TenantID (ErrNotFound,
	// ErrConflict when the name is taken).
	UpdateFacility(ctx context.Context, f Facility) error
	CreateAsset(ctx context.Context, a Asset) (Asset, error)
	GetAsset(ctx context.Context, id string) (Asset, error)
	ListAssets(ctx context.Context, tenantID string) ([]Asset, error)
	// UpdateAsset sets name, serial number and facility of an asset of
	// a.TenantID; ErrNotFound when the asset or the facility is not in
	// that tenant.
	UpdateAsset(ctx context.Context, a Asset) error
	CreateProposal(ctx context.Context, p AssetProposal) (AssetProposal, error)
	GetProposal(ctx context.Context, id string) (AssetProposal, error)
	ListProposals(ctx context.Context, operatorTenantID string) ([]AssetProposal, error)
	// AcceptProposal atomically creates the asset, links the customer
	// machine to it and marks the proposal accepted; ErrUsed when the
	// proposal is no longer pending.
	AcceptProposal(ctx context.Context, proposalID string, a Asset) (Asset, error)
	// RejectProposal marks a pending proposal rejected; ErrUsed otherwise.
	RejectProposal(ctx context.Context, proposalID string) error

	CreateServiceOrg(ctx context.Context, o ServiceOrg) (ServiceOrg, error)
	GetServiceOrg(ctx context.Context, id string) (ServiceOrg, error)
	ListServiceOrgs(ctx context.Context, tenantID string) ([]ServiceOrg, error)
	CreateCustomer(ctx context.Context, c Customer) (Customer, error)
	GetCustomer(ctx context.Context, id string) (Customer, error)
	ListCustomers(ctx context.Context, tenantID string) ([]Customer, error)
	SetCustomerOperator(ctx context.Context, customerID, operatorTenantID string) error
	CreateCustomerMachine(ctx context.Context, m CustomerMachine) (CustomerMachine, error)
	GetCustomerMachine(ctx context.Context, id string) (CustomerMachine, error)
	ListCustomerMachines(ctx context.Context, tenantID string) ([]CustomerMachine, error)

	CreateMachineModel(ctx context.Context, m MachineModel) (MachineModel, error)
	GetMachineModel(ctx context.Context, id string) (MachineModel, error)
	ListMachineModels(ctx context.Context, tenantID string) ([]MachineModel, error)
	UpdateMachineModel(ctx context.Context, m MachineModel) error

	CreateCase(ctx context.Context, c Case) (Case, error)
	GetCase(ctx context.Context, id string) (Case, error)
	UpdateCase(ctx context.Context, c Case) error
	// ListCases returns the cases matching q, newest first, filtered in SQL.
	ListCases(ctx context.Context, q CaseQuery) ([]Case, error)
	AddChatMessage(ctx context.Context, m ChatMessage) (ChatMessage, error)
	// ListChatMessages returns the newest limit messages, oldest first.
	ListChatMessages(ctx context.Context, caseID string, limit int) ([]ChatMessage, error)
}

// EdgeDevice is a gateway running gantry-agent, owned by a provider.
type EdgeDevice struct {
	ID                string
	TenantID          string
	Name              string
	SerialNumber      string
	Model             string
	AgentVersion      string
	FirmwareVersion   string
	CustomerMachineID string
	CertSerial        string // current client certificate; empty until enrolled
	Online            bool
	LastSeen          time.Time
	CreatedAt         time.Time
}

// RevokedCert is a device certificate that is no longer valid.
type RevokedCert struct {
	Serial    string // hex, as pki.SerialString
	DeviceID  string
	RevokedAt time.Time
}

// DeviceOnline is one device's connection state at a time.
type DeviceOnline struct {
	ID     string
	Online bool
	At     time.Time
}

// EnrollmentToken is a one-time token for enrolling one device. Only the
// SHA-256 of the token is stored.
type EnrollmentToken struct {
	TokenHash []byte
	DeviceID  string
	TenantID  string
	CreatedBy string
	CreatedAt time.Time
	ExpiresAt time.Time
}

// Devices is the part of Store that holds edge devices.
type Devices interface {
	CreateDevice(ctx context.Context, d EdgeDevice) (EdgeDevice, error)
	GetDevice(ctx context.Context, id string) (EdgeDevice, error)
	ListDevices(ctx context.Context, tenantID string) ([]EdgeDevice, error)
	// ListDevicesOfAssets returns devices linked to machines of the given assets.
	ListDevicesOfAssets(ctx context.Context, assetIDs []string) ([]EdgeDevice, error)
	LinkDevice(ctx context.Context, id, customerMachineID string) error
	// SetDeviceCert records a device's new certificate serial and agent
	// version; the previous serial, if any and different, is added to the
	// revoked certificates in the same transaction.
	SetDeviceCert(ctx context.Context, id, certSerial, agentVersion string) error
	// ListDeviceCerts returns every enrolled device's current certificate
	// serial by device ID.
	ListDeviceCerts(ctx context.Context) (map[string]string, error)
	// ListRevokedCerts returns the revoked device certificates, oldest first.
	ListRevokedCerts(ctx context.Context) ([]RevokedCert, error)
	// SetDeviceOnline records a device's connection state.
	SetDeviceOnline(ctx context.Context, id string, online bool, at time.Time) error
	// SetDevicesOnline records many devices' connection states in one
	// transaction, in order (a later entry for the same device wins).
	// Unknown device IDs are skipped and counted in the result.
	SetDevicesOnline(ctx context.Context, states []DeviceOnline) (unknown int, err error)
	CreateEnrollmentToken(ctx context.Context, t EnrollmentToken) error
	// UseEnrollmentToken marks a token used and returns it: ErrNotFound,
	// ErrExpired or ErrUsed otherwise.
	UseEnrollmentToken(ctx context.Context, tokenHash []byte, now time.Time) (EnrollmentToken, error)
}

// Document owner kinds.
const (
	DocAsset        = "asset"
	DocMachineModel = "machine_model"
)

// Document is a file attached to an asset or a machine model. Content is
// loaded only by GetDocumentContent.
type Document struct {
	ID          string
	TenantID    string
	OwnerKind   string
	OwnerID     string
	Name        string
	ContentType string
	Size        int64
	SHA256      string
	UploadedBy  string
	CreatedAt   time.Time
}

// Documents is the part of Store that holds documents.
type Documents interface {
	CreateDocument(ctx context.Context, d Document, content []byte) (Document, error)
	GetDocument(ctx context.Context, id string) (Document, error)
	GetDocumentContent(ctx context.Context, id string) ([]byte, error)
	ListDocuments(ctx context.Context, ownerKind, ownerID string) ([]Document, error)
	DeleteDocument(ctx context.Context, id string) error
}

// ServiceContract is a provider's contract with a customer.
type ServiceContract struct {
	ID         string
	TenantID   string
	CustomerID string
	Name       string
	StartDate  string // YYYY-MM-DD
	EndDate    string // YYYY-MM-DD or empty
	Terms      string
	CreatedAt  time.Time
}

// Contracts is the part of Store that holds service contracts.
type Contracts interface {
	CreateServiceContract(ctx context.Context, c ServiceContract) (ServiceContract, error)
	ListServiceContracts(ctx context.Context, customerID string) ([]ServiceContract, error)
}

// Grant is a time-boxed remote-access grant on a service case.
type Grant struct {
	ID              string
	TenantID        string
	CaseID          string
	AssetID         string
	DeviceID        string
	ConnectionTypes []string
	ActivatedBy     string
	ActivatedAt     time.Time
	ExpiresAt       time.Time
	DeactivatedAt   time.Time
	DeactivatedBy   string
}

// Active reports whether the grant is in force at now.
func (g Grant) Active(now time.Time) bool {
	return g.ID != "" && g.DeactivatedAt.IsZero() && now.Before(g.ExpiresAt)
}

// Access request states.
const (
	RequestPending  = "pending"
	RequestApproved = "approved"
	RequestDeclined = "declined"
)

// AccessRequest is a provider's request to activate remote access.
type AccessRequest struct {
	ID                string
	CaseID            string
	RequestedBy       string
	RequesterTenantID string
	Reason            string
	DurationMinutes   int
	State             string
	DecidedBy         string
	CreatedAt         time.Time
}

// Grants is the part of Store that holds remote-access grants.
type Grants interface {
	// LatestGrant returns the case's most recent grant (ErrNotFound if none).
	LatestGrant(ctx context.Context, caseID string) (Grant, error)
	// ListActiveGrants returns every grant in force at now, of all
	// tenants (for the control plane's tunnel manager).
	ListActiveGrants(ctx context.Context, now time.Time) ([]Grant, error)
	CreateGrant(ctx context.Context, g Grant) (Grant, error)
	// ExtendGrant moves an active grant's expiry.
	ExtendGrant(ctx context.Context, id string, expires time.Time) error
	EndGrant(ctx context.Context, id, by string, at time.Time) error
	CreateAccessRequest(ctx context.Context, r AccessRequest) (AccessRequest, error)
	GetAccessRequest(ctx context.Context, id string) (AccessRequest, error)
	ListAccessRequests(ctx context.Context, caseID string) ([]AccessRequest, error)
	// DecideAccessRequest sets a pending request's state (ErrUsed if decided).
	DecideAccessRequest(ctx context.Context, id, state, by string) error
	// DeviceForMachine returns the device linked to a customer machine.
	DeviceForMachine(ctx context.Context, customerMachineID string) (EdgeDevice, error)
}

// Sample is one value of a device's data point.
type Sample struct {
	Point    string
	Value    float64
	Status   uint32
	At       time.Time
	BatchSeq uint64 // the agent's queue sequence of the batch that carried it
}

// SampleBatch is one device's telemetry batch.
type SampleBatch struct {
	DeviceID string
	Samples  []Sample
}

// Values is the part of Store that holds machine data.
type Values interface {
	// StoreSamples records samples as history and as latest values (a
	// sample older than the stored latest value does not replace it).
	StoreSamples(ctx context.Context, deviceID string, samples []Sample) error
	// StoreSampleBatches records many batches in one transaction (all or
	// none), with the result StoreSamples would give for each batch in
	// order: every sample becomes history, and the newest sample of a
	// point (the later one on equal times) becomes its latest value.
	StoreSampleBatches(ctx context.Context, batches []SampleBatch) error
	LatestValues(ctx context.Context, deviceID string) ([]Sample, error)
	// History returns a point's samples in [from, to), oldest first, at most limit.
	History(ctx context.Context, deviceID, point string, from, to time.Time, limit int) ([]Sample, error)
	// PruneHistory deletes history older than before.
	PruneHistory(ctx context.Context, before time.Time) (int64, error)
}

// Notification is an edge-rule event of a device (a data point's level
// changing between ok, warning and alarm) recorded for the operator
// tenant of the asset the device's machine is linked to.
type Notification struct {
	ID        string
	TenantID  string // the asset's operator tenant
	AssetID   string
	DeviceID  string
	Point     string
	Kind      string // "threshold"
	Level     string // ok, warning or alarm
	FromLevel string
	Value     float64
	Threshold float64
	At        time.Time // the agent's source time of the transition
	CreatedAt time.Time
	CaseID    string // the automatic internal case it opened, if any
}

// NotificationQuery selects notifications, newest first. Empty fields do
// not filter; AssetIDs, when not nil, is the set of allowed assets (an
// empty non-nil set matches nothing).
type NotificationQuery struct {
	TenantID string
	DeviceID string
	AssetIDs []string
	Limit    int // 0 → 100
}

// Notifications is the part of Store that holds notifications.
type Notifications interface {
	// AddNotification records n (ID and CreatedAt are set when empty). A
	// notification with the same device, point, level and time is the same
	// event delivered again: the stored one is returned with added false.
	AddNotification(ctx context.Context, n Notification) (stored Notification, added bool, error error)
	ListNotifications(ctx context.Context, q NotificationQuery) ([]Notification, error)
	// SetNotificationCase records the case a notification opened.
	SetNotificationCase(ctx context.Context, id, caseID string) error
	// OpenAutoCase returns the ID of a case that a notification of the
	// asset's point opened and that is not in state closedState ("" if
	// there is none).
	OpenAutoCase(ctx context.Context, assetID, point, closedState string) (string, error)
	// PruneNotifications deletes notifications whose event time is before
	// before, except those tied to a case not in state closedState (they
	// keep an open automatic case from being opened twice).
	PruneNotifications(ctx context.Context, before time.Time, closedState string) (int64, error)
}
