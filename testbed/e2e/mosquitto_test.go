package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/gantry-iot/gantry/pkg/machinemodel"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
	"github.com/gantry-iot/gantry/proto/gantry/v1/gantryv1connect"
	"github.com/gantry-iot/gantry/testbed/opcuasim"
)

// lockedBuffer collects a process's output for failure messages.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startMosquitto runs Debian's mosquitto with deploy/mosquitto's
// mosquitto.conf and acl.conf (paths and port rewritten, nothing else) on
// a free loopback port, with the files in dir.
func startMosquitto(t *testing.T, dir string) (addr string, cmd *exec.Cmd, log *lockedBuffer) {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		t.Skip("mosquitto not installed (apt-get install -y mosquitto; make deps does it)")
	}
	addr = freePort(t)
	_, port, _ := net.SplitHostPort(addr)
	conf, err := os.ReadFile("../../deploy/mosquitto/mosquitto.conf")
	if err != nil {
		t.Fatal(err)
	}
	c := strings.ReplaceAll(string(conf), "/etc/mosquitto/gantry", dir)
	c = strings.Replace(c, "listener 8883", "listener "+port+" 127.0.0.1", 1)
	if os.Geteuid() == 0 {
		c += "\nuser root\n" // as root mosquitto would drop to user mosquitto, who cannot read the test's temp dir
	}
	acl, err := os.ReadFile("../../deploy/mosquitto/acl.conf")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "acl.conf"), acl, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "mosquitto.conf"), []byte(c), 0o600); err != nil {
		t.Fatal(err)
	}
	log = &lockedBuffer{}
	cmd = exec.Command(bin, "-c", filepath.Join(dir, "mosquitto.conf"), "-v")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if i == 100 {
			t.Fatalf("mosquitto does not listen on %s:\n%s", addr, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return addr, cmd, log
}

// deviceConnect connects to the broker with the device certificate in an
// agent state dir, as the agent would, and disconnects again.
func deviceConnect(t *testing.T, addr, stateDir, id string) error {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(filepath.Join(stateDir, "device.pem"), filepath.Join(stateDir, "device.key"))
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(stateDir, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	o := paho.NewClientOptions().AddBroker("tls://" + addr).SetClientID(id).SetAutoReconnect(false).SetConnectRetry(false).
		SetProtocolVersion(4).SetConnectTimeout(5 * time.Second).
		SetTLSConfig(&tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, ServerName: "127.0.0.1"})
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return fmt.Errorf("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return err
	}
	c.Disconnect(100)
	return nil
}

func certSerial(t *testing.T, stateDir string) string {
	t.Helper()
	p, err := os.ReadFile(filepath.Join(stateDir, "device.pem"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(p)
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c.SerialNumber.Text(16)
}

// TestExternalMosquitto: the control plane in external-broker mode with a
// test-started Mosquitto configured from deploy/mosquitto (TLS,
// use_identity_as_username, the same pattern ACL file as TestMosquittoACL).
// A real agent process enrolls (and learns the external broker's URL),
// shows online; telemetry from an OPC-UA simulator reaches the API; a
// signed ping round-trips; SIGKILL shows it offline through its will;
// re-enrollment writes a CRL that, after the control plane's reload
// command (SIGHUP), makes Mosquitto refuse the old certificate while the
// new one works.
func TestExternalMosquitto(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real processes")
	}
	bin := binaries(t)
	dataDir, brokerDir := t.TempDir(), t.TempDir()
	out, err := exec.Command(filepath.Join(bin, "gantry-controlplane"), "mosquitto-files", "--data-dir", dataDir, "--out", brokerDir, "--hosts", "127.0.0.1,localhost").CombinedOutput()
	if err != nil {
		t.Fatalf("mosquitto-files: %v\n%s", err, out)
	}
	for name, want := range map[string]os.FileMode{"ca.pem": 0o644, "server.pem": 0o644, "server-key.pem": 0o640, "crl.pem": 0o644} {
		if fi, err := os.Stat(filepath.Join(brokerDir, name)); err != nil || fi.Mode().Perm() != want {
			t.Errorf("mosquitto-files %s: %v, want mode %v", name, err, want)
		}
	}
	addr, mosq, mlog := startMosquitto(t, brokerDir)
	crlFile := filepath.Join(brokerDir, "crl.pem")
	cp := startControlPlaneArgs(t, dataDir, "--mqtt-external", "tls://"+addr, "--mqtt-crl-file", crlFile,
		"--mqtt-crl-reload", fmt.Sprintf("kill -HUP %d", mosq.Process.Pid), "--mqtt-ingest-clients", "3")
	// 1 main + 3 ingest clients connect to Mosquitto.
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := cp.http.Get(cp.url + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(body), "gantry_mqtt_external_clients_connected 4") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("control plane clients not connected to mosquitto:\n%s", mlog)
		}
		time.Sleep(100 * time.Millisecond)
	}

	sim, err := opcuasim.New(opcuasim.Config{Profiles: []opcuasim.Profile{{Name: "cnc1", Kind: "cnc"}}, Interval: opcuasim.Duration(200 * time.Millisecond)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := sim.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	ns := sim.Namespace()
	ctx := context.Background()
	dc := gantryv1connect.NewDeviceServiceClient(cp.http, cp.url, connect.WithProtoJSON(), cp.login(t, "st@acme.example"))
	dev, err := dc.CreateDevice(ctx, connect.NewRequest(&gantryv1.CreateDeviceRequest{Name: "Mosquitto gateway", SerialNumber: "GW-MOSQ"}))
	if err != nil {
		t.Fatal(err)
	}
	id := dev.Msg.Device.Id
	enroll := func() string {
		t.Helper()
		tok, err := dc.CreateEnrollmentToken(ctx, connect.NewRequest(&gantryv1.CreateEnrollmentTokenRequest{DeviceId: id}))
		if err != nil {
			t.Fatal(err)
		}
		state := t.TempDir()
		if out, err := agentCmd(t, "enroll", "--server", cp.url, "--token", tok.Msg.Token, "--state-dir", state).CombinedOutput(); err != nil {
			t.Fatalf("enroll: %v\n%s", err, out)
		}
		return state
	}
	state := enroll()
	var info struct {
		MQTTURL string `json:"mqtt_url"`
	}
	if b, err := os.ReadFile(filepath.Join(state, "device.json")); err != nil || json.Unmarshal(b, &info) != nil || info.MQTTURL != "tls://"+addr {
		t.Fatalf("device.json does not name the external broker tls://%s: %s (%v)", addr, b, err)
	}
	tpl := machinemodel.OPCUA{EndpointURL: sim.Endpoint(), SecurityMode: "None", DataPoints: []machinemodel.DataPoint{
		{NodeID: opcuasim.NodeID(ns, "cnc1", "SpindleSpeed"), Name: "spindle", Unit: "rpm", SamplingIntervalMS: 100},
	}}
	b, _ := json.Marshal(tpl)
	tplFile := filepath.Join(t.TempDir(), "opcua.json")
	if err := os.WriteFile(tplFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(state string) *exec.Cmd {
		t.Helper()
		a := agentCmd(t, "run", "--state-dir", state, "--metrics-listen", "off", "--opcua-template", tplFile)
		if err := a.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = a.Process.Kill(); _, _ = a.Process.Wait() })
		return a
	}
	a := run(state)
	waitOnline(t, dc, id, true, 20*time.Second)

	// Telemetry: through Mosquitto and the shared-subscription ingest.
	deadline = time.Now().Add(20 * time.Second)
	for {
		r, err := dc.GetLatestValues(ctx, connect.NewRequest(&gantryv1.GetLatestValuesRequest{DeviceId: id}))
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Msg.Values) > 0 && r.Msg.Values[0].Point == "spindle" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no telemetry reached the API through mosquitto:\n%.3000s", mlog)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// A signed command round-trips.
	ping, err := dc.SendCommand(ctx, connect.NewRequest(&gantryv1.SendCommandRequest{DeviceId: id, Command: "ping", TimeoutSeconds: 20}))
	if err != nil || !ping.Msg.Ok {
		t.Fatalf("ping through mosquitto: %v %v", ping, err)
	}
	t.Logf("ping round trip through mosquitto %d ms", ping.Msg.RoundTripMs)

	// SIGKILL: no DISCONNECT, Mosquitto publishes the will.
	_ = a.Process.Signal(syscall.SIGKILL)
	_, _ = a.Process.Wait()
	waitOnline(t, dc, id, false, 20*time.Second)

	// Re-enrollment revokes the old certificate: CRL + reload.
	oldSerial := certSerial(t, state)
	if err := deviceConnect(t, addr, state, id); err != nil {
		t.Fatalf("old certificate refused before re-enrollment: %v\n%s", err, mlog)
	}
	state2 := enroll()
	crl, err := os.ReadFile(crlFile)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(crl)
	list, err := x509.ParseRevocationList(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	listed := false
	for _, e := range list.RevokedCertificateEntries {
		listed = listed || e.SerialNumber.Text(16) == oldSerial
	}
	if !listed {
		t.Fatalf("CRL does not list the old serial %s", oldSerial)
	}
	deadline = time.Now().Add(10 * time.Second)
	for deviceConnect(t, addr, state, id) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto still accepts the revoked certificate after the reload:\n%.4000s", mlog)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := deviceConnect(t, addr, state2, id); err != nil {
		t.Fatalf("new certificate refused: %v", err)
	}
	run(state2)
	waitOnline(t, dc, id, true, 20*time.Second)
}
