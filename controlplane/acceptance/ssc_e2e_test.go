package acceptance

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/gantry-iot/gantry/agent/agenttest"
	"github.com/gantry-iot/gantry/controlplane/remote"
	"github.com/gantry-iot/gantry/controlplane/server/servertest"
	"github.com/gantry-iot/gantry/controlplane/store/storetest"
	"github.com/gantry-iot/gantry/pkg/wg"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
	"github.com/gantry-iot/gantry/proto/gantry/v1/gantryv1connect"
)

// quickPeer is an engineer's WireGuard client built from a generated
// wg-quick config, as a standard client would read it.
type quickPeer struct {
	priv, hubPub, psk wg.Key
	addr              netip.Addr
	endpoint          netip.AddrPort
	allowed           []netip.Prefix
}

func parseQuick(t *testing.T, text string) quickPeer {
	t.Helper()
	var q quickPeer
	key := func(v string) wg.Key {
		b, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			t.Fatalf("config key %q: %v", v, err)
		}
		k, err := wg.KeyFromBytes(b)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	for line := range strings.SplitSeq(text, "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch k {
		case "PrivateKey":
			q.priv = key(v)
		case "PublicKey":
			q.hubPub = key(v)
		case "PresharedKey":
			q.psk = key(v)
		case "Address":
			q.addr = netip.MustParsePrefix(v).Addr()
		case "Endpoint":
			q.endpoint = netip.MustParseAddrPort(v)
		case "AllowedIPs":
			for s := range strings.SplitSeq(v, ",") {
				q.allowed = append(q.allowed, netip.MustParsePrefix(strings.TrimSpace(s)))
			}
		}
	}
	if q.priv == (wg.Key{}) || !q.addr.IsValid() || !q.endpoint.IsValid() || len(q.allowed) == 0 {
		t.Fatalf("incomplete config:\n%s", text)
	}
	return q
}

// up brings the client up in this process (wireguard-go on a netstack);
// addr overrides the config's address (spoofing tests), extra adds routes.
func (q quickPeer) up(t *testing.T, addr netip.Addr, extra ...netip.Prefix) *wg.Interface {
	t.Helper()
	if !addr.IsValid() {
		addr = q.addr
	}
	i, err := wg.New(wg.Config{PrivateKey: q.priv, Address: addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(i.Close)
	if err := i.SetPeer(wg.Peer{PublicKey: q.hubPub, PresharedKey: q.psk, Endpoint: q.endpoint,
		AllowedIPs: append(append([]netip.Prefix(nil), q.allowed...), extra...), KeepaliveSeconds: remote.SSCKeepalive}); err != nil {
		t.Fatal(err)
	}
	return i
}

// hostIn is address n of prefix p.
func hostIn(p netip.Prefix, n byte) netip.Addr {
	a := p.Addr().As4()
	a[3] += n
	return netip.AddrFrom4(a)
}

func tcpEcho(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); c.Close() }()
		}
	}()
	return l.Addr().String()
}

func udpEcho(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(buf[:n], from)
		}
	}()
	return pc.LocalAddr().String()
}

// tcpRoundTrip sends n bytes and expects them back.
func tcpRoundTrip(ctx context.Context, i *wg.Interface, to netip.AddrPort, n int) error {
	c, err := i.DialTCP(ctx, to)
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	msg := bytes.Repeat([]byte("SSC!"), n/4)
	go func() { _, _ = c.Write(msg) }()
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return errors.New("echo differs")
	}
	return nil
}

// udpRoundTrip sends a datagram until it comes back (UDP may lose the
// first while the flow is set up).
func udpRoundTrip(i *wg.Interface, to netip.AddrPort, tries int, wait time.Duration) error {
	c, err := i.DialUDP(to)
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 64)
	for range tries {
		if _, err := c.Write([]byte("ssc-udp")); err != nil {
			return err
		}
		_ = c.SetReadDeadline(time.Now().Add(wait))
		if n, err := c.Read(buf); err == nil && string(buf[:n]) == "ssc-udp" {
			return nil
		}
	}
	return errors.New("no UDP echo")
}

