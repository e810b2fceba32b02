package notify_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gantry-iot/gantry/controlplane/authz"
	"github.com/gantry-iot/gantry/controlplane/notify"
	"github.com/gantry-iot/gantry/controlplane/store"
	"github.com/gantry-iot/gantry/controlplane/store/storetest"
	"github.com/gantry-iot/gantry/pkg/machinemodel"
	"github.com/gantry-iot/gantry/pkg/topics"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
)

// must returns v, panicking on err (setup steps; the test fails).
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func ptr(v float64) *float64 { return &v }

// linked creates a provider's device linked (through a customer machine
// of the given model) to a new asset of operator tenant op.
func linked(t *testing.T, st store.Store, provider, op store.Tenant, model string) (store.EdgeDevice, store.Asset) {
	t.Helper()
	ctx := context.Background()
	org := must(st.CreateServiceOrg(ctx, store.ServiceOrg{TenantID: provider.ID, Name: "org " + op.Name}))
	cu := must(st.CreateCustomer(ctx, store.Customer{TenantID: provider.ID, ServiceOrgID: org.ID, Name: "cust " + op.Name, OperatorTenantID: op.ID}))
	f := must(st.CreateFacility(ctx, store.Facility{TenantID: op.ID, Name: "plant"}))
	a := must(st.CreateAsset(ctx, store.Asset{TenantID: op.ID, FacilityID: f.ID, Name: "press " + op.Name, ProviderTenantID: provider.ID}))
	cm := must(st.CreateCustomerMachine(ctx, store.CustomerMachine{TenantID: provider.ID, CustomerID: cu.ID, Name: "m", SerialNumber: "SN-" + op.Name, MachineModelID: model, AssetID: a.ID}))
	d := must(st.CreateDevice(ctx, store.EdgeDevice{TenantID: provider.ID, Name: "gw " + op.Name, SerialNumber: "GW-" + op.Name}))
	if err := st.LinkDevice(ctx, d.ID, cm.ID); err != nil {
		t.Fatal(err)
	}
	return d, a
}

func batch(t *testing.T, evs ...*gantryv1.Event) []byte {
	t.Helper()
	return must(proto.Marshal(&gantryv1.EventBatch{Seq: 1, Events: evs}))
}

func ev(point, from, to string, v float64, at time.Time) *gantryv1.Event {
	return &gantryv1.Event{Point: point, Kind: "threshold", Level: to, FromLevel: from, Value: v, Threshold: 80, At: timestamppb.New(at)}
}

