package acceptance

import (
	"context"
	"net/http"
	"testing"

	"connectrpc.com/connect"
	"github.com/gantry-iot/gantry/controlplane/authz"
	"github.com/gantry-iot/gantry/controlplane/server/servertest"
	"github.com/gantry-iot/gantry/controlplane/store"
	"github.com/gantry-iot/gantry/proto/gantry/v1/gantryv1connect"
)

// actor is one user of the world.
type actor struct {
	ID, Tenant, Token string
}

// world is the case-rules.csv world (the parts that exist so far).
type world struct {
	t       *testing.T
	srv     *servertest.Server
	tenants map[string]store.Tenant // "P1", "O1", …
	actors  map[string]actor        // "O1/ME", "P1/ST-C2", …
	ids     map[string]string       // "F1", "A1", "C2", "M1", "S1", "I1", … → store IDs
}

type userSpec struct {
	name  string // part after the slash, e.g. "ME-F1"
	role  authz.RoleID
	scope authz.Scope // zero: tenant-wide
}

type tenantSpec struct {
	key    string
	kind   authz.TenantKind
	troles []authz.TenantRole
	users  []userSpec
}

var worldSpec = []tenantSpec{
	{"P1", authz.KindServiceProvider, nil, []userSpec{
		{"1LS", authz.FirstLevelSupport, authz.Scope{}},
		{"ST", authz.ServiceTechnician, authz.Scope{}},
		{"MDM", authz.MasterDataManager, authz.Scope{}},
		{"CDM", authz.CustomerDataManager, authz.Scope{}},
		{"ST-C2", authz.ServiceTechnician, authz.Scope{Kind: authz.ScopeCustomer, ID: "C2"}},
	}},
	{"P2", authz.KindServiceProvider, nil, []userSpec{{"ST", authz.ServiceTechnician, authz.Scope{}}}},
	{"O1", authz.KindOperator, []authz.TenantRole{authz.OperatorInternalService}, []userSpec{
		{"MO", authz.MachineOperator, authz.Scope{}},
		{"WM", authz.WorkshopManager, authz.Scope{}},
		{"OISC", authz.OperatorInternalCases, authz.Scope{}},
		{"ME", authz.MaintenanceEngineer, authz.Scope{}},
		{"ME2", authz.MaintenanceEngineer, authz.Scope{}},
		{"ME-F1", authz.MaintenanceEngineer, authz.Scope{Kind: authz.ScopeFacility, ID: "F1"}},
	}},
	{"O2", authz.KindOperator, nil, []userSpec{{"MO", authz.MachineOperator, authz.Scope{}}}},
}

// newWorld builds a fresh world in st and starts a control plane on it.
func newWorld(t *testing.T, st store.Store) *world {
	t.Helper()
	ctx := context.Background()
	w := &world{t: t, srv: servertest.Start(t, st), tenants: map[string]store.Tenant{}, actors: map[string]actor{}, ids: map[string]string{}}
	hash := servertest.PasswordHash(t)
	w.buildDomain(ctx, st, hash)
	for _, ts := range worldSpec {
		email := func(n string) string { return n + "@" + ts.key + ".example" }
		ten := w.tenants[ts.key]
		admin, err := st.GetUserByEmail(ctx, email("admin"))
		if err != nil {
			t.Fatalf("world: admin of %s: %v", ts.key, err)
		}
		w.actors[ts.key+"/admin"] = actor{ID: admin.ID, Tenant: ten.ID, Token: w.srv.Session(t, admin.ID, ten.ID)}
		for _, us := range ts.users {
			sc := us.scope
			if sc.Kind == "" {
				sc = authz.Scope{Kind: authz.ScopeTenant, ID: ten.ID}
			} else {
				sc.ID = w.id(sc.ID) // world names (F1, C2) → store IDs, created below first
			}
			u, err := st.CreateUser(ctx, store.User{TenantID: ten.ID, Email: email(us.name), DisplayName: ts.key + " " + us.name, PasswordHash: hash, Status: store.UserActive},
				[]store.RoleGrant{{Role: us.role, Scope: sc}}, "")
			if err != nil {
				t.Fatalf("world: user %s/%s: %v", ts.key, us.name, err)
			}
			w.actors[ts.key+"/"+us.name] = actor{ID: u.ID, Tenant: ten.ID, Token: w.srv.Session(t, u.ID, ten.ID)}
		}
	}
	w.buildCases(ctx, st)
	w.buildGrants(ctx, st)
	return w
}