// TestSSCEndToEnd: the control plane's hub and an enrolled agent carry an
// engineer's standard WireGuard client (built from the generated config)
// to TCP and UDP services on the machine network. Two grants on machines
// with the same subnet (10.0.0.0/24) get distinct virtual subnets and
// both work; ports and subnets outside the template and spoofed sources
// are dropped and counted; deactivation stops the traffic within 1 s.
func TestSSCEndToEnd(t *testing.T) {
	w := newWorld(t, storetest.SQLite(t))
	ctx := context.Background()
	tcpAddr, udpAddr := tcpEcho(t), udpEcho(t)
	var mu sync.Mutex
	var dialed []string
	var d net.Dialer
	// 10.0.0.5 on the machine network is the loopback echo services; the
	// agent dials nothing else successfully.
	agent := agenttest.Start(t, w.srv.URL, w.enrollToken(t, "D1"), agenttest.Options{Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		mu.Lock()
		dialed = append(dialed, network+" "+addr)
		mu.Unlock()
		switch network + " " + addr {
		case "tcp 10.0.0.5:7":
			return d.DialContext(ctx, "tcp", tcpAddr)
		case "udp 10.0.0.5:7":
			return d.DialContext(ctx, "udp", udpAddr)
		}
		return nil, errors.New("connection refused (test machine network)")
	}})
	deadline := time.Now().Add(20 * time.Second)
	for len(agent.Tunnels.Active()) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("agent tunnels %v, want I1's and S1's", agent.Tunnels.Active())
		}
		time.Sleep(20 * time.Millisecond)
	}

	me, err := w.ssc(ctx, "O1/ME", "I1", "")
	if err != nil {
		t.Fatal(err)
	}
	st, err := w.ssc(ctx, "P1/ST", "S1", "")
	if err != nil {
		t.Fatal(err)
	}
	qme, qst := parseQuick(t, me.Config), parseQuick(t, st.Config)
	if len(qme.allowed) != 1 || len(qst.allowed) != 1 || qme.allowed[0].Overlaps(qst.allowed[0]) {
		t.Fatalf("two grants on 10.0.0.0/24 must get distinct virtual subnets: %v %v", qme.allowed, qst.allowed)
	}
	ime, ist := qme.up(t, netip.Addr{}), qst.up(t, netip.Addr{})
	hme, hst := hostIn(qme.allowed[0], 5), hostIn(qst.allowed[0], 5)
	hub := w.srv.Hub

	rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for name, c := range map[string]struct {
		i *wg.Interface
		h netip.Addr
	}{"ME on I1": {ime, hme}, "ST on S1": {ist, hst}} {
		if err := tcpRoundTrip(rctx, c.i, netip.AddrPortFrom(c.h, 7), 256<<10); err != nil {
			t.Fatalf("%s: TCP echo at %s:7: %v", name, c.h, err)
		}
		if err := udpRoundTrip(c.i, netip.AddrPortFrom(c.h, 7), 20, 500*time.Millisecond); err != nil {
			t.Fatalf("%s: UDP echo at %s:7: %v", name, c.h, err)
		}
	}
	mu.Lock()
	for _, dd := range dialed {
		if !strings.HasSuffix(dd, " 10.0.0.5:7") && !strings.Contains(dd, "10.0.0.10:5900") {
			t.Errorf("agent dialed %q: not the translated machine address", dd)
		}
	}
	mu.Unlock()

	// A port the template does not list: dropped at the hub.
	before := hub.SSCDropped(remote.DropPort)
	sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
	if c, err := ime.DialTCP(sctx, netip.AddrPortFrom(hme, 22)); err == nil {
		c.Close()
		t.Error("reached port 22, which the template does not list")
	}
	scancel()
	if hub.SSCDropped(remote.DropPort) <= before {
		t.Error("the packets to port 22 were not counted as port_not_allowed")
	}
	// Another grant's subnet (the engineer widens its own AllowedIPs):
	// dropped at the hub.
	ime.Close() // one client per key, or they take the session from each other
	wide := qme.up(t, netip.Addr{}, netip.MustParsePrefix("100.64.0.0/10"))
	ime = wide
	before = hub.SSCDropped(remote.DropDestination)
	sctx, scancel = context.WithTimeout(ctx, 2*time.Second)
	if c, err := wide.DialTCP(sctx, netip.AddrPortFrom(hst, 7)); err == nil {
		c.Close()
		t.Error("ME reached S1's machine through its own config")
	}
	scancel()
	if hub.SSCDropped(remote.DropDestination) <= before {
		t.Error("packets to another grant's subnet were not counted as destination_not_allowed")
	}
	// A spoofed source address from ST's peer: WireGuard's cryptokey
	// routing drops it at the hub, counted as spoofed_source.
	before = hub.SSCDropped(remote.DropSpoofed)
	ist.Close()
	spoof := qst.up(t, netip.MustParseAddr("100.97.200.200"))
	sctx, scancel = context.WithTimeout(ctx, 2*time.Second)
	if c, err := spoof.DialTCP(sctx, netip.AddrPortFrom(hst, 7)); err == nil {
		c.Close()
		t.Error("a spoofed source reached the machine")
	}
	scancel()
	if hub.SSCDropped(remote.DropSpoofed) <= before {
		t.Error("spoofed packets were not counted as spoofed_source")
	}
	spoof.Close()
	// The spoofing client took over ST's session keys; ST reconnects.
	ist = qst.up(t, netip.Addr{})

	t.Run("debian wireguard-go in a network namespace", func(t *testing.T) {
		cfg, err := w.ssc(ctx, "O1/ME", "I1", "")
		if err != nil {
			t.Fatal(err)
		}
		kernelSideClient(t, cfg.Config, hostIn(parseQuick(t, cfg.Config).allowed[0], 5))
	})

	// ME's traffic works again on the widened interface, then
	// deactivation stops it.
	if err := udpRoundTrip(ime, netip.AddrPortFrom(hme, 7), 20, 500*time.Millisecond); err != nil {
		t.Fatalf("UDP before deactivation: %v", err)
	}
	c, err := ime.DialUDP(netip.AddrPortFrom(hme, 7))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var lastReply atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { // send every 10 ms
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
				_, _ = c.Write([]byte("tick"))
			}
		}
	}()
	go func() {
		buf := make([]byte, 16)
		for {
			if _, err := c.Read(buf); err != nil {
				return
			}
			lastReply.Store(time.Now().UnixNano())
		}
	}()
	time.Sleep(300 * time.Millisecond)
	if lastReply.Load() == 0 {
		t.Fatal("no UDP replies before deactivation")
	}
	deactivated := time.Now() // the request starts: the grant ends during it
	if _, err := w.remoteClient("O1/ME").DeactivateRemoteAccess(ctx, connect.NewRequest(&gantryv1.DeactivateRemoteAccessRequest{CaseId: w.id("I1")})); err != nil {
		t.Fatal(err)
	}
	t.Logf("DeactivateRemoteAccess returned after %v", time.Since(deactivated).Round(time.Millisecond))
	time.Sleep(4 * time.Second)
	close(stop)
	<-done
	last := time.Unix(0, lastReply.Load())
	took := last.Sub(deactivated)
	limit := time.Second
	if raceEnabled {
		limit = 3 * time.Second
	}
	t.Logf("deactivation request → last reply after %v (limit %v)", took.Round(time.Millisecond), limit)
	if took > limit {
		t.Errorf("traffic continued %v after deactivation", took)
	}
	// S1's session is unaffected.
	if err := udpRoundTrip(ist, netip.AddrPortFrom(hst, 7), 20, 500*time.Millisecond); err != nil {
		t.Errorf("S1 after I1's deactivation: %v", err)
	}
	// I1's ended config is in the operator's audit log with its bytes and
	// 5-tuple flow summaries (no payloads).
	audit := gantryv1connect.NewAuditServiceClient(http.DefaultClient, w.srv.URL, connect.WithProtoJSON(), servertest.Bearer(w.actor("O1/admin").Token))
	evs, err := audit.ListAudit(ctx, connect.NewRequest(&gantryv1.ListAuditRequest{Limit: 200}))
	if err != nil {
		t.Fatal(err)
	}
	// ME holds several configs on I1 (the limit test issued more); the
	// one the 256 KiB echo ran through must be there with both flows.
	var found []string
	ok := false
	for _, e := range evs.Msg.Events {
		if e.Action != "remote_access.ssc_session" || e.Target != w.id("I1") {
			continue
		}
		found = append(found, e.Detail)
		var up, down int64
		i := strings.Index(e.Detail, ", ")
		if i < 0 {
			continue
		}
		if _, err := fmt.Sscanf(e.Detail[i+2:], "%d bytes to the machine, %d bytes to the engineer", &up, &down); err == nil && up >= 256<<10 && down >= 256<<10 &&
			strings.Contains(e.Detail, "tcp :") && strings.Contains(e.Detail, "udp :") && strings.Contains(e.Detail, " → "+hme.String()+":7 ") {
			ok = true
			t.Logf("ssc session audit: %s", e.Detail)
		}
	}
	if !ok {
		t.Errorf("no SSC session audit record with ≥ 256 KiB each way and tcp and udp flows to %s:7 among %q", hme, found)
	}
}

