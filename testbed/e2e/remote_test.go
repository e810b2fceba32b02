package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	vnc "github.com/mitchellh/go-vnc"

	"github.com/gantry-iot/gantry/pkg/wsconn"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
	"github.com/gantry-iot/gantry/proto/gantry/v1/gantryv1connect"
	"github.com/gantry-iot/gantry/testbed/rfbserver"
	"github.com/gantry-iot/gantry/testbed/tcpecho"
)

// bufConn speeds up go-vnc, which reads pixel by pixel.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (b bufConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// remoteWorld is the demo world with a running agent on the demo gateway
// whose machine model points at an rfbserver and a tcpecho target.
type remoteWorld struct {
	cp         *controlPlane
	rfb        *rfbserver.Server
	vncAddr    string
	echoAddr   string
	deviceID   string
	assetID    string
	agentState string
	agent      *exec_
	sharedCase string
}

type exec_ = struct{ stop func() }

func listenLoopback(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func newRemoteWorld(t *testing.T) *remoteWorld { return newRemoteWorldOn(t, nil, "") }

// restartable is a control plane on fixed addresses that a test can stop
// and start again.
type restartable struct {
	httpAddr, mqttAddr, dataDir string
	cmd                         *exec.Cmd
}

func (r *restartable) start(t *testing.T) *controlPlane {
	r.cmd = runControlPlane(t, r.httpAddr, r.mqttAddr, r.dataDir)
	return &controlPlane{url: "http://" + r.httpAddr, cmd: r.cmd, http: &http.Client{Timeout: 20 * time.Second}, dataDir: r.dataDir}
}

func (r *restartable) stop() {
	_ = r.cmd.Process.Signal(os.Interrupt)
	_, _ = r.cmd.Process.Wait()
}

// newRemoteWorldOn builds the world on a restartable control plane (nil:
// a throwaway one) with the template's VNC target at vncAddr (empty: the
// world's rfbserver).
func newRemoteWorldOn(t *testing.T, rs *restartable, vncAddr string) *remoteWorld {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &remoteWorld{rfb: rfbserver.New(rfbserver.Config{Width: 320, Height: 200}, nil)}
	vl, el := listenLoopback(t), listenLoopback(t)
	w.vncAddr, w.echoAddr = vl.Addr().String(), el.Addr().String()
	if vncAddr != "" {
		w.vncAddr = vncAddr
	}
	done := make(chan struct{}, 2)
	go func() { w.rfb.Serve(ctx, vl); done <- struct{}{} }()
	go func() { tcpecho.Serve(ctx, el); done <- struct{}{} }()
	t.Cleanup(func() {
		cancel()
		vl.Close()
		el.Close()
		<-done
		<-done
		w.rfb.Close()
	})

	if rs != nil {
		w.cp = rs.start(t)
	} else {
		w.cp = startControlPlane(t)
	}
	cp := w.cp
	// The Master Data Manager points the demo model's template at the
	// test targets.
	mm := gantryv1connect.NewMachineModelServiceClient(cp.http, cp.url, connect.WithProtoJSON(), cp.login(t, "mdm@acme.example"))
	models, err := mm.ListMachineModels(ctx, connect.NewRequest(&gantryv1.ListMachineModelsRequest{}))
	if err != nil || len(models.Msg.Models) == 0 {
		t.Fatalf("machine models: %v", err)
	}
	m := models.Msg.Models[0]
	m.RemoteAccess = &gantryv1.RemoteAccessTemplate{ConnectionTypes: []string{"vnc", "data_link"}, VncTargets: []string{w.vncAddr}, DataLinkTargets: []string{w.echoAddr}}
	if _, err := mm.UpdateMachineModel(ctx, connect.NewRequest(&gantryv1.UpdateMachineModelRequest{Model: m})); err != nil {
		t.Fatalf("update template: %v", err)
	}
	// Enroll and run the demo gateway's agent.
	tok, err := os.ReadFile(filepath.Join(cp.dataDir, "demo-agent.token"))
	if err != nil {
		t.Fatal(err)
	}
	w.agentState = t.TempDir()
	out, err := agentCmd(t, "enroll", "--server", cp.url, "--token", strings.TrimSpace(string(tok)), "--state-dir", w.agentState).CombinedOutput()
	if err != nil {
		t.Fatalf("enroll: %v\n%s", err, out)
	}
	w.startAgent(t)
	dc := gantryv1connect.NewDeviceServiceClient(cp.http, cp.url, connect.WithProtoJSON(), cp.login(t, "st@acme.example"))
	devs, err := dc.ListDevices(ctx, connect.NewRequest(&gantryv1.ListDevicesRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range devs.Msg.Devices {
		if d.SerialNumber == "GW-DEMO-1" {
			w.deviceID, w.assetID = d.Id, d.AssetId
		}
	}
	if w.deviceID == "" || w.assetID == "" {
		t.Fatal("demo gateway or its asset not found")
	}
	waitOnline(t, dc, w.deviceID, true, 20*time.Second)
	return w
}

func (w *remoteWorld) startAgent(t *testing.T) {
	t.Helper()
	a := agentCmd(t, "run", "--state-dir", w.agentState, "--metrics-listen", "off")
	if testing.Verbose() {
		a.Stderr = os.Stderr
	}
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			_ = a.Process.Signal(syscall.SIGKILL)
			_, _ = a.Process.Wait()
		}
	}
	t.Cleanup(stop)
	w.agent = &exec_{stop: stop}
}

func (w *remoteWorld) cases(t *testing.T, email string) gantryv1connect.CaseServiceClient {
	return gantryv1connect.NewCaseServiceClient(w.cp.http, w.cp.url, connect.WithProtoJSON(), w.cp.login(t, email))
}

func (w *remoteWorld) remote(t *testing.T, email string) gantryv1connect.RemoteAccessServiceClient {
	return gantryv1connect.NewRemoteAccessServiceClient(w.cp.http, w.cp.url, connect.WithProtoJSON(), w.cp.login(t, email))
}

// dialSession opens a session and its WebSocket.
func (w *remoteWorld) dialSession(ctx context.Context, ra gantryv1connect.RemoteAccessServiceClient, caseID, typ, target string) (net.Conn, error) {
	s, err := ra.OpenSession(ctx, connect.NewRequest(&gantryv1.OpenSessionRequest{CaseId: caseID, ConnectionType: typ, Target: target}))
	if err != nil {
		return nil, err
	}
	return wsconn.Dial(ctx, "ws"+strings.TrimPrefix(w.cp.url, "http")+s.Msg.WebsocketPath+"?token="+s.Msg.Token, nil)
}

func vncClient(t *testing.T, c net.Conn) (*vnc.ClientConn, chan vnc.ServerMessage) {
	t.Helper()
	msgs := make(chan vnc.ServerMessage, 4)
	cc, err := vnc.Client(bufConn{c, bufio.NewReaderSize(c, 1<<16)}, &vnc.ClientConfig{Auth: []vnc.ClientAuth{new(vnc.ClientAuthNone)}, ServerMessageCh: msgs})
	if err != nil {
		t.Fatalf("VNC handshake through the tunnel: %v", err)
	}
	return cc, msgs
}

// firstFrame requests a full frame and checks every pixel against the
// test pattern.
func firstFrame(t *testing.T, cc *vnc.ClientConn, msgs chan vnc.ServerMessage, gen uint32) {
	t.Helper()
	if err := cc.FramebufferUpdateRequest(false, 0, 0, cc.FrameBufferWidth, cc.FrameBufferHeight); err != nil {
		t.Fatal(err)
	}
	var fu *vnc.FramebufferUpdateMessage
	select {
	case m := <-msgs:
		fu, _ = m.(*vnc.FramebufferUpdateMessage)
	case <-time.After(15 * time.Second):
		t.Fatal("no framebuffer update through the tunnel")
	}
	if fu == nil || len(fu.Rectangles) != 1 {
		t.Fatalf("unexpected update %+v", fu)
	}
	raw := fu.Rectangles[0].Enc.(*vnc.RawEncoding)
	w, h := int(cc.FrameBufferWidth), int(cc.FrameBufferHeight)
	for y := range h {
		for x := range w {
			want, got := rfbserver.Pixel(x, y, w, h, gen), raw.Colors[y*w+x]
			if got.R != uint16(want.R) || got.G != uint16(want.G) || got.B != uint16(want.B) {
				t.Fatalf("pixel (%d,%d) = %v, want %v", x, y, got, want)
			}
		}
	}
}

// TestRemoteAccessVNC: a Maintenance Engineer activates remote access on
// an internal case; a go-vnc client connects through the WebSocket, the
// hub and the real agent process to rfbserver and reads the test pattern;
// data-link bytes arrive intact; disallowed targets are refused;
// deactivation closes the session within 1 s; an agent restart during the
// grant needs no new activation.
func TestRemoteAccessVNC(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real processes")
	}
	w := newRemoteWorld(t)
	ctx := context.Background()
	me := w.cases(t, "me@nordwerk.example")
	cs, err := me.CreateCase(ctx, connect.NewRequest(&gantryv1.CreateCaseRequest{AssetId: w.assetID, Kind: "internal", Title: "HMI frozen"}))
	if err != nil {
		t.Fatal(err)
	}
	caseID := cs.Msg.Case.Id
	ra := w.remote(t, "me@nordwerk.example")
	// No grant yet: refused.
	if _, err := ra.OpenSession(ctx, connect.NewRequest(&gantryv1.OpenSessionRequest{CaseId: caseID, ConnectionType: "vnc"})); connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Fatalf("session without a grant: %v", err)
	}
	start := time.Now()
	if _, err := ra.ActivateRemoteAccess(ctx, connect.NewRequest(&gantryv1.ActivateRemoteAccessRequest{CaseId: caseID, DurationMinutes: 30})); err != nil {
		t.Fatal(err)
	}
	c, err := w.dialSession(ctx, ra, caseID, "vnc", "")
	if err != nil {
		t.Fatalf("open VNC session: %v", err)
	}
	cc, msgs := vncClient(t, c)
	firstFrame(t, cc, msgs, w.rfb.Generation())
	t.Logf("activation → first full VNC frame: %v", time.Since(start).Round(time.Millisecond))

	// Data link to the allowed echo target: bytes arrive intact.
	dl, err := w.dialSession(ctx, ra, caseID, "data_link", w.echoAddr)
	if err != nil {
		t.Fatalf("data link: %v", err)
	}
	const n = 16 << 20
	sent, recv, err := tcpecho.RoundTrip(ctx, dl, n, 7)
	if err != nil || sent != recv {
		t.Fatalf("data link round trip of %d bytes: %v (sent %x, received %x)", n, err, sent[:4], recv[:4])
	}
	dl.Close()
	// A malformed RFB handshake ends only that session: the VNC server
	// closes it, the live go-vnc session keeps working.
	bad, err := w.dialSession(ctx, ra, caseID, "vnc", "")
	if err != nil {
		t.Fatal(err)
	}
	greeting := make([]byte, 12)
	if _, err := io.ReadFull(bad, greeting); err != nil {
		t.Fatal(err)
	}
	bad.Write([]byte("RFB 009.999\n\x00\xff garbage"))
	bad.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, bad); err != nil {
		t.Errorf("malformed RFB: session not closed cleanly by the machine side: %v", err)
	}
	bad.Close()
	firstFrame(t, cc, msgs, w.rfb.Generation())
	// Targets the template does not allow are refused before any tunnel.
	if _, err := ra.OpenSession(ctx, connect.NewRequest(&gantryv1.OpenSessionRequest{CaseId: caseID, ConnectionType: "data_link", Target: "127.0.0.1:22"})); connect.CodeOf(err) != connect.CodeInvalidArgument {
		t.Errorf("disallowed target: %v", err)
	}
	// A token is single-use; a bogus one is refused.
	s, err := ra.OpenSession(ctx, connect.NewRequest(&gantryv1.OpenSessionRequest{CaseId: caseID, ConnectionType: "vnc"}))
	if err != nil {
		t.Fatal(err)
	}
	url := "ws" + strings.TrimPrefix(w.cp.url, "http") + s.Msg.WebsocketPath + "?token="
	c2, err := wsconn.Dial(ctx, url+s.Msg.Token, nil)
	if err != nil {
		t.Fatal(err)
	}
	c2.Close()
	if _, err := wsconn.Dial(ctx, url+s.Msg.Token, nil); err == nil || !strings.Contains(err.Error(), "already used") {
		t.Errorf("token reuse: %v", err)
	}
	if _, err := wsconn.Dial(ctx, url+strings.Repeat("0", 48), nil); err == nil {
		t.Error("bogus token accepted")
	}
	// A Machine Operator (SCM manage) may connect; an OISC (SCM read) not.
	if _, err := w.dialSession(ctx, w.remote(t, "mo@nordwerk.example"), caseID, "vnc", ""); err != nil {
		t.Errorf("MO: %v", err)
	}
	if _, err := w.remote(t, "oisc@nordwerk.example").OpenSession(ctx, connect.NewRequest(&gantryv1.OpenSessionRequest{CaseId: caseID, ConnectionType: "vnc"})); connect.CodeOf(err) != connect.CodePermissionDenied {
		t.Errorf("OISC: %v", err)
	}

	// Agent restart during the grant: the session can be reopened without
	// a new activation.
	cc.Close()
	w.agent.stop()
	w.startAgent(t)
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err = w.dialSession(ctx, ra, caseID, "vnc", "")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no session after the agent restarted: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	cc, msgs = vncClient(t, c)
	firstFrame(t, cc, msgs, w.rfb.Generation())

	cc.Close()
	// Deactivation closes a live session within 1 s, telling the client
	// why. (A raw session here: go-vnc's own reader would race ours.)
	c, err = w.dialSession(ctx, ra, caseID, "vnc", "")
	if err != nil {
		t.Fatal(err)
	}
	readErr := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, c)
		readErr <- err
	}()
	stop := time.Now()
	if _, err := ra.DeactivateRemoteAccess(ctx, connect.NewRequest(&gantryv1.DeactivateRemoteAccessRequest{CaseId: caseID})); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-readErr:
		took := time.Since(stop)
		t.Logf("deactivation → session closed: %v (%v)", took.Round(time.Millisecond), err)
		var cr *wsconn.CloseReason
		if !errors.As(err, &cr) || !strings.Contains(cr.Text, "grant") {
			t.Errorf("close reason %v does not name the grant", err)
		}
		if took > 3*time.Second { // goal 1 s; slack for -race on a busy machine
			t.Errorf("session closed %v after deactivation", took)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("session still open 10 s after deactivation")
	}
	if _, err := ra.OpenSession(ctx, connect.NewRequest(&gantryv1.OpenSessionRequest{CaseId: caseID, ConnectionType: "vnc"})); connect.CodeOf(err) != connect.CodeFailedPrecondition {
		t.Errorf("session after deactivation: %v", err)
	}
}