// actor returns a world user by its "TENANT/NAME" key.
func (w *world) actor(key string) actor {
	w.t.Helper()
	a, ok := w.actors[key]
	if !ok {
		w.t.Fatalf("world has no user %q", key)
	}
	return a
}

// clients returns JSON-over-HTTP clients authenticated as key.
func (w *world) clients(key string) apiClients {
	opts := []connect.ClientOption{connect.WithProtoJSON(), servertest.Bearer(w.actor(key).Token)}
	var hc connect.HTTPClient = http.DefaultClient
	return apiClients{
		users: gantryv1connect.NewUserServiceClient(hc, w.srv.URL, opts...),
		roles: gantryv1connect.NewRoleServiceClient(hc, w.srv.URL, opts...),
	}
}

type apiClients struct {
	users gantryv1connect.UserServiceClient
	roles gantryv1connect.RoleServiceClient
}

// id returns the store ID of a world object name such as "F1" or "C2".
func (w *world) id(name string) string {
	w.t.Helper()
	id, ok := w.ids[name]
	if !ok {
		w.t.Fatalf("world has no object %q", name)
	}
	return id
}

func must[T any](t *testing.T, what string) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatalf("world: %s: %v", what, err)
		}
		return v
	}
}

// buildDomain creates the tenants with their admins and the shop floor,
// customers, machine model and cases of the world.
func (w *world) buildDomain(ctx context.Context, st store.Store, hash string) {
	t := w.t
	for _, ts := range worldSpec {
		ten, _, err := st.CreateTenantWithAdmin(ctx, store.Tenant{Name: "Tenant " + ts.key, Kind: ts.kind, TenantRoles: ts.troles},
			store.User{Email: "admin@" + ts.key + ".example", DisplayName: ts.key + " admin", PasswordHash: hash, Status: store.UserActive})
		if err != nil {
			t.Fatalf("world: tenant %s: %v", ts.key, err)
		}
		w.tenants[ts.key] = ten
	}
	p1, o1, o2 := w.tenants["P1"].ID, w.tenants["O1"].ID, w.tenants["O2"].ID
	m1 := must[store.MachineModel](t, "M1")(st.CreateMachineModel(ctx, store.MachineModel{TenantID: p1, Name: "M1",
		RemoteAccessJSON: []byte(`{"connection_types":["vnc","data_link","ssc"],"vnc_targets":["10.0.0.10:5900"],"data_link_targets":["10.0.0.20:502"],"machine_subnets":["10.0.0.0/24"],"ssc_ports":["tcp/7","udp/7"]}`),
		OPCUAJSON:        []byte(`{}`)}))
	w.ids["M1"] = m1.ID
	so := must[store.ServiceOrg](t, "service org")(st.CreateServiceOrg(ctx, store.ServiceOrg{TenantID: p1, Name: "P1 Service"}))
	w.ids["SO1"] = so.ID
	for _, c := range []struct{ name, op string }{{"C1", o1}, {"C2", o2}} {
		cu := must[store.Customer](t, c.name)(st.CreateCustomer(ctx, store.Customer{TenantID: p1, ServiceOrgID: so.ID, Name: c.name, OperatorTenantID: c.op}))
		w.ids[c.name] = cu.ID
	}
	for _, f := range []struct{ name, tenant string }{{"F1", o1}, {"F2", o1}, {"FB", o2}} {
		w.ids[f.name] = must[store.Facility](t, f.name)(st.CreateFacility(ctx, store.Facility{TenantID: f.tenant, Name: f.name})).ID
	}
	// Assets; linked ones go through an accepted proposal like in production.
	for _, a := range []struct{ name, tenant, facility, customer string }{
		{"A1", o1, "F1", "C1"}, {"A2", o1, "F1", ""}, {"A3", o1, "F2", "C1"}, {"B1", o2, "FB", "C2"},
	} {
		if a.customer == "" {
			w.ids[a.name] = must[store.Asset](t, a.name)(st.CreateAsset(ctx, store.Asset{TenantID: a.tenant, FacilityID: w.ids[a.facility], Name: a.name})).ID
			continue
		}
		cm := must[store.CustomerMachine](t, "machine "+a.name)(st.CreateCustomerMachine(ctx, store.CustomerMachine{TenantID: p1, CustomerID: w.ids[a.customer], Name: "CM-" + a.name, MachineModelID: m1.ID}))
		w.ids["CM-"+a.name] = cm.ID
		pr := must[store.AssetProposal](t, "proposal "+a.name)(st.CreateProposal(ctx, store.AssetProposal{ProviderTenantID: p1, OperatorTenantID: a.tenant,
			CustomerMachineID: cm.ID, Name: a.name, MachineModelID: m1.ID, State: store.ProposalPending}))
		as := must[store.Asset](t, a.name)(st.AcceptProposal(ctx, pr.ID, store.Asset{TenantID: a.tenant, FacilityID: w.ids[a.facility], Name: a.name,
			MachineModelID: m1.ID, ProviderTenantID: p1, CustomerMachineID: cm.ID}))
		w.ids[a.name] = as.ID
	}
	// Edge devices D1 (A1, enrolled and online), D3 (A3), DB1 (B1).
	for _, d := range []struct{ name, machine string }{{"D1", "CM-A1"}, {"D3", "CM-A3"}, {"DB1", "CM-B1"}} {
		dev := store.EdgeDevice{TenantID: p1, Name: d.name, SerialNumber: "SN-" + d.name, Model: "GW-100", CustomerMachineID: w.ids[d.machine]}
		if d.name == "D1" {
			dev.CertSerial, dev.Online = "world-cert", true
		}
		w.ids[d.name] = must[store.EdgeDevice](t, d.name)(st.CreateDevice(ctx, dev)).ID
	}
	// A pending proposal from P1 to O1 for rows 53/54.
	cm := must[store.CustomerMachine](t, "machine PX")(st.CreateCustomerMachine(ctx, store.CustomerMachine{TenantID: p1, CustomerID: w.ids["C1"], Name: "CM-PX", MachineModelID: m1.ID}))
	w.ids["PX"] = must[store.AssetProposal](t, "proposal PX")(st.CreateProposal(ctx, store.AssetProposal{ProviderTenantID: p1, OperatorTenantID: o1,
		CustomerMachineID: cm.ID, Name: "PX", MachineModelID: m1.ID, State: store.ProposalPending})).ID
	w.ids["CM-PX"] = cm.ID
}

