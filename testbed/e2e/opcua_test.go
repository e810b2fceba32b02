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

// TestOPCUADataPath: simulator → agent process (collector, queue, MQTT)
// → control plane → API returns the simulator's value within 2 s of the
// change.
func TestOPCUADataPath(t *testing.T) {
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
	// Not stopped at the end: closing gopcua's server while the agent's
	// collector (re)connects races inside gopcua (v0.8, seen with -race);
	// the test binary exits soon after.
	ns := sim.Namespace()

	httpAddr, mqttAddr := freePort(t), freePort(t)
	runControlPlane(t, httpAddr, mqttAddr, t.TempDir())
	base := "http://" + httpAddr
	c := &controlPlane{url: base, http: &http.Client{Timeout: 20 * time.Second}}
	dc := gantryv1connect.NewDeviceServiceClient(c.http, base, connect.WithProtoJSON(), c.login(t, "st@acme.example"))
	ctx := context.Background()
	dev, err := dc.CreateDevice(ctx, connect.NewRequest(&gantryv1.CreateDeviceRequest{Name: "OPC-UA gateway", SerialNumber: "GW-OPC"}))
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
	tpl := machinemodel.OPCUA{EndpointURL: sim.Endpoint(), SecurityMode: "None", DataPoints: []machinemodel.DataPoint{
		{NodeID: opcuasim.NodeID(ns, "cnc1", "Temperature"), Name: "temperature", Unit: "°C", SamplingIntervalMS: 100},
		{NodeID: opcuasim.NodeID(ns, "cnc1", "SpindleSpeed"), Name: "spindle", Unit: "rpm", SamplingIntervalMS: 100},
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
	defer func() { _ = a.Process.Signal(syscall.SIGTERM); _, _ = a.Process.Wait() }()
	latest := func(point string) (float64, bool) {
		r, err := dc.GetLatestValues(ctx, connect.NewRequest(&gantryv1.GetLatestValuesRequest{DeviceId: id}))
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range r.Msg.Values {
			if v.Point == point {
				return v.Value, true
			}
		}
		return 0, false
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, ok := latest("spindle"); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no spindle values reached the control plane")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := sim.Set(opcuasim.NodeID(ns, "cnc1", "Temperature"), 88.5); err != nil {
		t.Fatal(err)
	}
	changed := time.Now()
	for {
		if v, ok := latest("temperature"); ok && v == 88.5 {
			t.Logf("value visible through the API %v after the change", time.Since(changed).Round(time.Millisecond))
			break
		}
		if time.Since(changed) > 2*time.Second {
			t.Fatalf("the simulator's value did not reach the API within 2 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Browse: a Master Data Manager has the agent browse the machine's
	// address space to pick nodes for a template; 1st Level Support may not.
	mdm := gantryv1connect.NewDeviceServiceClient(c.http, base, connect.WithProtoJSON(), c.login(t, "mdm@acme.example"))
	br, err := mdm.BrowseDevice(ctx, connect.NewRequest(&gantryv1.BrowseDeviceRequest{DeviceId: id, MaxDepth: 4}))
	if err != nil {
		t.Fatalf("browse: %v", err)
	}
	want, found := opcuasim.NodeID(ns, "cnc1", "SpindleSpeed"), false
	for _, n := range br.Msg.Nodes {
		found = found || n.NodeId == want
	}
	if !found {
		t.Errorf("browse result lacks %s (%d nodes)", want, len(br.Msg.Nodes))
	}
	fls := gantryv1connect.NewDeviceServiceClient(c.http, base, connect.WithProtoJSON(), c.login(t, "1ls@acme.example"))
	if _, err := fls.BrowseDevice(ctx, connect.NewRequest(&gantryv1.BrowseDeviceRequest{DeviceId: id})); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Errorf("1st Level Support browses: %v", err)
	}
	// restart_collector is now available on the device.
	rc, err := dc.SendCommand(ctx, connect.NewRequest(&gantryv1.SendCommandRequest{DeviceId: id, Command: "restart_collector"}))
	if err != nil || !rc.Msg.Ok {
		t.Errorf("restart_collector: %v %v", rc, err)
	}
}
