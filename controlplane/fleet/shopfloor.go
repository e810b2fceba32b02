package fleet

import (
	"context"
	"errors"

	"github.com/gantry-iot/gantry/controlplane/authz"
	"github.com/gantry-iot/gantry/controlplane/errkind"
	"github.com/gantry-iot/gantry/controlplane/identity"
	"github.com/gantry-iot/gantry/controlplane/store"
)

// allowedAt reports whether p has f ≥ l at loc.
func allowedAt(p authz.Principal, f authz.Feature, l authz.Level, loc authz.Location) bool {
	return authz.Decide(p, f, l, authz.Resource{Owner: loc}).Allowed
}

// ListFacilities lists the facilities the caller may read (Digital
// Shopfloor ≥ read at the facility or at one of its assets).
func (s *Service) ListFacilities(ctx context.Context, c *identity.Caller) ([]store.Facility, error) {
	if err := requireKind(c, authz.KindOperator, "the digital shop floor"); err != nil {
		return nil, err
	}
	fs, err := s.repo.ListFacilities(ctx, c.Tenant.ID)
	if err != nil {
		return nil, err
	}
	assets, err := s.repo.ListAssets(ctx, c.Tenant.ID)
	if err != nil {
		return nil, err
	}
	visible := map[string]bool{}
	for _, a := range assets {
		if allowedAt(c.Principal, authz.DigitalShopfloor, authz.Read, assetLocation(a)) {
			visible[a.FacilityID] = true
		}
	}
	var out []store.Facility
	for _, f := range fs {
		loc := authz.Location{Tenant: c.Tenant.ID, Chain: []authz.Scope{{Kind: authz.ScopeFacility, ID: f.ID}}}
		if visible[f.ID] || allowedAt(c.Principal, authz.DigitalShopfloor, authz.Read, loc) {
			out = append(out, f)
		}
	}
	if out == nil && !allowedAnywhere(c, authz.DigitalShopfloor) {
		return nil, errkind.Deniedf("your roles give no Digital Shopfloor permission")
	}
	return out, nil
}

func allowedAnywhere(c *identity.Caller, f authz.Feature) bool {
	return c.Effective()[f] >= authz.Read
}

// CreateFacility adds a facility (Digital Shopfloor = manage, tenant-wide).
func (s *Service) CreateFacility(ctx context.Context, c *identity.Caller, name string) (store.Facility, error) {
	if err := requireKind(c, authz.KindOperator, "the digital shop floor"); err != nil {
		return store.Facility{}, err
	}
	if err := need(c.Principal, authz.DigitalShopfloor, authz.Manage, tenantLoc(c), "create facilities"); err != nil {
		return store.Facility{}, err
	}
	name, err := identity.CheckName("name", name)
	if err != nil {
		return store.Facility{}, err
	}
	f, err := s.repo.CreateFacility(ctx, store.Facility{TenantID: c.Tenant.ID, Name: name, CreatedAt: s.now().UTC()})
	return f, wrapIf("create facility", err)
}

func wrapIf(op string, err error) error {
	if err == nil {
		return nil
	}
	return wrapStore(op, err)
}

// facility loads a facility of the caller's tenant.
func (s *Service) facility(ctx context.Context, c *identity.Caller, id string) (store.Facility, authz.Location, error) {
	if err := identity.CheckID("facility_id", id); err != nil {
		return store.Facility{}, authz.Location{}, err
	}
	f, err := s.repo.GetFacility(ctx, id)
	if err != nil || f.TenantID != c.Tenant.ID {
		return store.Facility{}, authz.Location{}, notFound("facility", id)
	}
	return f, authz.Location{Tenant: c.Tenant.ID, Chain: []authz.Scope{{Kind: authz.ScopeFacility, ID: f.ID}}}, nil
}

// ListAssets lists assets the caller may read, optionally of one facility.
func (s *Service) ListAssets(ctx context.Context, c *identity.Caller, facilityID string) ([]store.Asset, error) {
	if err := requireKind(c, authz.KindOperator, "the digital shop floor"); err != nil {
		return nil, err
	}
	if !allowedAnywhere(c, authz.DigitalShopfloor) {
		return nil, errkind.Deniedf("your roles give no Digital Shopfloor permission")
	}
	if facilityID != "" {
		if _, _, err := s.facility(ctx, c, facilityID); err != nil {
			return nil, err
		}
	}
	as, err := s.repo.ListAssets(ctx, c.Tenant.ID)
	if err != nil {
		return nil, err
	}
	var out []store.Asset
	for _, a := range as {
		if (facilityID == "" || a.FacilityID == facilityID) && allowedAt(c.Principal, authz.DigitalShopfloor, authz.Read, assetLocation(a)) {
			out = append(out, a)
		}
	}
	return out, nil
}

