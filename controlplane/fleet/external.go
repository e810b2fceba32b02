package fleet

import (
	"context"
	"fmt"
	"strings"

	"github.com/gantry-iot/gantry/controlplane/authz"
	"github.com/gantry-iot/gantry/controlplane/errkind"
	"github.com/gantry-iot/gantry/controlplane/identity"
	"github.com/gantry-iot/gantry/controlplane/store"
)

// Case states external users may be restricted to.
var caseStates = map[string]bool{store.StateNew: true, store.StateInProgress: true, store.StateClosed: true}

// SetExternalUser defines (or replaces) the customer-portal restrictions
// of a user in the customer's operator tenant (seed 002). Needs Customer
// Management = manage on the customer.
func (s *Service) SetExternalUser(ctx context.Context, c *identity.Caller, customerID, userID string, p store.ExternalProfile) (store.ExternalUser, error) {
	if err := requireKind(c, authz.KindServiceProvider, "external users"); err != nil {
		return store.ExternalUser{}, err
	}
	cu, err := s.customer(ctx, c, customerID, authz.Manage, "define external users for this customer")
	if err != nil {
		return store.ExternalUser{}, err
	}
	if cu.OperatorTenantID == "" {
		return store.ExternalUser{}, errkind.New(errkind.Precondition, "customer_id", "customer %s is not on the platform yet; invite the customer first", cu.Name)
	}
	if err := identity.CheckID("user_id", userID); err != nil {
		return store.ExternalUser{}, err
	}
	u, err := s.repo.GetUser(ctx, userID)
	if err != nil || u.TenantID != cu.OperatorTenantID {
		return store.ExternalUser{}, errkind.NotFoundf("user %q is not a user of customer %s", userID, cu.Name)
	}
	facility := func(field, id string) error {
		if err := identity.CheckID(field, id); err != nil {
			return err
		}
		f, err := s.repo.GetFacility(ctx, id)
		if err != nil || f.TenantID != cu.OperatorTenantID {
			return errkind.Invalidf(field, "%q is not a site (facility) of customer %s", id, cu.Name)
		}
		return nil
	}
	if err := facility("address_facility_id", p.AddressFacility); err != nil {
		return store.ExternalUser{}, err
	}
	for i, f := range p.ReadFacilities {
		if err := facility(fmt.Sprintf("read_facility_ids[%d]", i), f); err != nil {
			return store.ExternalUser{}, err
		}
	}
	for i, f := range p.WriteFacilities {
		if err := facility(fmt.Sprintf("write_facility_ids[%d]", i), f); err != nil {
			return store.ExternalUser{}, err
		}
	}
	for i, r := range p.ResponsibleUsers {
		ru, err := s.repo.GetUser(ctx, r)
		if err != nil || ru.TenantID != c.Tenant.ID {
			return store.ExternalUser{}, errkind.Invalidf(fmt.Sprintf("responsible_user_ids[%d]", i), "%q is not a user of your tenant", r)
		}
	}
	for i, g := range p.ResponsibleGroups {
		if strings.TrimSpace(g) == "" || len(g) > 64 {
			return store.ExternalUser{}, errkind.Invalidf(fmt.Sprintf("responsible_groups[%d]", i), "group names have 1..64 characters")
		}
	}
	if len(p.ResponsibleUsers)+len(p.ResponsibleGroups) == 0 {
		return store.ExternalUser{}, errkind.Invalidf("responsible_user_ids", "name at least one responsible person or group: external users may only send cases to those")
	}
	for i, tt := range p.TicketTypes {
		if strings.TrimSpace(tt) == "" || len(tt) > 50 {
			return store.ExternalUser{}, errkind.Invalidf(fmt.Sprintf("ticket_types[%d]", i), "ticket types have 1..50 characters")
		}
	}
	if len(p.TicketTypes) == 0 {
		return store.ExternalUser{}, errkind.Invalidf("ticket_types", "name at least one ticket type the user may open")
	}
	for i, st := range p.Statuses {
		if !caseStates[st] {
			return store.ExternalUser{}, errkind.Invalidf(fmt.Sprintf("statuses[%d]", i), "%q: use new, in_progress or closed", st)
		}
	}
	if len(p.ContactName) > 100 || len(p.ContactEmail) > 254 || len(p.ContactPhone) > 40 {
		return store.ExternalUser{}, errkind.Invalidf("contact", "contact fields are too long")
	}
	if p.ContactEmail != "" {
		if _, err := identity.NormalizeEmail("contact.email", p.ContactEmail); err != nil {
			return store.ExternalUser{}, err
		}
	}
	e := store.ExternalUser{UserID: u.ID, TenantID: cu.OperatorTenantID, ProviderTenantID: c.Tenant.ID, CustomerID: cu.ID, Profile: p, UpdatedAt: s.now().UTC()}
	if err := s.repo.SetExternalUser(ctx, e); err != nil {
		return store.ExternalUser{}, fmt.Errorf("set external user: %w", err)
	}
	return e, nil
}

// GetExternalUser returns a user's profile to the provider that defined
// it (Customer Management ≥ read) or to the user themself.
func (s *Service) GetExternalUser(ctx context.Context, c *identity.Caller, userID string) (store.ExternalUser, error) {
	if userID == "" {
		userID = c.User.ID
	}
	if err := identity.CheckID("user_id", userID); err != nil {
		return store.ExternalUser{}, err
	}
	e, err := s.repo.GetExternalUser(ctx, userID)
	if err != nil {
		return store.ExternalUser{}, errkind.NotFoundf("user %q has no external-user profile visible to you", userID)
	}
	if userID == c.User.ID {
		return e, nil
	}
	if e.ProviderTenantID != c.Tenant.ID {
		return store.ExternalUser{}, errkind.NotFoundf("user %q has no external-user profile visible to you", userID)
	}
	if _, err := s.customer(ctx, c, e.CustomerID, authz.Read, "read external users of this customer"); err != nil {
		return store.ExternalUser{}, err
	}
	return e, nil
}