// TestGantryctlTunnel: SSC Data Link through gantryctl — 100 MB through
// the local port, the control plane, the hub and the agent process to
// tcpecho and back, checksummed; a disallowed target is refused; vnc
// exposes the HMI to a native viewer (go-vnc here).
func TestGantryctlTunnel(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real processes")
	}
	w := newRemoteWorld(t)
	ctx := context.Background()
	me := w.cases(t, "me@nordwerk.example")
	cs, err := me.CreateCase(ctx, connect.NewRequest(&gantryv1.CreateCaseRequest{AssetId: w.assetID, Kind: "internal", Title: "PLC diagnostics"}))
	if err != nil {
		t.Fatal(err)
	}
	caseID := cs.Msg.Case.Id
	home := t.TempDir()
	ctl := func(args ...string) *exec.Cmd {
		c := exec.Command(filepath.Join(binaries(t), "gantryctl"), append([]string{"--server", w.cp.url}, args...)...)
		c.Env = append(os.Environ(), "HOME="+home, "GANTRY_PASSWORD=gantry-demo-1", "XDG_CONFIG_HOME="+home)
		return c
	}
	if out, err := ctl("login", "--email", "me@nordwerk.example").CombinedOutput(); err != nil {
		t.Fatalf("login: %v\n%s", err, out)
	}
	if out, err := ctl("remote", "activate", caseID, "--minutes", "30").CombinedOutput(); err != nil || !strings.Contains(string(out), "ACTIVE") {
		t.Fatalf("activate: %v\n%s", err, out)
	}
	// A target the template does not list is refused.
	if out, err := ctl("tunnel", caseID, "--target", "127.0.0.1:22").CombinedOutput(); err == nil || !strings.Contains(string(out), "not allowed") {
		t.Errorf("disallowed target: %v\n%s", err, out)
	}
	// Start a tunnel and read its local address.
	addrOf := func(c *exec.Cmd) string {
		out, err := c.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if testing.Verbose() {
			c.Stderr = os.Stderr
		}
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Process.Kill(); _, _ = c.Process.Wait() })
		line, err := bufio.NewReader(out).ReadString('\n')
		if err != nil {
			t.Fatalf("gantryctl printed no address: %v", err)
		}
		f := strings.Fields(strings.TrimSpace(line))
		i := len(f) - 1
		for i > 0 && !strings.Contains(f[i], "127.0.0.1:") {
			i--
		}
		return f[i]
	}
	local := addrOf(ctl("tunnel", caseID, "--target", w.echoAddr, "--listen", "127.0.0.1:0"))
	c, err := net.Dial("tcp", local)
	if err != nil {
		t.Fatal(err)
	}
	const n = 100 << 20
	start := time.Now()
	sent, recv, err := tcpecho.RoundTrip(ctx, c, n, 42)
	c.Close()
	if err != nil || sent != recv {
		t.Fatalf("100 MB round trip through gantryctl tunnel: %v", err)
	}
	t.Logf("100 MB each way through gantryctl tunnel in %v (%.1f MB/s each way)", time.Since(start).Round(time.Millisecond), float64(n)/(1<<20)/time.Since(start).Seconds())

	// gantryctl vnc: a native viewer reads the test pattern.
	vncLocal := addrOf(ctl("vnc", caseID, "--listen", "127.0.0.1:0"))
	vc, err := net.Dial("tcp", vncLocal)
	if err != nil {
		t.Fatal(err)
	}
	cc, msgs := vncClient(t, vc)
	firstFrame(t, cc, msgs, w.rfb.Generation())
	cc.Close()
}