// CreateAsset adds an asset to a facility (Digital Shopfloor = manage there).
func (s *Service) CreateAsset(ctx context.Context, c *identity.Caller, facilityID, name, serial string) (store.Asset, error) {
	if err := requireKind(c, authz.KindOperator, "the digital shop floor"); err != nil {
		return store.Asset{}, err
	}
	_, loc, err := s.facility(ctx, c, facilityID)
	if err != nil {
		return store.Asset{}, err
	}
	if err := need(c.Principal, authz.DigitalShopfloor, authz.Manage, loc, "add assets to this facility"); err != nil {
		return store.Asset{}, err
	}
	if name, err = identity.CheckName("name", name); err != nil {
		return store.Asset{}, err
	}
	if len(serial) > 100 {
		return store.Asset{}, errkind.Invalidf("serial_number", "at most 100 characters")
	}
	a, err := s.repo.CreateAsset(ctx, store.Asset{TenantID: c.Tenant.ID, FacilityID: facilityID, Name: name, SerialNumber: serial, CreatedAt: s.now().UTC()})
	return a, wrapIf("create asset", err)
}

// ListProposals lists asset proposals sent to the caller's tenant
// (Digital Shopfloor ≥ read).
func (s *Service) ListProposals(ctx context.Context, c *identity.Caller) ([]store.AssetProposal, error) {
	if err := requireKind(c, authz.KindOperator, "asset proposals"); err != nil {
		return nil, err
	}
	if !allowedAnywhere(c, authz.DigitalShopfloor) {
		return nil, errkind.Deniedf("your roles give no Digital Shopfloor permission")
	}
	return s.repo.ListProposals(ctx, c.Tenant.ID)
}

func (s *Service) proposal(ctx context.Context, c *identity.Caller, id string) (store.AssetProposal, error) {
	if err := identity.CheckID("id", id); err != nil {
		return store.AssetProposal{}, err
	}
	p, err := s.repo.GetProposal(ctx, id)
	if err != nil || p.OperatorTenantID != c.Tenant.ID {
		return store.AssetProposal{}, notFound("asset proposal", id)
	}
	if p.State != store.ProposalPending {
		return store.AssetProposal{}, errkind.New(errkind.Precondition, "id", "the proposal was already %s", p.State)
	}
	return p, nil
}

// AcceptProposal accepts a provider's proposal into a facility: the asset
// is created and linked to the provider (Digital Shopfloor = manage at
// the facility).
func (s *Service) AcceptProposal(ctx context.Context, c *identity.Caller, id, facilityID string) (store.Asset, error) {
	if err := requireKind(c, authz.KindOperator, "asset proposals"); err != nil {
		return store.Asset{}, err
	}
	_, loc, err := s.facility(ctx, c, facilityID)
	if err != nil {
		return store.Asset{}, err
	}
	if err := need(c.Principal, authz.DigitalShopfloor, authz.Manage, loc, "accept asset proposals into this facility"); err != nil {
		return store.Asset{}, err
	}
	p, err := s.proposal(ctx, c, id)
	if err != nil {
		return store.Asset{}, err
	}
	a, err := s.repo.AcceptProposal(ctx, p.ID, store.Asset{TenantID: c.Tenant.ID, FacilityID: facilityID, Name: p.Name, SerialNumber: p.SerialNumber,
		MachineModelID: p.MachineModelID, ProviderTenantID: p.ProviderTenantID, CustomerMachineID: p.CustomerMachineID, CreatedAt: s.now().UTC()})
	if errors.Is(err, store.ErrUsed) {
		return store.Asset{}, errkind.New(errkind.Precondition, "id", "the proposal was already decided")
	}
	if err != nil {
		return store.Asset{}, wrapStore("accept proposal", err)
	}
	if h := s.hooks.MachineChanged; h != nil {
		h(a.CustomerMachineID)
	}
	return a, nil
}

// RejectProposal declines a proposal (Digital Shopfloor = manage).
func (s *Service) RejectProposal(ctx context.Context, c *identity.Caller, id string) error {
	if err := requireKind(c, authz.KindOperator, "asset proposals"); err != nil {
		return err
	}
	if c.Effective()[authz.DigitalShopfloor] < authz.Manage {
		return errkind.Deniedf("cannot reject asset proposals: needs Digital Shopfloor = manage")
	}
	p, err := s.proposal(ctx, c, id)
	if err != nil {
		return err
	}
	if err := s.repo.RejectProposal(ctx, p.ID); errors.Is(err, store.ErrUsed) {
		return errkind.New(errkind.Precondition, "id", "the proposal was already decided")
	} else if err != nil {
		return err
	}
	return nil
}

func facilityLocation(f store.Facility) authz.Location {
	return authz.Location{Tenant: f.TenantID, Chain: []authz.Scope{{Kind: authz.ScopeFacility, ID: f.ID}}}
}

