package e2e

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	paho "github.com/eclipse/paho.mqtt.golang"
	"google.golang.org/protobuf/proto"

	"github.com/gantry-iot/gantry/controlplane/extbroker"
	"github.com/gantry-iot/gantry/controlplane/pki"
	"github.com/gantry-iot/gantry/pkg/command"
	"github.com/gantry-iot/gantry/pkg/machinemodel"
	"github.com/gantry-iot/gantry/pkg/topics"
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
	if ts := template(); ts.AppliedVersion != 1 || ts.Error != "" || ts.AckedAt == nil || ts.MachineModelId != model.Id || ts.MachineModelName != model.Name {
		t.Errorf("after v1: %+v, want applied from model %s (%s)", ts, model.Name, model.Id)
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
	if ts := template(); ts.MachineModelId != "" || ts.MachineModelName != "" {
		t.Errorf("the empty template names model %s (%s)", ts.MachineModelName, ts.MachineModelId)
	}
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

// TestTemplateCommandRejected: someone who can write to the broker (here
// with a broker credential of the control plane's, on Mosquitto whose ACL
// lets gantry-controlplane write every cmd topic) but does not hold the
// command-signing key sends the agent process a template — signed with
// another key, unsigned, and one whose template was changed after
// signing. The agent rejects each (acks with "rejected: …"), collects
// nothing and persists nothing. Then a genuine template the site config
// cannot serve (its login's password file is missing) is refused with the
// agent's reason, which GetDevice shows; once the file exists,
// reload_config applies it.
func TestTemplateCommandRejected(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real processes")
	}
	bin := binaries(t)
	dataDir, brokerDir := t.TempDir(), t.TempDir()
	if out, err := exec.Command(filepath.Join(bin, "gantry-controlplane"), "mosquitto-files", "--data-dir", dataDir, "--out", brokerDir, "--hosts", "127.0.0.1,localhost").CombinedOutput(); err != nil {
		t.Fatalf("mosquitto-files: %v\n%s", err, out)
	}
	addr, _, _ := startMosquitto(t, brokerDir)
	cp := startControlPlaneArgs(t, dataDir, "--mqtt-external", "tls://"+addr, "--mqtt-crl-file", filepath.Join(brokerDir, "crl.pem"))
	dc, id, state := enrollDevice(t, cp, filepath.Join(bin, "gantry-agent"), "GW-TAMPER")
	metrics := freePort(t)
	pwFile := filepath.Join(t.TempDir(), "opcua.password")
	cfgFile := filepath.Join(t.TempDir(), "agent.json")
	cfgJSON := `{"opcua": {"endpoints": [{"name": "plc", "url": "opc.tcp://127.0.0.1:4840",
		"auth": {"type": "username", "username": "operator", "password_file": "` + pwFile + `"}}]}}`
	if err := os.WriteFile(cfgFile, []byte(cfgJSON), 0o600); err != nil {
		t.Fatal(err)
	}
	a := agentCmd(t, "run", "--config", cfgFile, "--state-dir", state, "--metrics-listen", metrics)
	var agentLog syncBuffer
	a.Stderr = &agentLog
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = a.Process.Signal(syscall.SIGTERM); _, _ = a.Process.Wait() }()
	waitOnline(t, dc, id, true, 30*time.Second)

	// The attacker's broker client.
	ca, err := pki.LoadOrCreateCA(filepath.Join(dataDir, "pki"), "Gantry control plane CA")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.IssueClient(extbroker.DefaultClientID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	o := paho.NewClientOptions().AddBroker("tls://" + addr).SetClientID("attacker").SetAutoReconnect(false).SetProtocolVersion(4).
		SetTLSConfig(&tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{cert}, ServerName: "127.0.0.1"})
	mc := paho.NewClient(o)
	if tok := mc.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("attacker connect: %v", tok.Error())
	}
	defer mc.Disconnect(100)
	acks := make(chan *gantryv1.CommandAck, 8)
	if tok := mc.Subscribe(topics.Device(id, topics.CmdAck), 1, func(_ paho.Client, m paho.Message) {
		var ack gantryv1.CommandAck
		if proto.Unmarshal(m.Payload(), &ack) == nil {
			acks <- &ack
		}
	}); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscribe acks: %v", tok.Error())
	}

	tpl := machinemodel.OPCUA{EndpointURL: "opc.tcp://127.0.0.1:4840", SecurityMode: "None", DataPoints: []machinemodel.DataPoint{{NodeID: "ns=2;s=x", Name: "x"}}}
	body := func() *gantryv1.Command {
		c := command.New(id, time.Minute, time.Now())
		c.Body = &gantryv1.Command_ReloadConfig{ReloadConfig: &gantryv1.ReloadConfig{Template: &gantryv1.DeviceTemplate{Version: 1, Hash: tpl.Hash(), Opcua: tpl.ToPB()}}}
		return c
	}
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	wrongKey, err := command.Sign(otherKey, body())
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := proto.Marshal(body())
	unsigned, _ := proto.Marshal(&gantryv1.SignedCommand{Command: raw})
	// Signed with the other key, then the endpoint changed: the signature
	// no longer covers the bytes either way.
	var sc gantryv1.SignedCommand
	_ = proto.Unmarshal(wrongKey, &sc)
	var edited gantryv1.Command
	_ = proto.Unmarshal(sc.Command, &edited)
	edited.GetReloadConfig().Template.Opcua.EndpointUrl = "opc.tcp://203.0.113.9:4840"
	sc.Command, _ = proto.Marshal(&edited)
	tampered, _ := proto.Marshal(&sc)
	for name, payload := range map[string][]byte{"other key": wrongKey, "unsigned": unsigned, "edited": tampered} {
		if tok := mc.Publish(topics.Device(id, topics.Cmd), 1, false, payload); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("%s: publish: %v", name, tok.Error())
		}
		select {
		case ack := <-acks:
			if ack.Ok || !strings.HasPrefix(ack.Error, "rejected: ") {
				t.Errorf("%s template command: ack %v, want rejected", name, ack)
			}
			t.Logf("%s: %s", name, ack.Error)
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no ack from the agent\nagent log:\n%s", name, agentLog.String())
		}
	}
	st, ok := readStatus(t, "http://"+metrics+"/status")
	if !ok || st.OPCUA != nil || st.Template == nil || st.Template.Version != 0 {
		t.Errorf("after rejected commands the agent status is %+v", st)
	}
	if _, err := os.Stat(filepath.Join(state, "opcua-template.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a rejected template was persisted: %v", err)
	}

	// A genuine template for the endpoint whose login cannot be read.
	ctx := context.Background()
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
	mm := gantryv1connect.NewMachineModelServiceClient(cp.http, cp.url, connect.WithProtoJSON(), cp.login(t, "mdm@acme.example"))
	ms, err := mm.ListMachineModels(ctx, connect.NewRequest(&gantryv1.ListMachineModelsRequest{}))
	if err != nil || len(ms.Msg.Models) == 0 || machine == "" {
		t.Fatalf("demo model %v (%v) or machine %q missing", ms, err, machine)
	}
	model := ms.Msg.Models[0]
	model.Opcua = tpl.ToPB()
	if _, err := mm.UpdateMachineModel(ctx, connect.NewRequest(&gantryv1.UpdateMachineModelRequest{Model: model})); err != nil {
		t.Fatal(err)
	}
	if _, err := dc.LinkDevice(ctx, connect.NewRequest(&gantryv1.LinkDeviceRequest{Id: id, CustomerMachineId: machine})); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		r, err := dc.GetDevice(ctx, connect.NewRequest(&gantryv1.GetDeviceRequest{Id: id}))
		if err != nil {
			t.Fatal(err)
		}
		if ts := r.Msg.Device.Template; ts.GetState() == "error" {
			if ts.Version != 1 || ts.AppliedVersion != 0 || !strings.Contains(ts.Error, "password_file") {
				t.Errorf("refused template: %+v, want v1 with the agent's password_file error", ts)
			}
			t.Logf("GetDevice shows: template v%d %s: %s", ts.Version, ts.State, ts.Error)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("template state %+v, want error\nagent log:\n%s", r.Msg.Device.Template, agentLog.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st, _ := readStatus(t, "http://"+metrics+"/status"); st.OPCUA != nil || st.Template == nil || !strings.Contains(st.Template.Error, "password_file") {
		t.Errorf("agent status after the refusal: %+v", st)
	}
	// The site fixes the file; reload_config sends the template again.
	if err := os.WriteFile(pwFile, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rc, err := dc.SendCommand(ctx, connect.NewRequest(&gantryv1.SendCommandRequest{DeviceId: id, Command: "reload_config", TimeoutSeconds: 30}))
	if err != nil || !rc.Msg.Ok {
		t.Fatalf("reload_config after fixing the password file: %v %v", rc, err)
	}
	r, err := dc.GetDevice(ctx, connect.NewRequest(&gantryv1.GetDeviceRequest{Id: id}))
	if err != nil {
		t.Fatal(err)
	}
	if ts := r.Msg.Device.Template; ts.State != "applied" || ts.AppliedVersion != 1 || ts.Error != "" {
		t.Errorf("after reload_config: %+v, want v1 applied", ts)
	}
	if st, _ := readStatus(t, "http://"+metrics+"/status"); st.OPCUA == nil || st.Template == nil || st.Template.Version != 1 || st.Template.Source != "command" {
		t.Errorf("agent status after reload_config: %+v", st)
	}
}