// TestRemoteAccessSurvivesControlPlaneRestart: grants live in the store;
// after a control-plane restart (new hub keys, new hub port) the agent
// reconnects and its tunnel is brought up again without a new activation.
func TestRemoteAccessSurvivesControlPlaneRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real processes")
	}
	rs := &restartable{httpAddr: freePort(t), mqttAddr: freePort(t), dataDir: t.TempDir()}
	w := newRemoteWorldOn(t, rs, "")
	ctx := context.Background()
	cs, err := w.cases(t, "me@nordwerk.example").CreateCase(ctx, connect.NewRequest(&gantryv1.CreateCaseRequest{AssetId: w.assetID, Kind: "internal", Title: "Restart drill"}))
	if err != nil {
		t.Fatal(err)
	}
	caseID := cs.Msg.Case.Id
	if _, err := w.remote(t, "me@nordwerk.example").ActivateRemoteAccess(ctx, connect.NewRequest(&gantryv1.ActivateRemoteAccessRequest{CaseId: caseID})); err != nil {
		t.Fatal(err)
	}
	c, err := w.dialSession(ctx, w.remote(t, "me@nordwerk.example"), caseID, "vnc", "")
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	rs.stop()
	w.cp = rs.start(t)
	ra := w.remote(t, "me@nordwerk.example")
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err = w.dialSession(ctx, ra, caseID, "vnc", "")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no session after the control plane restarted: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	cc, msgs := vncClient(t, c)
	firstFrame(t, cc, msgs, w.rfb.Generation())
	cc.Close()
}

