package e2e

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
	"github.com/gantry-iot/gantry/proto/gantry/v1/gantryv1connect"
)

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries builds the three commands once per test run.
func binaries(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "gantry-e2e-bin-")
		if buildErr != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", binDir+"/", "../../controlplane/cmd/gantry-controlplane", "../../agent/cmd/gantry-agent", "../../controlplane/cmd/gantryctl").CombinedOutput()
		if err != nil {
			buildErr = &buildError{err, string(out)}
		}
	})
	if buildErr != nil {
		t.Fatalf("build: %v", buildErr)
	}
	return binDir
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + e.out }

type controlPlane struct {
	url     string
	cmd     *exec.Cmd
	http    *http.Client
	dataDir string
}

// startControlPlane runs gantry-controlplane --dev on free ports.
func startControlPlane(t *testing.T) *controlPlane {
	t.Helper()
	return startControlPlaneArgs(t, t.TempDir(), "--mqtt-listen", "127.0.0.1:0")
}

// startControlPlaneArgs runs gantry-controlplane serve --dev on a free
// port with dataDir and further flags.
func startControlPlaneArgs(t *testing.T, dataDir string, args ...string) *controlPlane {
	t.Helper()
	bin := binaries(t)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "gantry-controlplane"), append([]string{"serve", "--dev", "--listen", "127.0.0.1:0", "--data-dir", dataDir}, args...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if testing.Verbose() == false {
		cmd.Stderr = nil
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cancel()
			<-done
		}
		cancel()
	})
	sc := bufio.NewScanner(out)
	re := regexp.MustCompile(`listening on (http://\S+)`)
	cp := &controlPlane{cmd: cmd, http: &http.Client{Timeout: 20 * time.Second}, dataDir: dataDir}
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			cp.url = m[1]
		}
		if strings.HasPrefix(sc.Text(), "Try:") {
			break
		}
	}
	go func() {
		for sc.Scan() {
		}
	}()
	if cp.url == "" {
		t.Fatal("control plane printed no URL")
	}
	return cp
}

func (cp *controlPlane) login(t *testing.T, email string) connect.ClientOption {
	t.Helper()
	sc := gantryv1connect.NewSessionServiceClient(cp.http, cp.url, connect.WithProtoJSON())
	r, err := sc.Login(context.Background(), connect.NewRequest(&gantryv1.LoginRequest{Email: email, Password: "gantry-demo-1"}))
	if err != nil {
		t.Fatalf("login %s: %v", email, err)
	}
	tok := r.Msg.Token
	return connect.WithInterceptors(connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+tok)
			return next(ctx, req)
		}
	}))
}

func agentCmd(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	return exec.Command(filepath.Join(binaries(t), "gantry-agent"), args...)
}

