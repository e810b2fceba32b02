package fleet

import (
	"context"
	"time"

	"github.com/gantry-iot/gantry/controlplane/authz"
	"github.com/gantry-iot/gantry/controlplane/errkind"
	"github.com/gantry-iot/gantry/controlplane/identity"
	"github.com/gantry-iot/gantry/controlplane/store"
)

// ListServiceOrgs lists the provider's service organisations the caller
// may read (Customer Management ≥ read).
func (s *Service) ListServiceOrgs(ctx context.Context, c *identity.Caller) ([]store.ServiceOrg, error) {
	if err := requireKind(c, authz.KindServiceProvider, "customer management"); err != nil {
		return nil, err
	}
	os, err := s.repo.ListServiceOrgs(ctx, c.Tenant.ID)
	if err != nil {
		return nil, err
	}
	if !allowedAnywhere(c, authz.CustomerManagement) {
		return nil, errkind.Deniedf("your roles give no Customer Management permission")
	}
	var out []store.ServiceOrg
	for _, o := range os {
		if allowedAt(c.Principal, authz.CustomerManagement, authz.Read, authz.Location{Tenant: o.TenantID, Chain: []authz.Scope{{Kind: authz.ScopeServiceOrg, ID: o.ID}}}) {
			out = append(out, o)
		}
	}
	return out, nil
}

// CreateServiceOrg adds a service organisation (Customer Management = manage).
func (s *Service) CreateServiceOrg(ctx context.Context, c *identity.Caller, name string) (store.ServiceOrg, error) {
	if err := requireKind(c, authz.KindServiceProvider, "customer management"); err != nil {
		return store.ServiceOrg{}, err
	}
	if err := need(c.Principal, authz.CustomerManagement, authz.Manage, tenantLoc(c), "create service organisations"); err != nil {
		return store.ServiceOrg{}, err
	}
	name, err := identity.CheckName("name", name)
	if err != nil {
		return store.ServiceOrg{}, err
	}
	o, err := s.repo.CreateServiceOrg(ctx, store.ServiceOrg{TenantID: c.Tenant.ID, Name: name, CreatedAt: s.now().UTC()})
	return o, wrapIf("create service organisation", err)
}

// ListCustomers lists customers the caller may read, optionally of one org.
func (s *Service) ListCustomers(ctx context.Context, c *identity.Caller, orgID string) ([]store.Customer, error) {
	if err := requireKind(c, authz.KindServiceProvider, "customer management"); err != nil {
		return nil, err
	}
	if !allowedAnywhere(c, authz.CustomerManagement) {
		return nil, errkind.Deniedf("your roles give no Customer Management permission")
	}
	cs, err := s.repo.ListCustomers(ctx, c.Tenant.ID)
	if err != nil {
		return nil, err
	}
	var out []store.Customer
	for _, cu := range cs {
		if (orgID == "" || cu.ServiceOrgID == orgID) && allowedAt(c.Principal, authz.CustomerManagement, authz.Read, customerLocation(cu)) {
			out = append(out, cu)
		}
	}
	return out, nil
}

// CreateCustomer adds a customer to a service organisation.
func (s *Service) CreateCustomer(ctx context.Context, c *identity.Caller, orgID, name string) (store.Customer, error) {
	if err := requireKind(c, authz.KindServiceProvider, "customer management"); err != nil {
		return store.Customer{}, err
	}
	if err := identity.CheckID("service_org_id", orgID); err != nil {
		return store.Customer{}, err
	}
	o, err := s.repo.GetServiceOrg(ctx, orgID)
	if err != nil || o.TenantID != c.Tenant.ID {
		return store.Customer{}, notFound("service organisation", orgID)
	}
	loc := authz.Location{Tenant: c.Tenant.ID, Chain: []authz.Scope{{Kind: authz.ScopeServiceOrg, ID: o.ID}}}
	if err := need(c.Principal, authz.CustomerManagement, authz.Manage, loc, "create customers here"); err != nil {
		return store.Customer{}, err
	}
	if name, err = identity.CheckName("name", name); err != nil {
		return store.Customer{}, err
	}
	cu, err := s.repo.CreateCustomer(ctx, store.Customer{TenantID: c.Tenant.ID, ServiceOrgID: orgID, Name: name, CreatedAt: s.now().UTC()})
	return cu, wrapIf("create customer", err)
}

