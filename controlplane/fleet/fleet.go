// Package fleet manages the machines Gantry knows and where they sit: the
// operator's digital shop floor (facilities, assets, asset proposals), the
// provider's customer management (service organisations, customers,
// customer machines) and machine models with their templates. It also
// locates scope nodes and assets in those hierarchies for authorization.
package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/gantry-iot/gantry/controlplane/authz"
	"github.com/gantry-iot/gantry/controlplane/errkind"
	"github.com/gantry-iot/gantry/controlplane/identity"
	"github.com/gantry-iot/gantry/controlplane/store"
	"github.com/gantry-iot/gantry/pkg/machinemodel"
)

// Repo is the persistence fleet needs.
type Repo interface {
	CreateFacility(ctx context.Context, f store.Facility) (store.Facility, error)
	GetFacility(ctx context.Context, id string) (store.Facility, error)
	ListFacilities(ctx context.Context, tenantID string) ([]store.Facility, error)
	UpdateFacility(ctx context.Context, f store.Facility) error
	CreateAsset(ctx context.Context, a store.Asset) (store.Asset, error)
	GetAsset(ctx context.Context, id string) (store.Asset, error)
	ListAssets(ctx context.Context, tenantID string) ([]store.Asset, error)
	UpdateAsset(ctx context.Context, a store.Asset) error
	CreateProposal(ctx context.Context, p store.AssetProposal) (store.AssetProposal, error)
	GetProposal(ctx context.Context, id string) (store.AssetProposal, error)
	ListProposals(ctx context.Context, operatorTenantID string) ([]store.AssetProposal, error)
	// AcceptProposal atomically creates the asset, links it to the
	// provider's customer machine and marks the proposal accepted
	// (ErrUsed when it is no longer pending).
	AcceptProposal(ctx context.Context, proposalID string, a store.Asset) (store.Asset, error)
	RejectProposal(ctx context.Context, proposalID string) error

	CreateServiceOrg(ctx context.Context, o store.ServiceOrg) (store.ServiceOrg, error)
	GetServiceOrg(ctx context.Context, id string) (store.ServiceOrg, error)
	ListServiceOrgs(ctx context.Context, tenantID string) ([]store.ServiceOrg, error)
	CreateCustomer(ctx context.Context, c store.Customer) (store.Customer, error)
	GetCustomer(ctx context.Context, id string) (store.Customer, error)
	ListCustomers(ctx context.Context, tenantID string) ([]store.Customer, error)
	SetCustomerOperator(ctx context.Context, customerID, operatorTenantID string) error
	CreateCustomerMachine(ctx context.Context, m store.CustomerMachine) (store.CustomerMachine, error)
	GetCustomerMachine(ctx context.Context, id string) (store.CustomerMachine, error)
	ListCustomerMachines(ctx context.Context, tenantID string) ([]store.CustomerMachine, error)

	CreateMachineModel(ctx context.Context, m store.MachineModel) (store.MachineModel, error)
	GetMachineModel(ctx context.Context, id string) (store.MachineModel, error)
	ListMachineModels(ctx context.Context, tenantID string) ([]store.MachineModel, error)
	UpdateMachineModel(ctx context.Context, m store.MachineModel) error

	GetTenant(ctx context.Context, id string) (store.Tenant, error)
	CreateTenant(ctx context.Context, t store.Tenant) (store.Tenant, error)

	DeviceRepo
	DocRepo
	SetExternalUser(ctx context.Context, e store.ExternalUser) error
	GetExternalUser(ctx context.Context, userID string) (store.ExternalUser, error)
	GetUser(ctx context.Context, id string) (store.User, error)
	LatestValues(ctx context.Context, deviceID string) ([]store.Sample, error)
	History(ctx context.Context, deviceID, point string, from, to time.Time, limit int) ([]store.Sample, error)
	ListNotifications(ctx context.Context, q store.NotificationQuery) ([]store.Notification, error)
	CreateServiceContract(ctx context.Context, c store.ServiceContract) (store.ServiceContract, error)
	ListServiceContracts(ctx context.Context, customerID string) ([]store.ServiceContract, error)
}

// Service implements fleet use cases. Safe for concurrent use.
type Service struct {
	repo  Repo
	id    *identity.Service
	log   *slog.Logger
	now   func() time.Time
	hooks Hooks
}

// Hooks are told about changes other parts act on (OPC-UA template
// delivery to devices). They must not block.
type Hooks struct {
	// DeviceLinked: a device was linked to a customer machine or unlinked.
	DeviceLinked func(deviceID string)
	// ModelUpdated: a machine model's name or templates were replaced.
	ModelUpdated func(modelID string)
	// MachineChanged: the machine model the devices linked to a customer
	// machine take their template from may have changed (the machine was
	// linked to an asset, whose model counts when the machine names none).
	MachineChanged func(machineID string)
}

// SetHooks installs h; call it before serving.
func (s *Service) SetHooks(h Hooks) { s.hooks = h }

