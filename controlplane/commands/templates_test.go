package commands_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/gantry-iot/gantry/controlplane/authz"
	"github.com/gantry-iot/gantry/controlplane/commands"
	"github.com/gantry-iot/gantry/controlplane/fleet"
	"github.com/gantry-iot/gantry/controlplane/identity"
	"github.com/gantry-iot/gantry/controlplane/store"
	"github.com/gantry-iot/gantry/controlplane/store/storetest"
	"github.com/gantry-iot/gantry/pkg/machinemodel"
	"github.com/gantry-iot/gantry/pkg/topics"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
)

// agentBroker stands in for the broker and the agents behind it: it
// records every template sent and acknowledges it as applied. Safe for
// concurrent use.
type agentBroker struct {
	mu    sync.Mutex
	onAck func(topic string, payload []byte)
	sent  map[string][]*gantryv1.DeviceTemplate // device → templates in order
}

func (b *agentBroker) Subscribe(_ string, h func(topic string, payload []byte)) error {
	b.mu.Lock()
	b.onAck = h
	b.mu.Unlock()
	return nil
}

func (b *agentBroker) Publish(topic string, payload []byte, _ bool, _ byte) error {
	dev, _, err := topics.Parse(topic)
	if err != nil {
		return err
	}
	var sc gantryv1.SignedCommand
	var c gantryv1.Command
	if err := proto.Unmarshal(payload, &sc); err != nil {
		return err
	}
	if err := proto.Unmarshal(sc.Command, &c); err != nil {
		return err
	}
	b.mu.Lock()
	if tpl := c.GetReloadConfig().GetTemplate(); tpl != nil {
		b.sent[dev] = append(b.sent[dev], tpl)
	}
	h := b.onAck
	b.mu.Unlock()
	ack, _ := proto.Marshal(&gantryv1.CommandAck{Nonce: c.Nonce, Ok: true})
	go h(topics.Device(dev, topics.CmdAck), ack)
	return nil
}

func (b *agentBroker) templates(dev string) []*gantryv1.DeviceTemplate {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]*gantryv1.DeviceTemplate(nil), b.sent[dev]...)
}

// templateWorld is a provider with a customer machine that names no
// model, an online device linked to it, and a model with an OPC-UA
// template; fleet's hooks drive template delivery as in the server.
type templateWorld struct {
	st       store.Store
	fleet    *fleet.Service
	tpls     *commands.Templates
	broker   *agentBroker
	provider store.Tenant
	operator store.Tenant
	facility store.Facility
	machine  store.CustomerMachine
	device   store.EdgeDevice
	model    store.MachineModel
}

func newTemplateWorld(t *testing.T, st store.Store) *templateWorld {
	t.Helper()
	ctx := context.Background()
	w := &templateWorld{st: st, broker: &agentBroker{sent: map[string][]*gantryv1.DeviceTemplate{}}}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	var err error
	w.provider, err = st.CreateTenant(ctx, store.Tenant{Name: "Builder", Kind: authz.KindServiceProvider})
	must(err)
	w.operator, err = st.CreateTenant(ctx, store.Tenant{Name: "Plant", Kind: authz.KindOperator})
	must(err)
	opcua, err := json.Marshal(machinemodel.OPCUA{EndpointURL: "opc.tcp://10.0.0.5:4840", SecurityMode: "None",
		DataPoints: []machinemodel.DataPoint{{NodeID: "ns=2;s=Spindle", Name: "spindle"}}})
	must(err)
	w.model, err = st.CreateMachineModel(ctx, store.MachineModel{TenantID: w.provider.ID, Name: "CNC-5X", OPCUAJSON: opcua})
	must(err)
	org, err := st.CreateServiceOrg(ctx, store.ServiceOrg{TenantID: w.provider.ID, Name: "Service"})
	must(err)
	cu, err := st.CreateCustomer(ctx, store.Customer{TenantID: w.provider.ID, ServiceOrgID: org.ID, Name: "Plant"})
	must(err)
	must(st.SetCustomerOperator(ctx, cu.ID, w.operator.ID))
	w.machine, err = st.CreateCustomerMachine(ctx, store.CustomerMachine{TenantID: w.provider.ID, CustomerID: cu.ID, Name: "Mill 1", SerialNumber: "M1"})
	must(err)
	w.device, err = st.CreateDevice(ctx, store.EdgeDevice{TenantID: w.provider.ID, Name: "gw", SerialNumber: "GW1"})
	must(err)
	must(st.LinkDevice(ctx, w.device.ID, w.machine.ID))
	must(st.SetDeviceOnline(ctx, w.device.ID, true, time.Now()))
	w.facility, err = st.CreateFacility(ctx, store.Facility{TenantID: w.operator.ID, Name: "Hall 1"})
	must(err)

	_, key, err := ed25519.GenerateKey(rand.Reader)
	must(err)
	d, err := commands.New(w.broker, key, nil)
	must(err)
	tpls := commands.NewTemplates(st, d, nil, nil)
	w.tpls = tpls
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); tpls.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-done })
	w.fleet = fleet.New(st, nil, nil)
	w.fleet.SetHooks(fleet.Hooks{
		DeviceLinked:   tpls.DeviceLinked,
		ModelUpdated:   func(id string) { go tpls.ModelUpdated(runCtx, id) },
		MachineChanged: func(id string) { go tpls.MachineChanged(runCtx, id) },
	})
	return w
}