func (s *Service) customer(ctx context.Context, c *identity.Caller, id string, l authz.Level, what string) (store.Customer, error) {
	if err := identity.CheckID("customer_id", id); err != nil {
		return store.Customer{}, err
	}
	cu, err := s.repo.GetCustomer(ctx, id)
	if err != nil || cu.TenantID != c.Tenant.ID {
		return store.Customer{}, notFound("customer", id)
	}
	return cu, need(c.Principal, authz.CustomerManagement, l, customerLocation(cu), what)
}

// InviteCustomer brings a customer onto the platform: it creates the
// customer's operator tenant and an invitation whose accepting user
// becomes the tenant's first user and Tenant Admin.
func (s *Service) InviteCustomer(ctx context.Context, c *identity.Caller, customerID, tenantName, adminEmail string) (store.Tenant, identity.Invite, error) {
	if err := requireKind(c, authz.KindServiceProvider, "customer management"); err != nil {
		return store.Tenant{}, identity.Invite{}, err
	}
	cu, err := s.customer(ctx, c, customerID, authz.Manage, "invite this customer")
	if err != nil {
		return store.Tenant{}, identity.Invite{}, err
	}
	if cu.OperatorTenantID != "" {
		return store.Tenant{}, identity.Invite{}, errkind.New(errkind.Precondition, "customer_id", "customer %s is already on the platform", cu.Name)
	}
	if tenantName == "" {
		tenantName = cu.Name
	}
	if tenantName, err = identity.CheckName("tenant_name", tenantName); err != nil {
		return store.Tenant{}, identity.Invite{}, err
	}
	email, err := identity.NormalizeEmail("admin_email", adminEmail)
	if err != nil {
		return store.Tenant{}, identity.Invite{}, err
	}
	t, err := s.repo.CreateTenant(ctx, store.Tenant{Name: tenantName, Kind: authz.KindOperator, CreatedAt: s.now().UTC()})
	if err != nil {
		return store.Tenant{}, identity.Invite{}, wrapStore("create customer tenant", err)
	}
	inv, err := s.id.InviteFirstAdmin(ctx, c, t, email)
	if err != nil {
		return store.Tenant{}, identity.Invite{}, err
	}
	if err := s.repo.SetCustomerOperator(ctx, cu.ID, t.ID); err != nil {
		return store.Tenant{}, identity.Invite{}, err
	}
	return t, inv, nil
}

// ListMachines lists customer machines the caller may read.
func (s *Service) ListMachines(ctx context.Context, c *identity.Caller, customerID string) ([]store.CustomerMachine, error) {
	if err := requireKind(c, authz.KindServiceProvider, "customer management"); err != nil {
		return nil, err
	}
	if !allowedAnywhere(c, authz.CustomerManagement) {
		return nil, errkind.Deniedf("your roles give no Customer Management permission")
	}
	ms, err := s.repo.ListCustomerMachines(ctx, c.Tenant.ID)
	if err != nil {
		return nil, err
	}
	var out []store.CustomerMachine
	for _, m := range ms {
		if customerID != "" && m.CustomerID != customerID {
			continue
		}
		loc, err := s.machineLocation(ctx, m)
		if err != nil {
			return nil, err
		}
		if allowedAt(c.Principal, authz.CustomerManagement, authz.Read, loc) {
			out = append(out, m)
		}
	}
	return out, nil
}

// CreateMachine adds a customer machine.
func (s *Service) CreateMachine(ctx context.Context, c *identity.Caller, customerID, name, serial, modelID string) (store.CustomerMachine, error) {
	if err := requireKind(c, authz.KindServiceProvider, "customer management"); err != nil {
		return store.CustomerMachine{}, err
	}
	cu, err := s.customer(ctx, c, customerID, authz.Manage, "add machines to this customer")
	if err != nil {
		return store.CustomerMachine{}, err
	}
	if name, err = identity.CheckName("name", name); err != nil {
		return store.CustomerMachine{}, err
	}
	if len(serial) > 100 {
		return store.CustomerMachine{}, errkind.Invalidf("serial_number", "at most 100 characters")
	}
	if modelID != "" {
		if err := identity.CheckID("machine_model_id", modelID); err != nil {
			return store.CustomerMachine{}, err
		}
		m, err := s.repo.GetMachineModel(ctx, modelID)
		if err != nil || m.TenantID != c.Tenant.ID {
			return store.CustomerMachine{}, notFound("machine model", modelID)
		}
	}
	m, err := s.repo.CreateCustomerMachine(ctx, store.CustomerMachine{TenantID: c.Tenant.ID, CustomerID: cu.ID, Name: name, SerialNumber: serial, MachineModelID: modelID, CreatedAt: s.now().UTC()})
	return m, wrapIf("create customer machine", err)
}

