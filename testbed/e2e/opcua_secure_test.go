package e2e

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/gantry-iot/gantry/pkg/machinemodel"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
	"github.com/gantry-iot/gantry/proto/gantry/v1/gantryv1connect"
	"github.com/gantry-iot/gantry/testbed/nodeopcua"
)

// enrollDevice registers a device as the demo Service Technician and
// enrolls it with the given agent binary into a new state directory.
func enrollDevice(t *testing.T, cp *controlPlane, agent, name string) (gantryv1connect.DeviceServiceClient, string, string) {
	t.Helper()
	ctx := context.Background()
	dc := gantryv1connect.NewDeviceServiceClient(cp.http, cp.url, connect.WithProtoJSON(), cp.login(t, "st@acme.example"))
	dev, err := dc.CreateDevice(ctx, connect.NewRequest(&gantryv1.CreateDeviceRequest{Name: name, SerialNumber: "SN-" + strings.ReplaceAll(name, " ", "-")}))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := dc.CreateEnrollmentToken(ctx, connect.NewRequest(&gantryv1.CreateEnrollmentTokenRequest{DeviceId: dev.Msg.Device.Id}))
	if err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	if out, err := exec.Command(agent, "enroll", "--server", cp.url, "--token", tok.Msg.Token, "--state-dir", state).CombinedOutput(); err != nil {
		t.Fatalf("enroll: %v\n%s", err, out)
	}
	return dc, dev.Msg.Device.Id, state
}