// x11vnc runs a real VNC server (x11vnc on an Xvfb display whose root
// window is filled with one colour) and returns its address.
func x11vnc(t *testing.T, color string) string {
	t.Helper()
	for _, bin := range []string{"Xvfb", "x11vnc", "xsetroot"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not installed (apt-get install -y xvfb x11vnc x11-xserver-utils; .ci/deps does it)", bin)
		}
	}
	r, wr, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	x := exec.Command("Xvfb", "-displayfd", "3", "-screen", "0", "320x200x24", "-nolisten", "tcp", "-noreset")
	x.ExtraFiles = []*os.File{wr}
	if err := x.Start(); err != nil {
		t.Fatal(err)
	}
	wr.Close()
	t.Cleanup(func() { _ = x.Process.Kill(); _, _ = x.Process.Wait() })
	line, err := bufio.NewReader(r).ReadString('\n')
	r.Close()
	if err != nil {
		t.Fatalf("Xvfb printed no display: %v", err)
	}
	display := ":" + strings.TrimSpace(line)
	if out, err := exec.Command("xsetroot", "-display", display, "-solid", color).CombinedOutput(); err != nil {
		t.Fatalf("xsetroot: %v\n%s", err, out)
	}
	addr := freePort(t)
	_, port, _ := net.SplitHostPort(addr)
	v := exec.Command("x11vnc", "-display", display, "-rfbport", port, "-localhost", "-nopw", "-forever", "-shared", "-norc", "-quiet", "-noxdamage", "-noshm", "-nocursor")
	if err := v.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = v.Process.Kill(); _, _ = v.Process.Wait() })
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("x11vnc does not listen on %s: %v", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestRemoteAccessX11VNC: the same VNC path against a real VNC server:
// x11vnc on Xvfb from Debian; every pixel of the first frame read through
// WebSocket, hub and agent has the root window's colour.
func TestRemoteAccessX11VNC(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real processes")
	}
	addr := x11vnc(t, "#ff8000")
	w := newRemoteWorldOn(t, nil, addr)
	ctx := context.Background()
	cs, err := w.cases(t, "me@nordwerk.example").CreateCase(ctx, connect.NewRequest(&gantryv1.CreateCaseRequest{AssetId: w.assetID, Kind: "internal", Title: "HMI check"}))
	if err != nil {
		t.Fatal(err)
	}
	ra := w.remote(t, "me@nordwerk.example")
	if _, err := ra.ActivateRemoteAccess(ctx, connect.NewRequest(&gantryv1.ActivateRemoteAccessRequest{CaseId: cs.Msg.Case.Id})); err != nil {
		t.Fatal(err)
	}
	c, err := w.dialSession(ctx, ra, cs.Msg.Case.Id, "vnc", "")
	if err != nil {
		t.Fatal(err)
	}
	cc, msgs := vncClient(t, c)
	defer cc.Close()
	if cc.FrameBufferWidth != 320 || cc.FrameBufferHeight != 200 {
		t.Fatalf("framebuffer %dx%d, want 320x200", cc.FrameBufferWidth, cc.FrameBufferHeight)
	}
	// x11vnc polls the screen: ask for full frames until one shows the
	// painted root window, and check every pixel of it.
	deadline := time.Now().Add(20 * time.Second)
	for {
		if err := cc.FramebufferUpdateRequest(false, 0, 0, 320, 200); err != nil {
			t.Fatal(err)
		}
		var fu *vnc.FramebufferUpdateMessage
		select {
		case m := <-msgs:
			fu, _ = m.(*vnc.FramebufferUpdateMessage)
		case <-time.After(10 * time.Second):
			t.Fatal("no framebuffer update from x11vnc")
		}
		if fu == nil {
			continue
		}
		pixels, bad := 0, ""
		for _, r := range fu.Rectangles {
			raw, ok := r.Enc.(*vnc.RawEncoding)
			if !ok {
				t.Fatalf("encoding %T", r.Enc)
			}
			for i, px := range raw.Colors {
				if bad == "" && (px.R != 255 || px.G != 128 || px.B != 0) {
					bad = fmt.Sprintf("pixel %d of rectangle at %d,%d is %v", i, r.X, r.Y, px)
				}
			}
			pixels += len(raw.Colors)
		}
		if bad == "" && pixels == 320*200 {
			return
		}
		t.Logf("frame: %d rectangles, %d pixels, %s", len(fu.Rectangles), pixels, bad)
		if time.Now().After(deadline) {
			t.Fatalf("x11vnc frame through the tunnel: %d pixels, %s; want all #ff8000", pixels, bad)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
