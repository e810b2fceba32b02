package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"os"
	"time"

	"github.com/gantry-iot/gantry/controlplane/authz"
	"github.com/gantry-iot/gantry/controlplane/identity"
	"github.com/gantry-iot/gantry/controlplane/store"
)

// DemoPassword is the password of every demo user (dev mode only).
const DemoPassword = "gantry-demo-1"

// DemoUser is one demo login.
type DemoUser struct {
	Tenant, Email, Role string
}

type demoTenant struct {
	name   string
	domain string
	kind   authz.TenantKind
	troles []authz.TenantRole
}

var demoTenants = []demoTenant{
	{"Acme Machine Builders", "acme.example", authz.KindServiceProvider, nil},
	{"Nordwerk Plant", "nordwerk.example", authz.KindOperator, []authz.TenantRole{authz.OperatorInternalService}},
	{"Sudhaus Foods", "sudhaus.example", authz.KindOperator, nil},
	{"Appforge", "appforge.example", authz.KindAppDeveloper, nil},
}

// demoLocal is the mailbox name used for a role's demo user.
var demoLocal = map[authz.RoleID]string{
	authz.MachineOperator: "mo", authz.WorkshopManager: "wm", authz.OperatorInternalCases: "oisc",
	authz.MaintenanceEngineer: "me", authz.FirstLevelSupport: "1ls", authz.ServiceTechnician: "st",
	authz.MasterDataManager: "mdm", authz.CustomerDataManager: "cdm", authz.ServiceManagerDeprecated: "sm",
}

// SeedDemo fills an empty store with demo tenants of each kind and one
// user per built-in role (password DemoPassword), the demo domain, and a
// demo gateway whose enrollment token goes to tokenFile (if not empty). It
// does nothing if any tenant exists.
func SeedDemo(ctx context.Context, id *identity.Service, st store.Store, tokenFile string) error {
	ts, err := st.ListTenants(ctx)
	if err != nil {
		return err
	}
	if len(ts) > 0 {
		return nil
	}
	tenants := map[string]store.Tenant{}
	for _, dt := range demoTenants {
		t, _, err := id.Bootstrap(ctx, store.Tenant{Name: dt.name, Kind: dt.kind, TenantRoles: dt.troles}, "admin@"+dt.domain, "Admin ("+dt.name+")", DemoPassword)
		if err != nil {
			return fmt.Errorf("tenant %s: %w", dt.name, err)
		}
		tenants[dt.domain] = t
		for _, r := range authz.BuiltinRoles(dt.kind) {
			local, ok := demoLocal[r.ID]
			if !ok || (r.Requires != "" && !contains(dt.troles, r.Requires)) {
				continue
			}
			_, err := id.CreateUserDirect(ctx, t.ID, local+"@"+dt.domain, r.Name+" ("+dt.name+")", DemoPassword,
				[]store.RoleGrant{{Role: r.ID}})
			if err != nil {
				return fmt.Errorf("user %s@%s: %w", local, dt.domain, err)
			}
		}
	}
	dev, err := seedDomain(ctx, st, tenants)
	if err != nil {
		return err
	}
	return writeDemoAgentToken(ctx, st, dev, tokenFile)
}

// writeDemoAgentToken issues a 30-day enrollment token for the demo
// gateway and writes it to tokenFile (0600) for the dev run script.
func writeDemoAgentToken(ctx context.Context, st store.Store, deviceID, tokenFile string) error {
	if tokenFile == "" {
		return nil
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	token := "gantry-enroll-" + base64.RawURLEncoding.EncodeToString(b)
	h := sha256.Sum256([]byte(token))
	now := time.Now().UTC()
	if err := st.CreateEnrollmentToken(ctx, store.EnrollmentToken{TokenHash: h[:], DeviceID: deviceID, TenantID: "", CreatedBy: "demo", CreatedAt: now, ExpiresAt: now.Add(30 * 24 * time.Hour)}); err != nil {
		return err
	}
	tmp := tokenFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(token+"\n"), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, tokenFile)
}