// enrollToken creates an enrollment token for device dev.
func (w *world) enrollToken(t *testing.T, dev string) string {
	t.Helper()
	tok, err := w.deviceClient("P1/ST").CreateEnrollmentToken(context.Background(), connect.NewRequest(&gantryv1.CreateEnrollmentTokenRequest{DeviceId: w.id(dev)}))
	if err != nil {
		t.Fatalf("enrollment token for %s: %v", dev, err)
	}
	return tok.Msg.Token
}

// kernelSideClient runs the generated config on Debian's wireguard-go
// (a real TUN interface, configured by wg setconf from `wg-quick strip`)
// in a network namespace joined to this one by a veth pair, and checks
// TCP and UDP echo at host:7 with bash's /dev/tcp and /dev/udp, and that
// port 22 is unreachable. Needs root and the tools; skips visibly
// otherwise.
func kernelSideClient(t *testing.T, config string, host netip.Addr) {
	for _, bin := range []string{"wireguard-go", "wg", "wg-quick", "ip", "bash"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("SKIP: %s not installed (Debian wireguard-go, wireguard-tools); the kernel-side client is not checked", bin)
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("SKIP: needs root for a network namespace and a TUN device; the kernel-side client is not checked")
	}
	q := parseQuick(t, config)
	n := os.Getpid() % 200
	ns, vh, vn, ifc := fmt.Sprintf("gssc%d", n), fmt.Sprintf("gsscA%d", n), fmt.Sprintf("gsscB%d", n), fmt.Sprintf("gwg%d", n)
	hostIP, nsIP := fmt.Sprintf("10.213.%d.1", n), fmt.Sprintf("10.213.%d.2", n)
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	t.Cleanup(func() {
		_ = exec.Command("ip", "netns", "del", ns).Run()
		_ = exec.Command("ip", "link", "del", vh).Run()
	})
	run("ip", "netns", "add", ns)
	run("ip", "link", "add", vh, "type", "veth", "peer", "name", vn)
	run("ip", "link", "set", vn, "netns", ns)
	run("ip", "addr", "add", hostIP+"/30", "dev", vh)
	run("ip", "link", "set", vh, "up")
	in := func(args ...string) { t.Helper(); run(append([]string{"ip", "netns", "exec", ns}, args...)...) }
	in("ip", "link", "set", "lo", "up")
	in("ip", "addr", "add", nsIP+"/30", "dev", vn)
	in("ip", "link", "set", vn, "up")
	// The hub listens on every address; from the namespace it is at the
	// host end of the veth pair.
	conf := strings.Replace(config, "Endpoint = "+q.endpoint.String(), fmt.Sprintf("Endpoint = %s:%d", hostIP, q.endpoint.Port()), 1)
	dir := t.TempDir()
	path := filepath.Join(dir, ifc+".conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	stripped, err := exec.Command("wg-quick", "strip", path).Output()
	if err != nil {
		t.Fatalf("wg-quick strip: %v", err)
	}
	sp := filepath.Join(dir, "stripped.conf")
	if err := os.WriteFile(sp, stripped, 0o600); err != nil {
		t.Fatal(err)
	}
	in("wireguard-go", ifc)
	t.Cleanup(func() {
		// Deleting the interface ends the daemonized wireguard-go; its UAPI
		// socket lives in the host's /var/run/wireguard.
		_ = exec.Command("ip", "netns", "exec", ns, "ip", "link", "del", ifc).Run()
		_ = os.Remove("/var/run/wireguard/" + ifc + ".sock")
	})
	in("wg", "setconf", ifc, sp)
	in("ip", "addr", "add", q.addr.String()+"/32", "dev", ifc)
	in("ip", "link", "set", ifc, "up")
	for _, a := range q.allowed {
		in("ip", "route", "add", a.String(), "dev", ifc)
	}
	script := `set -e
exec 3<>/dev/tcp/$1/7
echo gantry-tcp >&3
read -t 5 line <&3
echo "tcp:$line"
exec 3<&-
for i in 1 2 3 4 5 6 7 8 9 10; do
  exec 4<>/dev/udp/$1/7
  echo gantry-udp >&4
  # bash's read takes one byte per recv, which truncates a datagram.
  if line=$(timeout 1 head -n1 <&4); then echo "udp:$line"; break; fi
  exec 4<&-
done
if timeout 3 bash -c "exec 5<>/dev/tcp/$1/22" 2>/dev/null; then echo "port22:open"; else echo "port22:closed"; fi`
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "bash", "-c", script, "bash", host.String()).CombinedOutput()
	got := string(out)
	t.Logf("kernel-side client in namespace %s:\n%s", ns, got)
	if err != nil || !strings.Contains(got, "tcp:gantry-tcp") || !strings.Contains(got, "udp:gantry-udp") || !strings.Contains(got, "port22:closed") {
		t.Fatalf("Debian wireguard-go client: %v\n%s", err, got)
	}
}
