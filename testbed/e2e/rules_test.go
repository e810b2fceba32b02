package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/gantry-iot/gantry/pkg/machinemodel"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
	"github.com/gantry-iot/gantry/proto/gantry/v1/gantryv1connect"
	"github.com/gantry-iot/gantry/testbed/opcuasim"
)

// TestEdgeRulesNotification: a threshold crossing on the simulator
// (sim.Set) → the agent process's rules engine (delay fired by its Tick)
// → event record in the durable queue → .../events → control plane →
// a notification readable through the API, by the provider and by the
// asset's operator, within a few seconds. The running-hours total arrives
// as ordinary telemetry.
func TestEdgeRulesNotification(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real processes")
	}
	sim, err := opcuasim.New(opcuasim.Config{Profiles: []opcuasim.Profile{{Name: "cnc1", Kind: "cnc"}}, Interval: opcuasim.Duration(200 * time.Millisecond)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := sim.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Not stopped: see TestOPCUADataPath.
	ns := sim.Namespace()

	httpAddr, mqttAddr := freePort(t), freePort(t)
	runControlPlane(t, httpAddr, mqttAddr, t.TempDir())
	base := "http://" + httpAddr
	c := &controlPlane{url: base, http: &http.Client{Timeout: 20 * time.Second}}
	dc := gantryv1connect.NewDeviceServiceClient(c.http, base, connect.WithProtoJSON(), c.login(t, "st@acme.example"))
	ctx := context.Background()
	// Link the new gateway to the demo gateway's machine (an asset of
	// Nordwerk), so its events have an operator tenant.
	ds, err := dc.ListDevices(ctx, connect.NewRequest(&gantryv1.ListDevicesRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	var machine, asset string
	for _, d := range ds.Msg.Devices {
		if d.SerialNumber == "GW-DEMO-1" {
			machine, asset = d.CustomerMachineId, d.AssetId
		}
	}
	if machine == "" || asset == "" {
		t.Fatalf("demo gateway not linked: %v", ds.Msg.Devices)
	}
	// The demo model's Temperature point opens a case on alarm (Nordwerk
	// has Operator Internal Service).
	mc := gantryv1connect.NewMachineModelServiceClient(c.http, base, connect.WithProtoJSON(), c.login(t, "mdm@acme.example"))
	ms, err := mc.ListMachineModels(ctx, connect.NewRequest(&gantryv1.ListMachineModelsRequest{}))
	if err != nil || len(ms.Msg.Models) == 0 {
		t.Fatalf("models: %v %v", ms, err)
	}
	model := ms.Msg.Models[0]
	marked := false
	for _, d := range model.Opcua.DataPoints {
		if d.Name == "Temperature" {
			d.OpenCaseOnAlarm, marked = true, true
		}
	}
	if !marked {
		t.Fatalf("demo model has no Temperature point: %v", model.Opcua)
	}
	if _, err := mc.UpdateMachineModel(ctx, connect.NewRequest(&gantryv1.UpdateMachineModelRequest{Model: model})); err != nil {
		t.Fatal(err)
	}
	dev, err := dc.CreateDevice(ctx, connect.NewRequest(&gantryv1.CreateDeviceRequest{Name: "Rules gateway", SerialNumber: "GW-RULES"}))
	if err != nil {
		t.Fatal(err)
	}
	id := dev.Msg.Device.Id
	if _, err := dc.LinkDevice(ctx, connect.NewRequest(&gantryv1.LinkDeviceRequest{Id: id, CustomerMachineId: machine})); err != nil {
		t.Fatal(err)
	}
	tok, err := dc.CreateEnrollmentToken(ctx, connect.NewRequest(&gantryv1.CreateEnrollmentTokenRequest{DeviceId: id}))
	if err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	if out, err := agentCmd(t, "enroll", "--server", base, "--token", tok.Msg.Token, "--state-dir", state).CombinedOutput(); err != nil {
		t.Fatalf("enroll: %v\n%s", err, out)
	}
	warn, alarm := 70.0, 80.0
	tpl := machinemodel.OPCUA{EndpointURL: sim.Endpoint(), SecurityMode: "None", DataPoints: []machinemodel.DataPoint{
		{NodeID: opcuasim.NodeID(ns, "cnc1", "Temperature"), Name: "Temperature", Unit: "°C", SamplingIntervalMS: 100, WarnAbove: &warn, AlarmAbove: &alarm, Hysteresis: 2, DelayMS: 500},
		{NodeID: opcuasim.NodeID(ns, "cnc1", "Running"), Name: "running", SamplingIntervalMS: 100, Role: machinemodel.RoleRunning},
	}}
	b, _ := json.Marshal(tpl)
	tplFile := filepath.Join(t.TempDir(), "opcua.json")
	if err := os.WriteFile(tplFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	a := agentCmd(t, "run", "--state-dir", state, "--metrics-listen", "off", "--opcua-template", tplFile)
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			_ = a.Process.Signal(syscall.SIGTERM)
			_, _ = a.Process.Wait()
		}
	}
	defer stop()
	// Wait for data, and for the running-hours total published at start.
	deadline := time.Now().Add(20 * time.Second)
	for {
		r, err := dc.GetLatestValues(ctx, connect.NewRequest(&gantryv1.GetLatestValuesRequest{DeviceId: id}))
		if err != nil {
			t.Fatal(err)
		}
		have := map[string]bool{}
		for _, v := range r.Msg.Values {
			have[v.Point] = true
		}
		if have["Temperature"] && have["running.running_hours"] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Temperature and running.running_hours did not reach the control plane: %v", r.Msg.Values)
		}
		time.Sleep(200 * time.Millisecond)
	}

	nc := gantryv1connect.NewNotificationServiceClient(c.http, base, connect.WithProtoJSON(), c.login(t, "st@acme.example"))
	if r, err := nc.ListNotifications(ctx, connect.NewRequest(&gantryv1.ListNotificationsRequest{DeviceId: id})); err != nil || len(r.Msg.Notifications) != 0 {
		t.Fatalf("notifications before the crossing: %v %v", r, err)
	}
	if err := sim.Set(opcuasim.NodeID(ns, "cnc1", "Temperature"), 92.5); err != nil {
		t.Fatal(err)
	}
	changed := time.Now()
	var got *gantryv1.Notification
	for got == nil {
		r, err := nc.ListNotifications(ctx, connect.NewRequest(&gantryv1.ListNotificationsRequest{DeviceId: id}))
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Msg.Notifications) > 0 {
			got = r.Msg.Notifications[0]
			break
		}
		if time.Since(changed) > 5*time.Second {
			t.Fatal("no notification within 5 s of the threshold crossing")
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("notification visible through the API %v after the change (delay 500 ms)", time.Since(changed).Round(time.Millisecond))
	if got.Point != "Temperature" || got.Level != "alarm" || got.FromLevel != "ok" || got.Value != 92.5 || got.Threshold != alarm || got.AssetId != asset || got.DeviceId != id {
		t.Errorf("notification %v", got)
	}
	// The asset's operator reads it too, and the internal case it opened.
	moToken := c.login(t, "mo@nordwerk.example")
	oc := gantryv1connect.NewNotificationServiceClient(c.http, base, connect.WithProtoJSON(), moToken)
	r, err := oc.ListNotifications(ctx, connect.NewRequest(&gantryv1.ListNotificationsRequest{DeviceId: id}))
	if err != nil || len(r.Msg.Notifications) != 1 || r.Msg.Notifications[0].Id != got.Id {
		t.Errorf("operator's notifications: %v %v", r, err)
	}
	// The case is opened just after the notification is stored.
	for deadline := time.Now().Add(5 * time.Second); got.CaseId == "" && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		r, err := nc.ListNotifications(ctx, connect.NewRequest(&gantryv1.ListNotificationsRequest{DeviceId: id, Limit: 1}))
		if err != nil {
			t.Fatal(err)
		}
		got = r.Msg.Notifications[0]
	}
	if got.CaseId == "" {
		t.Errorf("the alarm opened no case")
	} else {
		cc := gantryv1connect.NewCaseServiceClient(c.http, base, connect.WithProtoJSON(), moToken)
		cs, err := cc.GetCase(ctx, connect.NewRequest(&gantryv1.GetCaseRequest{Id: got.CaseId}))
		if err != nil || cs.Msg.Case.Kind != "internal" || cs.Msg.Case.AssetId != asset {
			t.Errorf("automatic case: %v %v", cs, err)
		}
	}
	// Clearing: back below the alarm threshold minus the hysteresis.
	if err := sim.Set(opcuasim.NodeID(ns, "cnc1", "Temperature"), 40.0); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		r, err := nc.ListNotifications(ctx, connect.NewRequest(&gantryv1.ListNotificationsRequest{DeviceId: id}))
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Msg.Notifications) == 2 {
			if n := r.Msg.Notifications[0]; n.Level != "ok" || n.FromLevel != "alarm" {
				t.Errorf("clearing notification %v", n)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no clearing notification: %v", r.Msg.Notifications)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The running hours are saved at shutdown.
	stop()
	if _, err := os.Stat(filepath.Join(state, "running-hours.json")); err != nil {
		t.Errorf("running-hours state: %v", err)
	}
}