// waitOnline polls the device until its online state is want.
func waitOnline(t *testing.T, dc gantryv1connect.DeviceServiceClient, id string, want bool, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		r, err := dc.GetDevice(context.Background(), connect.NewRequest(&gantryv1.GetDeviceRequest{Id: id}))
		if err != nil {
			t.Fatal(err)
		}
		if r.Msg.Device.Online == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("device online = %v after %v, want %v", r.Msg.Device.Online, within, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestEnrollAndPresence: a Service Technician registers a device and
// creates a token; the real agent process enrolls, connects over mTLS and
// shows online; a clean stop and a kill -9 (will) both show offline; a
// used token is refused; re-enrollment revokes the old certificate.
func TestEnrollAndPresence(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real processes")
	}
	cp := startControlPlane(t)
	ctx := context.Background()
	auth := cp.login(t, "st@acme.example")
	dc := gantryv1connect.NewDeviceServiceClient(cp.http, cp.url, connect.WithProtoJSON(), auth)
	dev, err := dc.CreateDevice(ctx, connect.NewRequest(&gantryv1.CreateDeviceRequest{Name: "Gateway 7", SerialNumber: "GW-7"}))
	if err != nil {
		t.Fatal(err)
	}
	id := dev.Msg.Device.Id
	tok, err := dc.CreateEnrollmentToken(ctx, connect.NewRequest(&gantryv1.CreateEnrollmentTokenRequest{DeviceId: id}))
	if err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	out, err := agentCmd(t, "enroll", "--server", cp.url, "--token", tok.Msg.Token, "--state-dir", state).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "enrolled as device "+id) {
		t.Fatalf("enroll: %v\n%s", err, out)
	}
	for _, f := range []string{"device.key", "device.pem", "ca.pem", "device.json"} {
		fi, err := os.Stat(filepath.Join(state, f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v mode %v, want 0600", f, err, fi.Mode().Perm())
		}
	}
	// The token is one-time.
	out, err = agentCmd(t, "enroll", "--server", cp.url, "--token", tok.Msg.Token, "--state-dir", t.TempDir()).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "already used") {
		t.Errorf("token reuse: %v\n%s", err, out)
	}
	out, err = agentCmd(t, "enroll", "--server", cp.url, "--token", "gantry-enroll-bogus", "--state-dir", t.TempDir()).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "unknown enrollment token") {
		t.Errorf("unknown token: %v\n%s", err, out)
	}

	run := func() *exec.Cmd {
		c := agentCmd(t, "run", "--state-dir", state, "--metrics-listen", "127.0.0.1:0")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Process.Kill(); _, _ = c.Process.Wait() })
		return c
	}
	a := run()
	waitOnline(t, dc, id, true, 15*time.Second)
	// The control plane exports broker metrics.
	resp, err := cp.http.Get(cp.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "gantry_mqtt_connected_devices 1") || !strings.Contains(string(body), "gantry_telemetry_batches_total") {
		t.Errorf("metrics lack broker/telemetry figures:\n%.2000s", body)
	}
	// Signed commands reach the agent and are acknowledged.
	ping, err := dc.SendCommand(ctx, connect.NewRequest(&gantryv1.SendCommandRequest{DeviceId: id, Command: "ping", TimeoutSeconds: 20}))
	if err != nil || !ping.Msg.Ok {
		t.Fatalf("ping: %v %v", ping, err)
	}
	t.Logf("ping round trip %d ms", ping.Msg.RoundTripMs)
	rc, err := dc.SendCommand(ctx, connect.NewRequest(&gantryv1.SendCommandRequest{DeviceId: id, Command: "restart_collector"}))
	if err != nil || rc.Msg.Ok || !strings.Contains(rc.Msg.Error, "not available") {
		t.Errorf("restart_collector without a collector: %v %v", rc, err)
	}
	if _, err := dc.SendCommand(ctx, connect.NewRequest(&gantryv1.SendCommandRequest{DeviceId: id, Command: "self_destruct"})); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("unknown command: %v", err)
	}
	_ = a.Process.Signal(syscall.SIGTERM)
	_, _ = a.Process.Wait()
	waitOnline(t, dc, id, false, 10*time.Second)

	a = run()
	waitOnline(t, dc, id, true, 15*time.Second)
	_ = a.Process.Kill() // no DISCONNECT: the broker publishes the will
	_, _ = a.Process.Wait()
	waitOnline(t, dc, id, false, 10*time.Second)

	// Re-enroll into a new state dir: the old certificate stops working.
	tok2, err := dc.CreateEnrollmentToken(ctx, connect.NewRequest(&gantryv1.CreateEnrollmentTokenRequest{DeviceId: id}))
	if err != nil {
		t.Fatal(err)
	}
	state2 := t.TempDir()
	if out, err := agentCmd(t, "enroll", "--server", cp.url, "--token", tok2.Msg.Token, "--state-dir", state2).CombinedOutput(); err != nil {
		t.Fatalf("re-enroll: %v\n%s", err, out)
	}
	old := agentCmd(t, "run", "--state-dir", state, "--metrics-listen", "off")
	if err := old.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	r, _ := dc.GetDevice(ctx, connect.NewRequest(&gantryv1.GetDeviceRequest{Id: id}))
	if r.Msg.Device.Online {
		t.Errorf("agent with the revoked certificate came online")
	}
	_ = old.Process.Kill()
	_, _ = old.Process.Wait()
	fresh := agentCmd(t, "run", "--state-dir", state2, "--metrics-listen", "off")
	if err := fresh.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = fresh.Process.Kill(); _, _ = fresh.Process.Wait() }()
	waitOnline(t, dc, id, true, 15*time.Second)
}