// seedDomain adds the demo shop floor, customers, machine model, cases,
// chat and a demo edge device: Acme's CNC-5X model on Nordwerk's and
// Sudhaus' assets. It returns the demo device's ID.
func seedDomain(ctx context.Context, st store.Store, tenants map[string]store.Tenant) (demoDevice string, err error) {
	acme, nord, sud := tenants["acme.example"], tenants["nordwerk.example"], tenants["sudhaus.example"]
	user := func(email string) (store.User, error) { return st.GetUserByEmail(ctx, email) }
	model, err := st.CreateMachineModel(ctx, store.MachineModel{TenantID: acme.ID, Name: "CNC-5X",
		RemoteAccessJSON: []byte(`{"connection_types":["vnc","data_link","ssc"],"vnc_targets":["192.168.10.20:5900"],"data_link_targets":["192.168.10.30:102","192.168.10.30:502","192.168.10.30:4840"],"machine_subnets":["192.168.10.0/24"]}`),
		// The site's agent config points the "machine" endpoint at the
		// local simulator in `make run` (deploy/dev/run.sh); node IDs are
		// the simulator's CNC profile.
		OPCUAJSON: []byte(`{"endpoint_url":"opc.tcp://192.168.10.30:4840","security_mode":"None","data_points":[` +
			`{"node_id":"ns=1;s=cnc1.SpindleSpeed","name":"Spindle speed","unit":"rpm","sampling_interval_ms":1000,"warn_above":9800},` +
			`{"node_id":"ns=1;s=cnc1.Temperature","name":"Temperature","unit":"°C","sampling_interval_ms":1000,"warn_above":48,"alarm_above":49.5,"hysteresis":1},` +
			`{"node_id":"ns=1;s=cnc1.Running","name":"Running","sampling_interval_ms":1000,"role":"running"},` +
			`{"node_id":"ns=1;s=cnc1.EnergyCounter","name":"Energy","unit":"kWh","sampling_interval_ms":1000,"role":"energy_kwh"}]}`)})
	if err != nil {
		return "", err
	}
	org, err := st.CreateServiceOrg(ctx, store.ServiceOrg{TenantID: acme.ID, Name: "Acme Service Europe"})
	if err != nil {
		return "", err
	}
	type site struct {
		tenant     store.Tenant
		facilities []string
		machines   []string // linked to Acme, one per facility in turn
		local      string   // unlinked asset
		domain     string
	}
	for _, s := range []site{
		{nord, []string{"Hall 1", "Hall 2"}, []string{"CNC-5X #1041", "CNC-5X #1042"}, "Compressor K3", "nordwerk.example"},
		{sud, []string{"Bottling"}, []string{"CNC-5X #2001"}, "", "sudhaus.example"},
	} {
		cu, err := st.CreateCustomer(ctx, store.Customer{TenantID: acme.ID, ServiceOrgID: org.ID, Name: s.tenant.Name, OperatorTenantID: s.tenant.ID})
		if err != nil {
			return "", err
		}
		var facilities []store.Facility
		for _, name := range s.facilities {
			f, err := st.CreateFacility(ctx, store.Facility{TenantID: s.tenant.ID, Name: name})
			if err != nil {
				return "", err
			}
			facilities = append(facilities, f)
		}
		var assets []store.Asset
		var firstMachine string
		for i, name := range s.machines {
			cm, err := st.CreateCustomerMachine(ctx, store.CustomerMachine{TenantID: acme.ID, CustomerID: cu.ID, Name: name, SerialNumber: name[len(name)-4:], MachineModelID: model.ID})
			if err != nil {
				return "", err
			}
			p, err := st.CreateProposal(ctx, store.AssetProposal{ProviderTenantID: acme.ID, OperatorTenantID: s.tenant.ID, CustomerMachineID: cm.ID,
				Name: name, SerialNumber: cm.SerialNumber, MachineModelID: model.ID, State: store.ProposalPending})
			if err != nil {
				return "", err
			}
			if firstMachine == "" {
				firstMachine = cm.ID
			}
			a, err := st.AcceptProposal(ctx, p.ID, store.Asset{TenantID: s.tenant.ID, FacilityID: facilities[i%len(facilities)].ID, Name: name,
				SerialNumber: cm.SerialNumber, MachineModelID: model.ID, ProviderTenantID: acme.ID, CustomerMachineID: cm.ID})
			if err != nil {
				return "", err
			}
			assets = append(assets, a)
		}
		if s.local != "" {
			if _, err := st.CreateAsset(ctx, store.Asset{TenantID: s.tenant.ID, FacilityID: facilities[0].ID, Name: s.local}); err != nil {
				return "", err
			}
		}
		mo, err := user("mo@" + s.domain)
		if err != nil {
			return "", err
		}
		shared, err := st.CreateCase(ctx, store.Case{TenantID: s.tenant.ID, AssetID: assets[0].ID, Kind: store.CaseShared, Title: "Spindle vibration above limit",
			Description: "Vibration alarm since the night shift; please check remotely.", State: store.StateNew, CreatedBy: mo.ID, ProviderTenantID: acme.ID})
		if err != nil {
			return "", err
		}
		st1, err := user("st@acme.example")
		if err != nil {
			return "", err
		}
		for _, m := range []store.ChatMessage{
			{CaseID: shared.ID, AuthorID: mo.ID, AuthorName: mo.DisplayName, AuthorTenantID: s.tenant.ID, Body: "The alarm came back after a restart."},
			{CaseID: shared.ID, AuthorID: st1.ID, AuthorName: st1.DisplayName, AuthorTenantID: acme.ID, Body: "Thanks — please activate remote access, I will check the drive parameters."},
		} {
			if _, err := st.AddChatMessage(ctx, m); err != nil {
				return "", err
			}
		}
		if s.tenant.ID == nord.ID {
			gw, err := st.CreateDevice(ctx, store.EdgeDevice{TenantID: acme.ID, Name: "Demo gateway (Nordwerk Hall 1)", SerialNumber: "GW-DEMO-1", Model: "GW-100", CustomerMachineID: firstMachine})
			if err != nil {
				return "", err
			}
			demoDevice = gw.ID
			me, err := user("me@nordwerk.example")
			if err != nil {
				return "", err
			}
			in, err := st.CreateCase(ctx, store.Case{TenantID: nord.ID, AssetID: assets[0].ID, Kind: store.CaseInternal, Title: "Coolant pump noisy",
				Description: "Check before calling the machine builder.", State: store.StateInProgress, CreatedBy: me.ID, AssigneeID: me.ID})
			if err != nil {
				return "", err
			}
			if _, err := st.AddChatMessage(ctx, store.ChatMessage{CaseID: in.ID, AuthorID: me.ID, AuthorName: me.DisplayName, AuthorTenantID: nord.ID,
				Body: "Internal note: bearing likely; spare part in stock."}); err != nil {
				return "", err
			}
		}
	}
	return demoDevice, nil
}

// DemoLogins lists the demo users for printing.
func DemoLogins(ctx context.Context, st store.Store) ([]DemoUser, error) {
	ts, err := st.ListTenants(ctx)
	if err != nil {
		return nil, err
	}
	var out []DemoUser
	for _, t := range ts {
		us, err := st.ListUsers(ctx, t.ID)
		if err != nil {
			return nil, err
		}
		for _, u := range us {
			out = append(out, DemoUser{Tenant: t.Name, Email: u.Email, Role: u.DisplayName})
		}
	}
	return out, nil
}

func contains(rs []authz.TenantRole, r authz.TenantRole) bool {
	for _, x := range rs {
		if x == r {
			return true
		}
	}
	return false
}