// buildCases creates the world's cases; assignees need the users first.
func (w *world) buildCases(ctx context.Context, st store.Store) {
	t := w.t
	o1, o2, p1 := w.tenants["O1"].ID, w.tenants["O2"].ID, w.tenants["P1"].ID
	for _, c := range []struct{ name, tenant, opener, asset, kind, assignee string }{
		{"S1", o1, "O1/MO", "A1", store.CaseShared, ""}, {"S2", o1, "O1/MO", "A1", store.CaseShared, ""}, {"I1", o1, "O1/ME", "A1", store.CaseInternal, "O1/ME"},
		{"S3", o1, "O1/MO", "A3", store.CaseShared, ""}, {"I3", o1, "O1/ME", "A3", store.CaseInternal, "O1/ME2"}, {"SB", o2, "O2/MO", "B1", store.CaseShared, ""},
	} {
		cs := store.Case{TenantID: c.tenant, AssetID: w.ids[c.asset], Kind: c.kind, Title: c.name, State: store.StateNew, CreatedBy: w.actor(c.opener).ID}
		if c.kind == store.CaseShared {
			cs.ProviderTenantID = p1
		}
		if c.assignee != "" {
			cs.AssigneeID = w.actor(c.assignee).ID
		}
		w.ids[c.name] = must[store.Case](t, c.name)(st.CreateCase(ctx, cs)).ID
	}
}