// syncBuffer is a bytes.Buffer safe for a process writing and a test
// reading.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// runSecureAgent enrolls a device and runs the agent process collecting
// tpl from the node-opcua server at url over SignAndEncrypt as the
// server's user with password pass (from a password_file). It returns the
// device client and ID, the agent's status URL and its log.
func runSecureAgent(t *testing.T, cp *controlPlane, url string, tpl machinemodel.OPCUA, name, pass string) (gantryv1connect.DeviceServiceClient, string, string, *syncBuffer) {
	t.Helper()
	pwFile := filepath.Join(t.TempDir(), "opcua.password")
	if err := os.WriteFile(pwFile, []byte(pass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return runAuthAgent(t, cp, url, tpl, name, fmt.Sprintf(`{"type": "username", "username": %q, "password_file": %q}`, nodeopcua.User, pwFile))
}

// runAuthAgent is runSecureAgent with the endpoint's auth object (JSON).
func runAuthAgent(t *testing.T, cp *controlPlane, url string, tpl machinemodel.OPCUA, name, auth string) (gantryv1connect.DeviceServiceClient, string, string, *syncBuffer) {
	t.Helper()
	agent := filepath.Join(binaries(t), "gantry-agent")
	dc, id, state := enrollDevice(t, cp, agent, name)
	dir := t.TempDir()
	cfg := fmt.Sprintf(`{"state_dir": %q, "opcua": {"endpoints": [{"name": "press", "url": %q, "security_mode": "SignAndEncrypt", "security_policy": "Basic256Sha256",
		"auth": %s}]}}`, state, url, auth)
	cfgFile := filepath.Join(dir, "agent.json")
	b, _ := json.Marshal(tpl)
	tplFile := filepath.Join(dir, "opcua.json")
	for f, content := range map[string][]byte{cfgFile: []byte(cfg), tplFile: b} {
		if err := os.WriteFile(f, content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command(agent, "config", "validate", cfgFile).CombinedOutput(); err != nil {
		t.Fatalf("config validate: %v\n%s", err, out)
	}
	metrics := freePort(t)
	logs := &syncBuffer{}
	cmd := exec.Command(agent, "run", "--config", cfgFile, "--metrics-listen", metrics, "--opcua-template", tplFile)
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })
	return dc, id, "http://" + metrics, logs
}

// TestOPCUASecureInterop: the agent process reads a node-opcua server
// over Basic256Sha256 SignAndEncrypt with a username from its config
// (password in password_file) and the values reach the control plane's
// API; with a wrong password the agent keeps running, its status page and
// log say the server refused the user, and the password is never logged.
func TestOPCUASecureInterop(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real processes")
	}
	if err := nodeopcua.Available(); err != nil {
		t.Skip(err)
	}
	const password = "Plant-Floor-7"
	srv, err := nodeopcua.Start(context.Background(), password, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	cp := startControlPlane(t)
	tpl := machinemodel.OPCUA{EndpointURL: srv.URL, SecurityMode: "SignAndEncrypt", DataPoints: []machinemodel.DataPoint{
		{NodeID: nodeopcua.Temperature, Name: "temperature", Unit: "°C", SamplingIntervalMS: 100},
	}}
	// Right password: values arrive at the control plane.
	dc, id, _, goodLogs := runSecureAgent(t, cp, srv.URL, tpl, "secure gateway", password)
	ctx := context.Background()
	deadline := time.Now().Add(60 * time.Second)
	for {
		r, err := dc.GetLatestValues(ctx, connect.NewRequest(&gantryv1.GetLatestValuesRequest{DeviceId: id}))
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Msg.Values) > 0 && r.Msg.Values[0].Point == "temperature" && r.Msg.Values[0].Value >= 20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no temperature from the node-opcua server through the agent within 60 s; agent log:\n%s", goodLogs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Wrong password: clear status and log, process keeps running.
	_, _, status, badLogs := runSecureAgent(t, cp, srv.URL, tpl, "misconfigured gateway", "not-the-password")
	type page struct {
		OPCUA struct {
			State string `json:"state"`
		} `json:"opcua"`
	}
	var p page
	deadline = time.Now().Add(60 * time.Second)
	for !strings.Contains(p.OPCUA.State, "refused user operator") {
		if time.Now().After(deadline) {
			t.Fatalf("status %+v after 60 s; agent log:\n%s", p, badLogs.String())
		}
		time.Sleep(200 * time.Millisecond)
		resp, err := http.Get(status + "/status")
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		p = page{}
		_ = json.Unmarshal(b, &p)
	}
	if !strings.Contains(p.OPCUA.State, "password_file") {
		t.Errorf("status %q does not say what to check", p.OPCUA.State)
	}
	time.Sleep(3 * time.Second) // a few retries
	if n := strings.Count(badLogs.String(), "refused user operator"); n < 2 {
		t.Errorf("%d refused attempts in the log, want retries with backoff:\n%s", n, badLogs.String())
	}
	if resp, err := http.Get(status + "/status"); err != nil {
		t.Errorf("agent gone after the refused logins: %v", err)
	} else {
		resp.Body.Close()
	}
	for _, l := range []*syncBuffer{goodLogs, badLogs} {
		if strings.Contains(l.String(), password) || strings.Contains(l.String(), "not-the-password") {
			t.Errorf("a password reached the agent's log")
		}
	}
}

// TestOPCUABrokerOutageKeepsOrder: while the control plane and its broker
// are down, the agent keeps reading the OPC-UA server into its durable
// queue; afterwards the control plane has the values whose source times
// fall inside the outage, and each point's history is in order (source
// time and the server's counter increase together).
func TestOPCUABrokerOutageKeepsOrder(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real processes")
	}
	if err := nodeopcua.Available(); err != nil {
		t.Skip(err)
	}
	const password = "Outage-Pa55"
	srv, err := nodeopcua.Start(context.Background(), password, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	httpAddr, mqttAddr, data := freePort(t), freePort(t), t.TempDir()
	cpCmd := runControlPlane(t, httpAddr, mqttAddr, data)
	cp := &controlPlane{url: "http://" + httpAddr, http: &http.Client{Timeout: 20 * time.Second}}
	tpl := machinemodel.OPCUA{EndpointURL: srv.URL, SecurityMode: "SignAndEncrypt", DataPoints: []machinemodel.DataPoint{
		{NodeID: nodeopcua.Counter, Name: "counter", SamplingIntervalMS: 100},
	}}
	dc, id, _, logs := runSecureAgent(t, cp, srv.URL, tpl, "outage gateway", password)
	ctx := context.Background()
	history := func() []*gantryv1.Value {
		r, err := dc.GetHistory(ctx, connect.NewRequest(&gantryv1.GetHistoryRequest{DeviceId: id, Point: "counter", Limit: 10000}))
		if err != nil {
			t.Fatalf("history: %v", err)
		}
		return r.Msg.Values
	}
	waitFor := func(what string, within time.Duration, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(within); !cond(); time.Sleep(200 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %v; agent log:\n%s", what, within, logs.String())
			}
		}
	}
	waitFor("values before the outage", 60*time.Second, func() bool { return len(history()) >= 10 })

	_ = cpCmd.Process.Signal(syscall.SIGTERM)
	_, _ = cpCmd.Process.Wait()
	down := time.Now()
	time.Sleep(4 * time.Second)
	up := time.Now()
	runControlPlane(t, httpAddr, mqttAddr, data)
	cp.http.CloseIdleConnections()
	var inside int
	waitFor("values from inside the outage", 60*time.Second, func() bool {
		inside = 0
		for _, v := range history() {
			if at := v.At.AsTime(); at.After(down.Add(500*time.Millisecond)) && at.Before(up.Add(-500*time.Millisecond)) {
				inside++
			}
		}
		return inside >= 20 // 3 s at 10 values/s, with slack for sampling
	})
	// Order: in the agent's queue order (batch sequence, then position)
	// the server's counter never goes back, nor does the source time.
	vs := history()
	slices.SortStableFunc(vs, func(a, b *gantryv1.Value) int { return cmp.Compare(a.BatchSeq, b.BatchSeq) })
	for i := 1; i < len(vs); i++ {
		if vs[i].Value < vs[i-1].Value || vs[i].At.AsTime().Before(vs[i-1].At.AsTime()) {
			t.Fatalf("out of order: counter %v at %v (batch %d) after %v at %v (batch %d)", vs[i].Value, vs[i].At.AsTime(), vs[i].BatchSeq, vs[i-1].Value, vs[i-1].At.AsTime(), vs[i-1].BatchSeq)
		}
	}
	t.Logf("%d values, %d with source times inside the %v outage", len(vs), inside, up.Sub(down).Round(time.Millisecond))
}