// caller is a user of tenant with role assigned tenant-wide.
func caller(tenant store.Tenant, role authz.RoleID) *identity.Caller {
	return &identity.Caller{User: store.User{ID: "u-" + tenant.ID}, Tenant: tenant, Principal: authz.Principal{UserID: "u-" + tenant.ID,
		Tenant: tenant.ID, TenantKind: tenant.Kind,
		Assignments: []authz.Assignment{{Role: role, Scope: authz.Scope{Kind: authz.ScopeTenant, ID: tenant.ID}}}}}
}

// waitTemplate waits until the device was sent a template of modelID and
// the store records it as applied.
func (w *templateWorld) waitTemplate(t *testing.T, modelID string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		sent := w.broker.templates(w.device.ID)
		rec, err := w.st.GetDeviceTemplate(context.Background(), w.device.ID)
		if n := len(sent); n > 0 && sent[n-1].MachineModelId == modelID && len(sent[n-1].GetOpcua().GetDataPoints()) == 1 &&
			err == nil && rec.State == store.TemplateApplied && rec.ModelID == modelID {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("device was not sent the template of model %s: sent %v, recorded %+v (%v)", modelID, sent, rec, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestTemplateOnAcceptedProposal: a device whose customer machine names
// no model gets the OPC-UA template of the asset's model as soon as the
// operator accepts the proposal that links the machine to that asset.
func TestTemplateOnAcceptedProposal(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		w := newTemplateWorld(t, newStore(t))
		ctx := context.Background()
		p, err := w.st.CreateProposal(ctx, store.AssetProposal{ProviderTenantID: w.provider.ID, OperatorTenantID: w.operator.ID,
			CustomerMachineID: w.machine.ID, Name: w.machine.Name, SerialNumber: w.machine.SerialNumber, MachineModelID: w.model.ID,
			State: store.ProposalPending})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond) // nothing to send before the proposal is accepted
		if sent := w.broker.templates(w.device.ID); len(sent) != 0 {
			t.Fatalf("templates sent before the proposal was accepted: %v", sent)
		}
		a, err := w.fleet.AcceptProposal(ctx, caller(w.operator, authz.WorkshopManager), p.ID, w.facility.ID)
		if err != nil {
			t.Fatal(err)
		}
		if a.MachineModelID != w.model.ID || a.CustomerMachineID != w.machine.ID {
			t.Fatalf("accepted asset %+v", a)
		}
		w.waitTemplate(t, w.model.ID)
	})
}

// TestTemplateOnLink: linking a device to a machine with a model sends
// that model's template (the trigger the machine-changed one mirrors), and
// the device view names the model.
func TestTemplateOnLink(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		w := newTemplateWorld(t, newStore(t))
		ctx := context.Background()
		m, err := w.st.CreateCustomerMachine(ctx, store.CustomerMachine{TenantID: w.provider.ID, CustomerID: w.machine.CustomerID,
			Name: "Mill 2", MachineModelID: w.model.ID})
		if err != nil {
			t.Fatal(err)
		}
		st := caller(w.provider, authz.ServiceTechnician)
		if _, err := w.fleet.LinkDevice(ctx, st, w.device.ID, m.ID); err != nil {
			t.Fatal(err)
		}
		w.waitTemplate(t, w.model.ID)
		// GetDevice shows which model the delivered template came from.
		v, err := w.fleet.GetDevice(ctx, st, w.device.ID)
		if err != nil || v.Template == nil || v.Template.ModelID != w.model.ID || v.TemplateModel != "CNC-5X" || v.Template.State != store.TemplateApplied {
			t.Errorf("device view %+v, template %+v, %v; want applied from CNC-5X", v, v.Template, err)
		}
	})
}

// TestTemplateRightAfterReconnect: a device that just announced itself
// online, before presence wrote that to the store, still gets the
// template of a link made in that moment (it would otherwise keep its old
// template until its next reconnect).
func TestTemplateRightAfterReconnect(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		w := newTemplateWorld(t, newStore(t))
		ctx := context.Background()
		if err := w.st.SetDeviceOnline(ctx, w.device.ID, false, time.Now()); err != nil { // presence not written yet
			t.Fatal(err)
		}
		w.tpls.DeviceOnline(w.device.ID) // no model yet: nothing to send
		m, err := w.st.CreateCustomerMachine(ctx, store.CustomerMachine{TenantID: w.provider.ID, CustomerID: w.machine.CustomerID,
			Name: "Mill 2", MachineModelID: w.model.ID})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond) // the online check is done
		if _, err := w.fleet.LinkDevice(ctx, caller(w.provider, authz.ServiceTechnician), w.device.ID, m.ID); err != nil {
			t.Fatal(err)
		}
		w.waitTemplate(t, w.model.ID)
	})
}

// TestTemplateNotSentOffline: a device that is offline (and did not just
// announce itself) is not sent its template on a link; it gets it when it
// connects.
func TestTemplateNotSentOffline(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		w := newTemplateWorld(t, newStore(t))
		ctx := context.Background()
		if err := w.st.SetDeviceOnline(ctx, w.device.ID, false, time.Now()); err != nil {
			t.Fatal(err)
		}
		m, err := w.st.CreateCustomerMachine(ctx, store.CustomerMachine{TenantID: w.provider.ID, CustomerID: w.machine.CustomerID,
			Name: "Mill 2", MachineModelID: w.model.ID})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.fleet.LinkDevice(ctx, caller(w.provider, authz.ServiceTechnician), w.device.ID, m.ID); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		if sent := w.broker.templates(w.device.ID); len(sent) != 0 {
			t.Fatalf("template sent to an offline device: %v", sent)
		}
		w.tpls.DeviceOnline(w.device.ID)
		w.waitTemplate(t, w.model.ID)
	})
}
