package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
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
	agent := filepath.Join(binaries(t), "gantry-agent")
	tpl := machinemodel.OPCUA{EndpointURL: srv.URL, SecurityMode: "SignAndEncrypt", DataPoints: []machinemodel.DataPoint{
		{NodeID: nodeopcua.Temperature, Name: "temperature", Unit: "°C", SamplingIntervalMS: 100},
	}}
	run := func(name, pass string) (gantryv1connect.DeviceServiceClient, string, string, *syncBuffer) {
		dc, id, state := enrollDevice(t, cp, agent, name)
		dir := t.TempDir()
		pwFile := filepath.Join(dir, "opcua.password")
		if err := os.WriteFile(pwFile, []byte(pass+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg := fmt.Sprintf(`{"state_dir": %q, "opcua": {"endpoints": [{"name": "press", "url": %q, "security_mode": "SignAndEncrypt", "security_policy": "Basic256Sha256",
			"auth": {"type": "username", "username": %q, "password_file": %q}}]}}`, state, srv.URL, nodeopcua.User, pwFile)
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
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		metrics := l.Addr().String()
		l.Close()
		logs := &syncBuffer{}
		cmd := exec.Command(agent, "run", "--config", cfgFile, "--metrics-listen", metrics, "--opcua-template", tplFile)
		cmd.Stderr = logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })
		return dc, id, "http://" + metrics, logs
	}

	// Right password: values arrive at the control plane.
	dc, id, _, goodLogs := run("secure gateway", password)
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
	_, _, status, badLogs := run("misconfigured gateway", "not-the-password")
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