// ProposeAsset proposes a customer machine to the customer's operator
// tenant (Customer Management = manage at the machine).
func (s *Service) ProposeAsset(ctx context.Context, c *identity.Caller, machineID string) (store.AssetProposal, error) {
	if err := requireKind(c, authz.KindServiceProvider, "customer management"); err != nil {
		return store.AssetProposal{}, err
	}
	if err := identity.CheckID("customer_machine_id", machineID); err != nil {
		return store.AssetProposal{}, err
	}
	m, err := s.repo.GetCustomerMachine(ctx, machineID)
	if err != nil || m.TenantID != c.Tenant.ID {
		return store.AssetProposal{}, notFound("customer machine", machineID)
	}
	loc, err := s.machineLocation(ctx, m)
	if err != nil {
		return store.AssetProposal{}, err
	}
	if err := need(c.Principal, authz.CustomerManagement, authz.Manage, loc, "propose this machine"); err != nil {
		return store.AssetProposal{}, err
	}
	if m.AssetID != "" {
		return store.AssetProposal{}, errkind.New(errkind.Precondition, "customer_machine_id", "machine %s is already linked to an asset", m.Name)
	}
	cu, err := s.repo.GetCustomer(ctx, m.CustomerID)
	if err != nil {
		return store.AssetProposal{}, err
	}
	if cu.OperatorTenantID == "" {
		return store.AssetProposal{}, errkind.New(errkind.Precondition, "customer_machine_id", "customer %s is not on the platform yet; invite the customer first", cu.Name)
	}
	p, err := s.repo.CreateProposal(ctx, store.AssetProposal{ProviderTenantID: c.Tenant.ID, OperatorTenantID: cu.OperatorTenantID, CustomerMachineID: m.ID,
		Name: m.Name, SerialNumber: m.SerialNumber, MachineModelID: m.MachineModelID, State: store.ProposalPending, CreatedAt: s.now().UTC()})
	return p, wrapIf("propose asset", err)
}

// ListContracts lists a customer's service contracts (Customer Management ≥ read).
func (s *Service) ListContracts(ctx context.Context, c *identity.Caller, customerID string) ([]store.ServiceContract, error) {
	if err := requireKind(c, authz.KindServiceProvider, "service contracts"); err != nil {
		return nil, err
	}
	if _, err := s.customer(ctx, c, customerID, authz.Read, "read this customer's contracts"); err != nil {
		return nil, err
	}
	return s.repo.ListServiceContracts(ctx, customerID)
}

// CreateContract adds a service contract (Customer Management = manage).
func (s *Service) CreateContract(ctx context.Context, c *identity.Caller, sc store.ServiceContract) (store.ServiceContract, error) {
	if err := requireKind(c, authz.KindServiceProvider, "service contracts"); err != nil {
		return store.ServiceContract{}, err
	}
	if _, err := s.customer(ctx, c, sc.CustomerID, authz.Manage, "add contracts for this customer"); err != nil {
		return store.ServiceContract{}, err
	}
	name, err := identity.CheckName("name", sc.Name)
	if err != nil {
		return store.ServiceContract{}, err
	}
	start, err := time.Parse(time.DateOnly, sc.StartDate)
	if err != nil {
		return store.ServiceContract{}, errkind.Invalidf("start_date", "%q is not a date like 2026-01-31", sc.StartDate)
	}
	if sc.EndDate != "" {
		end, err := time.Parse(time.DateOnly, sc.EndDate)
		if err != nil {
			return store.ServiceContract{}, errkind.Invalidf("end_date", "%q is not a date like 2026-12-31", sc.EndDate)
		}
		if end.Before(start) {
			return store.ServiceContract{}, errkind.Invalidf("end_date", "the contract ends before it starts")
		}
	}
	if len(sc.Terms) > 10000 {
		return store.ServiceContract{}, errkind.Invalidf("terms", "at most 10000 characters")
	}
	out, err := s.repo.CreateServiceContract(ctx, store.ServiceContract{TenantID: c.Tenant.ID, CustomerID: sc.CustomerID, Name: name, StartDate: sc.StartDate, EndDate: sc.EndDate, Terms: sc.Terms, CreatedAt: s.now().UTC()})
	return out, wrapIf("create contract", err)
}