// TestIngest: events become notifications of the asset's operator tenant
// (once, despite redelivery); an alarm of a point with open_case_on_alarm
// opens one internal case per asset and point while it is open, and only
// for tenants with Operator Internal Service; events of unlinked devices
// and malformed messages are dropped.
func TestIngest(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		st := newStore(t)
		ctx := context.Background()
		provider := must(st.CreateTenant(ctx, store.Tenant{Name: "Provider", Kind: authz.KindServiceProvider}))
		withIS := must(st.CreateTenant(ctx, store.Tenant{Name: "OpIS", Kind: authz.KindOperator, TenantRoles: []authz.TenantRole{authz.OperatorInternalService}}))
		without := must(st.CreateTenant(ctx, store.Tenant{Name: "OpPlain", Kind: authz.KindOperator}))
		tpl := machinemodel.OPCUA{EndpointURL: "opc.tcp://m:4840", SecurityMode: "None", DataPoints: []machinemodel.DataPoint{
			{NodeID: "ns=2;s=T", Name: "temp", AlarmAbove: ptr(80), OpenCaseOnAlarm: true},
			{NodeID: "ns=2;s=P", Name: "pressure", AlarmAbove: ptr(80)},
		}}
		model := must(st.CreateMachineModel(ctx, store.MachineModel{TenantID: provider.ID, Name: "CNC", OPCUAJSON: must(json.Marshal(tpl))}))
		d1, a1 := linked(t, st, provider, withIS, model.ID)
		d2, a2 := linked(t, st, provider, without, model.ID)
		unlinked := must(st.CreateDevice(ctx, store.EdgeDevice{TenantID: provider.ID, Name: "spare", SerialNumber: "GW-spare"}))

		in := notify.New(st, nil, nil)
		t0 := time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC)
		topic := topics.Device(d1.ID, topics.Events)
		first := batch(t, ev("temp", "ok", "alarm", 91, t0), ev("pressure", "ok", "alarm", 99, t0))
		in.Handle(topic, first)
		in.Handle(topic, first) // redelivery
		in.Handle(topic, batch(t, ev("temp", "alarm", "ok", 70, t0.Add(time.Minute)), ev("temp", "ok", "alarm", 95, t0.Add(2*time.Minute))))
		in.Handle(topics.Device(d2.ID, topics.Events), batch(t, ev("temp", "ok", "alarm", 90, t0)))
		in.Handle(topics.Device(unlinked.ID, topics.Events), batch(t, ev("temp", "ok", "alarm", 90, t0)))
		in.Handle(topics.Device(d1.ID, topics.Telemetry), batch(t, ev("temp", "ok", "alarm", 90, t0.Add(time.Hour)))) // wrong topic
		in.Handle(topic, []byte{0xff, 0xff})
		in.Handle(topic, batch(t, ev("temp", "ok", "panic", 90, t0.Add(time.Hour)), ev("", "ok", "alarm", 90, t0.Add(time.Hour))))

		type row struct{ Tenant, Asset, Device, Point, From, Level string }
		list := func(q store.NotificationQuery) (rows []row, cases []string) {
			ns := must(st.ListNotifications(ctx, q))
			for _, n := range ns {
				rows = append(rows, row{n.TenantID, n.AssetID, n.DeviceID, n.Point, n.FromLevel, n.Level})
				cases = append(cases, n.CaseID)
			}
			return rows, cases
		}
		rows, cases := list(store.NotificationQuery{TenantID: withIS.ID})
		want := []row{ // newest first
			{withIS.ID, a1.ID, d1.ID, "temp", "ok", "alarm"},
			{withIS.ID, a1.ID, d1.ID, "temp", "alarm", "ok"},
			{withIS.ID, a1.ID, d1.ID, "pressure", "ok", "alarm"},
			{withIS.ID, a1.ID, d1.ID, "temp", "ok", "alarm"},
		}
		if diff := cmp.Diff(want, rows); diff != "" {
			t.Fatalf("tenant with internal service (-want +got):\n%s", diff)
		}
		// One automatic case for temp, joined by the second alarm; none for
		// pressure (not configured) or for the clearing event.
		if cases[0] == "" || cases[3] != cases[0] || cases[1] != "" || cases[2] != "" {
			t.Fatalf("case IDs %q", cases)
		}
		c := must(st.GetCase(ctx, cases[0]))
		if c.Kind != store.CaseInternal || c.TenantID != withIS.ID || c.AssetID != a1.ID || c.State != store.StateNew || c.CreatedBy != notify.CaseCreator {
			t.Errorf("automatic case %+v", c)
		}
		// Once that case is closed, the next alarm opens a new one.
		c.State = store.StateClosed
		if err := st.UpdateCase(ctx, c); err != nil {
			t.Fatal(err)
		}
		in.Handle(topic, batch(t, ev("temp", "alarm", "ok", 60, t0.Add(3*time.Minute)), ev("temp", "ok", "alarm", 85, t0.Add(4*time.Minute))))
		if _, cases = list(store.NotificationQuery{DeviceID: d1.ID, Limit: 1}); cases[0] == "" || cases[0] == c.ID {
			t.Errorf("alarm after the case closed: case %q (closed one %s)", cases[0], c.ID)
		}

		// The tenant without internal service gets the notification only.
		rows, cases = list(store.NotificationQuery{TenantID: without.ID})
		if diff := cmp.Diff([]row{{without.ID, a2.ID, d2.ID, "temp", "ok", "alarm"}}, rows); diff != "" || cases[0] != "" {
			t.Errorf("tenant without internal service (-want +got):\n%s\ncases %q", diff, cases)
		}
		// Asset filters: another tenant's asset or an empty set match nothing.
		if rows, _ := list(store.NotificationQuery{TenantID: withIS.ID, AssetIDs: []string{a2.ID}}); len(rows) != 0 {
			t.Errorf("cross-tenant asset filter: %v", rows)
		}
		if rows, _ := list(store.NotificationQuery{AssetIDs: []string{}}); len(rows) != 0 {
			t.Errorf("empty asset set: %v", rows)
		}
		if rows, _ := list(store.NotificationQuery{DeviceID: unlinked.ID}); len(rows) != 0 {
			t.Errorf("unlinked device: %v", rows)
		}
		if rows, _ := list(store.NotificationQuery{}); len(rows) != 7 {
			t.Errorf("%d notifications in all, want 7", len(rows))
		}
	})
}

