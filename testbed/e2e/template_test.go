package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
	"github.com/gantry-iot/gantry/proto/gantry/v1/gantryv1connect"
	"github.com/gantry-iot/gantry/testbed/opcuasim"
)

// agentStatus is the part of the agent's GET /status the test reads.
type agentStatus struct {
	Template *struct {
		Source  string `json:"source"`
		Version uint64 `json:"version"`
		Points  int    `json:"points"`
		Error   string `json:"error"`
	} `json:"template"`
	OPCUA *struct {
		State  string `json:"state"`
		Points []struct {
			Point  string `json:"point"`
			Status string `json:"status"`
		} `json:"points"`
	} `json:"opcua"`
}

func readStatus(t *testing.T, url string) (agentStatus, bool) {
	t.Helper()
	var st agentStatus
	r, err := http.Get(url)
	if err != nil {
		return st, false
	}
	defer r.Body.Close()
	return st, json.NewDecoder(r.Body).Decode(&st) == nil
}

// TestTemplateDelivery: the agent starts with no template file; linking
// its device to a machine whose model has an OPC-UA template pointing at
// the simulator makes values arrive through the API within seconds; a data
// point added to the model's template arrives too; the agent, restarted
// while the control plane is down, collects with its persisted template;
// unlinking stops collection. GetDevice shows the delivered version and
// the agent's answer.
func TestTemplateDelivery(t *testing.T) {
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

	httpAddr, mqttAddr, data := freePort(t), freePort(t), t.TempDir()
	cpCmd := runControlPlane(t, httpAddr, mqttAddr, data)
	base := "http://" + httpAddr
	c := &controlPlane{url: base, http: &http.Client{Timeout: 40 * time.Second}}
	dc := gantryv1connect.NewDeviceServiceClient(c.http, base, connect.WithProtoJSON(), c.login(t, "st@acme.example"))
	mc := gantryv1connect.NewMachineModelServiceClient(c.http, base, connect.WithProtoJSON(), c.login(t, "mdm@acme.example"))
	ctx := context.Background()

	// The demo gateway's machine has the demo model (CNC-5X); point the
	// model's OPC-UA template at the simulator.
	ds, err := dc.ListDevices(ctx, connect.NewRequest(&gantryv1.ListDevicesRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	var machine string
	for _, d := range ds.Msg.Devices {
		if d.SerialNumber == "GW-DEMO-1" {
			machine = d.CustomerMachineId
		}
	}
	if machine == "" {
		t.Fatalf("demo gateway not linked: %v", ds.Msg.Devices)
	}
	ms, err := mc.ListMachineModels(ctx, connect.NewRequest(&gantryv1.ListMachineModelsRequest{}))
	if err != nil || len(ms.Msg.Models) == 0 {
		t.Fatalf("models: %v %v", ms, err)
	}
	model := ms.Msg.Models[0]
	model.Opcua = &gantryv1.OpcuaTemplate{EndpointUrl: sim.Endpoint(), SecurityMode: "None", DataPoints: []*gantryv1.DataPoint{
		{NodeId: opcuasim.NodeID(ns, "cnc1", "SpindleSpeed"), Name: "spindle", Unit: "rpm", SamplingIntervalMs: 100},
	}}
	if _, err := mc.UpdateMachineModel(ctx, connect.NewRequest(&gantryv1.UpdateMachineModelRequest{Model: model})); err != nil {
		t.Fatal(err)
	}

	dev, err := dc.CreateDevice(ctx, connect.NewRequest(&gantryv1.CreateDeviceRequest{Name: "Template gateway", SerialNumber: "GW-TPL"}))
	if err != nil {
		t.Fatal(err)
	}
	id := dev.Msg.Device.Id
	tok, err := dc.CreateEnrollmentToken(ctx, connect.NewRequest(&gantryv1.CreateEnrollmentTokenRequest{DeviceId: id}))
	if err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	if out, err := agentCmd(t, "enroll", "--server", base, "--token", tok.Msg.Token, "--state-dir", state).CombinedOutput(); err != nil {
		t.Fatalf("enroll: %v\n%s", err, out)
	}
	metrics := freePort(t)
	statusURL := "http://" + metrics + "/status"
	var agentLog syncBuffer
	var a *exec.Cmd
	startAgent := func() {
		a = agentCmd(t, "run", "--state-dir", state, "--metrics-listen", metrics) // no --opcua-template
		a.Stderr = &agentLog
		if err := a.Start(); err != nil {
			t.Fatal(err)
		}
	}
	stopAgent := func() {
		_ = a.Process.Signal(syscall.SIGTERM)
		_, _ = a.Process.Wait()
	}
	startAgent()
	defer func() { stopAgent() }()
	waitOnline(t, dc, id, true, 20*time.Second)
	if st, ok := readStatus(t, statusURL); !ok || st.OPCUA != nil || st.Template == nil || st.Template.Source != "" {
		t.Fatalf("agent without a template collects: %+v", st)
	}

	has := func(point string) (time.Time, bool) {
		r, err := dc.GetLatestValues(ctx, connect.NewRequest(&gantryv1.GetLatestValuesRequest{DeviceId: id}))
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range r.Msg.Values {
			if v.Point == point {
				return v.At.AsTime(), true
			}
		}
		return time.Time{}, false
	}
	waitPoint := func(what, point string, within time.Duration, newerThan time.Time) time.Duration {
		t.Helper()
		start := time.Now()
		for {
			if at, ok := has(point); ok && at.After(newerThan) {
				return time.Since(start)
			}
			if time.Since(start) > within {
				t.Fatalf("%s: no %s values within %v\nagent log:\n%s", what, point, within, agentLog.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	template := func() *gantryv1.TemplateStatus {
		r, err := dc.GetDevice(ctx, connect.NewRequest(&gantryv1.GetDeviceRequest{Id: id}))
		if err != nil {
			t.Fatal(err)
		}
		return r.Msg.Device.Template
	}
	waitTemplate := func(version uint64, state string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			ts := template()
			if ts.GetVersion() == version && ts.GetState() == state {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("device template %+v, want v%d %s", ts, version, state)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	if ts := template(); ts.GetState() != "none" {
		t.Errorf("template state before linking: %+v, want none", ts)
	}

	// Link → template v1 → values.
	if _, err := dc.LinkDevice(ctx, connect.NewRequest(&gantryv1.LinkDeviceRequest{Id: id, CustomerMachineId: machine})); err != nil {
		t.Fatal(err)
	}
	took := waitPoint("after linking", "spindle", 10*time.Second, time.Time{})
	t.Logf("link → first value through the API: %v", took.Round(time.Millisecond))
	waitTemplate(1, "applied")
	if ts := template(); ts.AppliedVersion != 1 || ts.Error != "" || ts.AckedAt == nil {
		t.Errorf("after v1: %+v", ts)
	}

	// The model's template gains a point → v2 → its values arrive.
	model.Opcua.DataPoints = append(model.Opcua.DataPoints, &gantryv1.DataPoint{NodeId: opcuasim.NodeID(ns, "cnc1", "Temperature"), Name: "temperature", Unit: "°C", SamplingIntervalMs: 100})
	if _, err := mc.UpdateMachineModel(ctx, connect.NewRequest(&gantryv1.UpdateMachineModelRequest{Model: model})); err != nil {
		t.Fatal(err)
	}
	took = waitPoint("after the model update", "temperature", 10*time.Second, time.Time{})
	t.Logf("model update → new point's first value through the API: %v", took.Round(time.Millisecond))
	waitTemplate(2, "applied")
	// A rename only (same template): nothing is sent again.
	model.Name += " (renamed)"
	if _, err := mc.UpdateMachineModel(ctx, connect.NewRequest(&gantryv1.UpdateMachineModelRequest{Model: model})); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if ts := template(); ts.Version != 2 || ts.State != "applied" {
		t.Errorf("after a rename: %+v, want v2 applied", ts)
	}
	// reload_config sends the current template again: still v2, applied.
	rc, err := dc.SendCommand(ctx, connect.NewRequest(&gantryv1.SendCommandRequest{DeviceId: id, Command: "reload_config"}))
	if err != nil || !rc.Msg.Ok {
		t.Fatalf("reload_config: %v %v", rc, err)
	}

	// Control plane down, agent restarted: it collects with the persisted
	// template (values go to its queue).
	_ = cpCmd.Process.Signal(os.Interrupt)
	_, _ = cpCmd.Process.Wait()
	stopAgent()
	startAgent()
	deadline := time.Now().Add(15 * time.Second)
	for {
		st, ok := readStatus(t, statusURL)
		good := 0
		if ok && st.OPCUA != nil {
			for _, p := range st.OPCUA.Points {
				if p.Status == "ok" {
					good++
				}
			}
		}
		if ok && st.Template != nil && st.Template.Source == "persisted" && st.Template.Version == 2 && good == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("restarted agent without the control plane: status %+v (2 points ok wanted)\nagent log:\n%s", st, agentLog.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	down := time.Now()
	time.Sleep(time.Second) // values collected while the control plane is down
	runControlPlane(t, httpAddr, mqttAddr, data)
	dc = gantryv1connect.NewDeviceServiceClient(c.http, base, connect.WithProtoJSON(), c.login(t, "st@acme.example"))
	waitPoint("after the control plane is back", "temperature", 20*time.Second, down)
	if ts := template(); ts.Version != 2 || ts.State != "applied" {
		t.Errorf("after reconnecting with the persisted template: %+v, want v2 applied (not sent again)", ts)
	}

	// Unlink → the empty template (v3) → collection stops.
	if _, err := dc.LinkDevice(ctx, connect.NewRequest(&gantryv1.LinkDeviceRequest{Id: id})); err != nil {
		t.Fatal(err)
	}
	waitTemplate(3, "applied")
	deadline = time.Now().Add(10 * time.Second)
	for {
		st, ok := readStatus(t, statusURL)
		if ok && st.OPCUA == nil && st.Template != nil && st.Template.Version == 3 && st.Template.Points == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after unlinking the agent still collects: %+v", st)
		}
		time.Sleep(100 * time.Millisecond)
	}
	b, err := os.ReadFile(filepath.Join(state, "opcua-template.json"))
	if err != nil {
		t.Fatal(err)
	}
	var persisted struct {
		Version uint64          `json:"version"`
		OPCUA   json.RawMessage `json:"opcua"`
	}
	if err := json.Unmarshal(b, &persisted); err != nil || persisted.Version != 3 {
		t.Errorf("persisted template after unlinking: %s (%v)", b, err)
	}
	if fi, err := os.Stat(filepath.Join(state, "opcua-template.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("persisted template mode %v (%v), want 0600", fi.Mode(), err)
	}
}