// MayManageFacility reports whether c may change the facility and add
// assets to it (Digital Shopfloor = manage there). For pages that hide
// what the user may not do; the service methods check again.
func MayManageFacility(c *identity.Caller, f store.Facility) bool {
	return c.Tenant.ID == f.TenantID && allowedAt(c.Principal, authz.DigitalShopfloor, authz.Manage, facilityLocation(f))
}

// MayManageAsset reports whether c may change the asset (Digital
// Shopfloor = manage at it), like MayManageFacility.
func MayManageAsset(c *identity.Caller, a store.Asset) bool {
	return c.Tenant.ID == a.TenantID && allowedAt(c.Principal, authz.DigitalShopfloor, authz.Manage, assetLocation(a))
}

// GetFacility returns a facility the caller may read (Digital Shopfloor ≥
// read at it or at one of its assets, as ListFacilities).
func (s *Service) GetFacility(ctx context.Context, c *identity.Caller, id string) (store.Facility, error) {
	if err := requireKind(c, authz.KindOperator, "the digital shop floor"); err != nil {
		return store.Facility{}, err
	}
	if err := identity.CheckID("id", id); err != nil {
		return store.Facility{}, err
	}
	fs, err := s.ListFacilities(ctx, c)
	if err != nil {
		return store.Facility{}, err
	}
	for _, f := range fs {
		if f.ID == id {
			return f, nil
		}
	}
	return store.Facility{}, notFound("facility", id)
}

// UpdateFacility renames a facility (Digital Shopfloor = manage at it).
func (s *Service) UpdateFacility(ctx context.Context, c *identity.Caller, id, name string) (store.Facility, error) {
	if err := requireKind(c, authz.KindOperator, "the digital shop floor"); err != nil {
		return store.Facility{}, err
	}
	f, loc, err := s.facility(ctx, c, id)
	if err != nil {
		return store.Facility{}, err
	}
	if err := need(c.Principal, authz.DigitalShopfloor, authz.Manage, loc, "rename this facility"); err != nil {
		return store.Facility{}, err
	}
	if f.Name, err = identity.CheckName("name", name); err != nil {
		return store.Facility{}, err
	}
	if err := s.repo.UpdateFacility(ctx, f); err != nil {
		return store.Facility{}, wrapStore("rename facility", err)
	}
	return f, nil
}

// GetAsset returns an asset the caller may read (Digital Shopfloor ≥ read
// at it). Assets of other tenants and out of scope are not found.
func (s *Service) GetAsset(ctx context.Context, c *identity.Caller, id string) (store.Asset, error) {
	if err := requireKind(c, authz.KindOperator, "the digital shop floor"); err != nil {
		return store.Asset{}, err
	}
	if err := identity.CheckID("id", id); err != nil {
		return store.Asset{}, err
	}
	if !allowedAnywhere(c, authz.DigitalShopfloor) {
		return store.Asset{}, errkind.Deniedf("your roles give no Digital Shopfloor permission")
	}
	a, err := s.repo.GetAsset(ctx, id)
	if err != nil || a.TenantID != c.Tenant.ID || !allowedAt(c.Principal, authz.DigitalShopfloor, authz.Read, assetLocation(a)) {
		return store.Asset{}, notFound("asset", id)
	}
	return a, nil
}

// UpdateAsset changes an asset's name and serial number and assigns it to
// a facility (Digital Shopfloor = manage at the asset and, when it moves,
// at the target facility). An empty facilityID keeps the facility.
func (s *Service) UpdateAsset(ctx context.Context, c *identity.Caller, id, facilityID, name, serial string) (store.Asset, error) {
	a, err := s.GetAsset(ctx, c, id)
	if err != nil {
		return store.Asset{}, err
	}
	if err := need(c.Principal, authz.DigitalShopfloor, authz.Manage, assetLocation(a), "change this asset"); err != nil {
		return store.Asset{}, err
	}
	if facilityID != "" && facilityID != a.FacilityID {
		_, loc, err := s.facility(ctx, c, facilityID)
		if err != nil {
			var ke *errkind.Error
			if errors.As(err, &ke) {
				ke.Field = "facility_id"
			}
			return store.Asset{}, err
		}
		if err := need(c.Principal, authz.DigitalShopfloor, authz.Manage, loc, "move assets into that facility"); err != nil {
			return store.Asset{}, err
		}
		a.FacilityID = facilityID
	}
	if a.Name, err = identity.CheckName("name", name); err != nil {
		return store.Asset{}, err
	}
	if len(serial) > 100 {
		return store.Asset{}, errkind.Invalidf("serial_number", "at most 100 characters")
	}
	a.SerialNumber = serial
	if err := s.repo.UpdateAsset(ctx, a); err != nil {
		return store.Asset{}, wrapStore("change asset", err)
	}
	return a, nil
}