// TestPruneNotifications: retention deletes notifications older than the
// cut-off, except one tied to a case that is still open (it stops a second
// automatic case for the same alarm); after that case closes it goes too.
func TestPruneNotifications(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, newStore storetest.Factory) {
		st := newStore(t)
		ctx := context.Background()
		provider := must(st.CreateTenant(ctx, store.Tenant{Name: "Provider", Kind: authz.KindServiceProvider}))
		op := must(st.CreateTenant(ctx, store.Tenant{Name: "Op", Kind: authz.KindOperator, TenantRoles: []authz.TenantRole{authz.OperatorInternalService}}))
		tpl := machinemodel.OPCUA{EndpointURL: "opc.tcp://m:4840", SecurityMode: "None", DataPoints: []machinemodel.DataPoint{
			{NodeID: "ns=2;s=T", Name: "temp", AlarmAbove: ptr(80), OpenCaseOnAlarm: true},
			{NodeID: "ns=2;s=P", Name: "pressure", AlarmAbove: ptr(80)},
		}}
		model := must(st.CreateMachineModel(ctx, store.MachineModel{TenantID: provider.ID, Name: "CNC", OPCUAJSON: must(json.Marshal(tpl))}))
		d, _ := linked(t, st, provider, op, model.ID)
		in := notify.New(st, nil, nil)
		old := time.Date(2026, 8, 1, 8, 0, 0, 0, time.UTC)
		cut := time.Date(2026, 9, 1, 0, 0, 0, 0, time.UTC)
		in.Handle(topics.Device(d.ID, topics.Events), batch(t,
			ev("temp", "ok", "alarm", 91, old),                    // opens a case
			ev("pressure", "ok", "alarm", 99, old),                // no case: old, goes
			ev("pressure", "alarm", "ok", 50, cut.Add(time.Hour)), // new: stays
		))
		points := func() []string {
			var ps []string
			for _, n := range must(st.ListNotifications(ctx, store.NotificationQuery{DeviceID: d.ID})) {
				ps = append(ps, n.Point+"/"+n.Level)
			}
			return ps
		}
		if n := must(st.PruneNotifications(ctx, cut, store.StateClosed)); n != 1 {
			t.Errorf("pruned %d, want 1 (the old pressure alarm)", n)
		}
		if diff := cmp.Diff([]string{"pressure/ok", "temp/alarm"}, points()); diff != "" {
			t.Fatalf("after the first prune (-want +got):\n%s", diff)
		}
		// Close the automatic case: its old notification goes next time.
		ns := must(st.ListNotifications(ctx, store.NotificationQuery{DeviceID: d.ID}))
		c := must(st.GetCase(ctx, ns[1].CaseID))
		c.State = store.StateClosed
		if err := st.UpdateCase(ctx, c); err != nil {
			t.Fatal(err)
		}
		if n := must(st.PruneNotifications(ctx, cut, store.StateClosed)); n != 1 {
			t.Errorf("pruned %d after the case closed, want 1", n)
		}
		if diff := cmp.Diff([]string{"pressure/ok"}, points()); diff != "" {
			t.Errorf("after the case closed (-want +got):\n%s", diff)
		}
	})
}

// FuzzHandle: any payload on any topic is ingested or rejected without a
// panic, and never creates a notification for an unknown device.
func FuzzHandle(f *testing.F) {
	st := storetest.SQLite(f)
	in := notify.New(st, nil, nil)
	at := time.Date(2026, 11, 24, 8, 0, 0, 0, time.UTC)
	seed, _ := proto.Marshal(&gantryv1.EventBatch{Seq: 1, Events: []*gantryv1.Event{ev("temp", "ok", "alarm", 90, at)}})
	f.Add("gantry/v1/dev/dev-1/events", seed)
	f.Add("gantry/v1/dev/dev-1/telemetry", seed)
	f.Add("gantry/v1/dev/+/events", []byte{0x0a, 0xff})
	f.Fuzz(func(t *testing.T, topic string, payload []byte) {
		in.Handle(topic, payload)
	})
	if ns, err := st.ListNotifications(context.Background(), store.NotificationQuery{}); err != nil || len(ns) != 0 {
		f.Errorf("notifications for unknown devices: %v %v", ns, err)
	}
}