// New returns a Service. logger may be nil.
func New(repo Repo, id *identity.Service, logger *slog.Logger) *Service {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Service{repo: repo, id: id, log: logger, now: time.Now}
}

// ---- locating ----

// Locate implements identity.Locator: where a scope node sits.
func (s *Service) Locate(ctx context.Context, tenantID string, sc authz.Scope) (authz.Location, error) {
	bad := errkind.Invalidf("scope.id", "unknown %s %q in this tenant", sc.Kind, sc.ID)
	switch sc.Kind {
	case authz.ScopeTenant:
		if sc.ID != tenantID {
			return authz.Location{}, errkind.Invalidf("scope.id", "scope tenant %q is not this tenant", sc.ID)
		}
		return authz.Location{Tenant: tenantID}, nil
	case authz.ScopeFacility:
		f, err := s.repo.GetFacility(ctx, sc.ID)
		if err != nil || f.TenantID != tenantID {
			return authz.Location{}, bad
		}
		return authz.Location{Tenant: tenantID, Chain: []authz.Scope{sc}}, nil
	case authz.ScopeAsset:
		a, err := s.repo.GetAsset(ctx, sc.ID)
		if err != nil || a.TenantID != tenantID {
			return authz.Location{}, bad
		}
		return assetLocation(a), nil
	case authz.ScopeServiceOrg:
		o, err := s.repo.GetServiceOrg(ctx, sc.ID)
		if err != nil || o.TenantID != tenantID {
			return authz.Location{}, bad
		}
		return authz.Location{Tenant: tenantID, Chain: []authz.Scope{sc}}, nil
	case authz.ScopeCustomer:
		c, err := s.repo.GetCustomer(ctx, sc.ID)
		if err != nil || c.TenantID != tenantID {
			return authz.Location{}, bad
		}
		return customerLocation(c), nil
	case authz.ScopeCustomerMachine:
		m, err := s.repo.GetCustomerMachine(ctx, sc.ID)
		if err != nil || m.TenantID != tenantID {
			return authz.Location{}, bad
		}
		return s.machineLocation(ctx, m)
	}
	return authz.Location{}, errkind.Invalidf("scope.kind", "unknown scope kind %q", sc.Kind)
}

func assetLocation(a store.Asset) authz.Location {
	return authz.Location{Tenant: a.TenantID, Chain: []authz.Scope{{Kind: authz.ScopeFacility, ID: a.FacilityID}, {Kind: authz.ScopeAsset, ID: a.ID}}}
}

func customerLocation(c store.Customer) authz.Location {
	return authz.Location{Tenant: c.TenantID, Chain: []authz.Scope{{Kind: authz.ScopeServiceOrg, ID: c.ServiceOrgID}, {Kind: authz.ScopeCustomer, ID: c.ID}}}
}

func (s *Service) machineLocation(ctx context.Context, m store.CustomerMachine) (authz.Location, error) {
	c, err := s.repo.GetCustomer(ctx, m.CustomerID)
	if err != nil {
		return authz.Location{}, fmt.Errorf("customer of machine %s: %w", m.ID, err)
	}
	loc := customerLocation(c)
	loc.Chain = append(loc.Chain, authz.Scope{Kind: authz.ScopeCustomerMachine, ID: m.ID})
	return loc, nil
}

// AssetResource implements cases.Locator: an asset's operator location
// and, when linked, its provider-side location.
func (s *Service) AssetResource(ctx context.Context, a store.Asset) (authz.Resource, error) {
	res := authz.Resource{Owner: assetLocation(a)}
	if a.ProviderTenantID != "" && a.CustomerMachineID != "" {
		m, err := s.repo.GetCustomerMachine(ctx, a.CustomerMachineID)
		if err != nil {
			return authz.Resource{}, fmt.Errorf("customer machine of asset %s: %w", a.ID, err)
		}
		loc, err := s.machineLocation(ctx, m)
		if err != nil {
			return authz.Resource{}, err
		}
		res.Shared = []authz.Location{loc}
	}
	return res, nil
}

func need(p authz.Principal, f authz.Feature, l authz.Level, loc authz.Location, what string) error {
	if d := authz.Decide(p, f, l, authz.Resource{Owner: loc}); !d.Allowed {
		return errkind.Deniedf("cannot %s: %s", what, d.Reason)
	}
	return nil
}

func requireKind(c *identity.Caller, k authz.TenantKind, what string) error {
	if c.Tenant.Kind != k {
		return errkind.Deniedf("%s is for %s tenants; yours is a %s tenant", what, k, c.Tenant.Kind)
	}
	return nil
}

func notFound(what, id string) error {
	return errkind.NotFoundf("%s %q not found in your tenant", what, id)
}

