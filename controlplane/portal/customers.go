package portal

import (
	"net/http"

	"github.com/gantry-iot/gantry/controlplane/authz"
	"github.com/gantry-iot/gantry/controlplane/cases"
	"github.com/gantry-iot/gantry/controlplane/errkind"
	"github.com/gantry-iot/gantry/controlplane/identity"
	"github.com/gantry-iot/gantry/controlplane/store"
)

// Customers and their machines for service providers (Customer
// Management ≥ read, within the caller's scope — the fleet service
// filters).

type customerRow struct {
	store.Customer
	OrgName  string
	Machines int
}

func (p *Portal) customersPage(w http.ResponseWriter, r *http.Request, c *identity.Caller) {
	cs, err := p.fleet.ListCustomers(r.Context(), c, "")
	if err != nil {
		p.fail(w, c, err)
		return
	}
	ms, err := p.fleet.ListMachines(r.Context(), c, "")
	if err != nil {
		p.fail(w, c, err)
		return
	}
	orgs, err := p.fleet.ListServiceOrgs(r.Context(), c)
	if err != nil {
		p.fail(w, c, err)
		return
	}
	orgName := map[string]string{}
	for _, o := range orgs {
		orgName[o.ID] = o.Name
	}
	count := map[string]int{}
	for _, m := range ms {
		count[m.CustomerID]++
	}
	rows := make([]customerRow, 0, len(cs))
	for _, cu := range cs {
		rows = append(rows, customerRow{Customer: cu, OrgName: orgName[cu.ServiceOrgID], Machines: count[cu.ID]})
	}
	p.render(w, http.StatusOK, "customers", map[string]any{"Nav": navFor(c, "customers"), "Customers": rows})
}

type machineRow struct {
	store.CustomerMachine
	ModelName string
	Cases     []cases.View
}

func (p *Portal) customerPage(w http.ResponseWriter, r *http.Request, c *identity.Caller) {
	id := r.PathValue("id")
	cs, err := p.fleet.ListCustomers(r.Context(), c, "")
	if err != nil {
		p.fail(w, c, err)
		return
	}
	var cu *store.Customer
	for i := range cs {
		if cs[i].ID == id {
			cu = &cs[i]
		}
	}
	if cu == nil { // another tenant's, outside the caller's scope, or none
		p.fail(w, c, errNotFound("customer", id))
		return
	}
	ms, err := p.fleet.ListMachines(r.Context(), c, cu.ID)
	if err != nil {
		p.fail(w, c, err)
		return
	}
	n := navFor(c, "customers")
	modelName := map[string]string{}
	if n.Models {
		models, err := p.fleet.ListModels(r.Context(), c)
		if err != nil {
			p.fail(w, c, err)
			return
		}
		for _, m := range models {
			modelName[m.ID] = m.Name
		}
	}
	rows := make([]machineRow, 0, len(ms))
	for _, m := range ms {
		row := machineRow{CustomerMachine: m, ModelName: modelName[m.MachineModelID]}
		// Cases of the machine's asset, for users who may read cases.
		if n.Cases && m.AssetID != "" {
			if row.Cases, err = p.cases.List(r.Context(), c, cases.ListFilter{AssetID: m.AssetID, Limit: 20}); err != nil {
				p.fail(w, c, err)
				return
			}
		}
		rows = append(rows, row)
	}
	p.render(w, http.StatusOK, "customer", map[string]any{"Nav": n, "Customer": cu, "Machines": rows,
		"CanReadCases": n.Cases, "CanReadModels": n.Models})
}

// customersVisible: the navigation shows customers to provider users with
// Customer Management ≥ read somewhere (the service filters by scope).
func customersVisible(c *identity.Caller) bool {
	return c.Tenant.Kind == authz.KindServiceProvider && c.Effective()[authz.CustomerManagement] >= authz.Read
}

// modelsVisible: the navigation shows machine models to provider users
// with Machine Models ≥ read for the whole tenant (models are
// tenant-wide; fleet.ListModels asks the same).
func modelsVisible(c *identity.Caller) bool {
	return modelsAllowed(c, authz.Read)
}

func modelsAllowed(c *identity.Caller, l authz.Level) bool {
	return c.Tenant.Kind == authz.KindServiceProvider &&
		authz.Decide(c.Principal, authz.MachineModels, l, authz.Resource{Owner: authz.Location{Tenant: c.Tenant.ID}}).Allowed
}

func errNotFound(what, id string) error {
	return errkind.NotFoundf("%s %q not found in your tenant", what, id)
}