func wrapStore(op string, err error) error {
	if errors.Is(err, store.ErrConflict) {
		return errkind.New(errkind.Conflict, "name", "%s: the name is already used", op)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// ---- machine models ----

// Model is a machine model with decoded templates.
type Model struct {
	ID, TenantID, Name string
	RemoteAccess       machinemodel.RemoteAccess
	OPCUA              machinemodel.OPCUA
	CompatibleApps     []string
}

func decodeModel(m store.MachineModel) (Model, error) {
	out := Model{ID: m.ID, TenantID: m.TenantID, Name: m.Name, CompatibleApps: m.CompatibleApps}
	if len(m.RemoteAccessJSON) > 0 {
		if err := json.Unmarshal(m.RemoteAccessJSON, &out.RemoteAccess); err != nil {
			return Model{}, fmt.Errorf("model %s remote-access template: %w", m.ID, err)
		}
	}
	if len(m.OPCUAJSON) > 0 {
		if err := json.Unmarshal(m.OPCUAJSON, &out.OPCUA); err != nil {
			return Model{}, fmt.Errorf("model %s OPC-UA template: %w", m.ID, err)
		}
	}
	return out, nil
}

func validateModel(m Model) error {
	if _, err := identity.CheckName("name", m.Name); err != nil {
		return err
	}
	ps := append(m.RemoteAccess.Validate(), m.OPCUA.Validate()...)
	if len(ps) > 0 {
		return errkind.Invalidf(ps[0].Path, "%s", ps.Error())
	}
	if len(m.CompatibleApps) > 100 {
		return errkind.Invalidf("compatible_apps", "at most 100 applications")
	}
	return nil
}

func encodeModel(m Model) store.MachineModel {
	ra, _ := json.Marshal(m.RemoteAccess)
	op, _ := json.Marshal(m.OPCUA)
	return store.MachineModel{ID: m.ID, TenantID: m.TenantID, Name: m.Name, RemoteAccessJSON: ra, OPCUAJSON: op, CompatibleApps: m.CompatibleApps}
}

func tenantLoc(c *identity.Caller) authz.Location { return authz.Location{Tenant: c.Tenant.ID} }

// ListModels lists the provider's machine models (Machine Models ≥ read).
func (s *Service) ListModels(ctx context.Context, c *identity.Caller) ([]Model, error) {
	if err := requireKind(c, authz.KindServiceProvider, "machine models"); err != nil {
		return nil, err
	}
	if err := need(c.Principal, authz.MachineModels, authz.Read, tenantLoc(c), "read machine models"); err != nil {
		return nil, err
	}
	ms, err := s.repo.ListMachineModels(ctx, c.Tenant.ID)
	if err != nil {
		return nil, err
	}
	out := make([]Model, 0, len(ms))
	for _, m := range ms {
		d, err := decodeModel(m)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

// GetModel returns one of the provider's models (Machine Models ≥ read).
func (s *Service) GetModel(ctx context.Context, c *identity.Caller, id string) (Model, error) {
	if err := identity.CheckID("id", id); err != nil {
		return Model{}, err
	}
	if err := need(c.Principal, authz.MachineModels, authz.Read, tenantLoc(c), "read machine models"); err != nil {
		return Model{}, err
	}
	m, err := s.repo.GetMachineModel(ctx, id)
	if err != nil || m.TenantID != c.Tenant.ID {
		return Model{}, notFound("machine model", id)
	}
	return decodeModel(m)
}

// CreateModel adds a machine model (Machine Models = manage).
func (s *Service) CreateModel(ctx context.Context, c *identity.Caller, m Model) (Model, error) {
	if err := requireKind(c, authz.KindServiceProvider, "machine models"); err != nil {
		return Model{}, err
	}
	if err := need(c.Principal, authz.MachineModels, authz.Manage, tenantLoc(c), "create machine models"); err != nil {
		return Model{}, err
	}
	m.ID, m.TenantID = "", c.Tenant.ID
	if err := validateModel(m); err != nil {
		return Model{}, err
	}
	sm := encodeModel(m)
	sm.CreatedAt = s.now().UTC()
	sm.UpdatedAt = sm.CreatedAt
	created, err := s.repo.CreateMachineModel(ctx, sm)
	if err != nil {
		return Model{}, wrapStore("create machine model", err)
	}
	m.ID = created.ID
	return m, nil
}

// UpdateModel replaces a model's name and templates (Machine Models = manage).
func (s *Service) UpdateModel(ctx context.Context, c *identity.Caller, m Model) (Model, error) {
	if err := identity.CheckID("model.id", m.ID); err != nil {
		return Model{}, err
	}
	if err := need(c.Principal, authz.MachineModels, authz.Manage, tenantLoc(c), "edit machine models and their templates"); err != nil {
		return Model{}, err
	}
	old, err := s.repo.GetMachineModel(ctx, m.ID)
	if err != nil || old.TenantID != c.Tenant.ID {
		return Model{}, notFound("machine model", m.ID)
	}
	m.TenantID = c.Tenant.ID
	if err := validateModel(m); err != nil {
		return Model{}, err
	}
	sm := encodeModel(m)
	sm.CreatedAt = old.CreatedAt
	sm.UpdatedAt = s.now().UTC()
	if err := s.repo.UpdateMachineModel(ctx, sm); err != nil {
		return Model{}, wrapStore("update machine model", err)
	}
	if h := s.hooks.ModelUpdated; h != nil {
		h(m.ID)
	}
	return m, nil
}
