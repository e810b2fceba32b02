package tunnel

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	gicmp "gvisor.dev/gvisor/pkg/tcpip/transport/icmp"

	"github.com/gantry-iot/gantry/pkg/tunnelproto"
	"github.com/gantry-iot/gantry/pkg/wg"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
)

// The kernel-TUN end-to-end test runs the agent's tunnel manager in a
// network namespace of its own ("agent"), re-executing this test binary
// there (ip netns exec … -test.run TestKernelTUNHelper), so the test
// process never switches namespaces. A second namespace ("lan") holds the
// machine: 192.168.77.5 (in the grant) and 192.168.78.5 (not), with TCP
// and UDP echo services; the kernel answers pings. The engineer is a
// netstack WireGuard peer in the test process, reached over a veth pair.

const helperEnv = "GANTRY_KTUN_HELPER"

// TestKernelTUNHelper is not a test: it is the agent or LAN process of
// TestKernelTUNEndToEnd, started inside a namespace.
func TestKernelTUNHelper(t *testing.T) {
	switch os.Getenv(helperEnv) {
	case "agent":
		helperAgent()
	case "lan":
		helperLAN()
	default:
		t.Skip("helper process of TestKernelTUNEndToEnd")
	}
	os.Exit(0)
}

// helperAgent speaks a line protocol on stdin/stdout: "start" creates the
// manager in kernel_tun mode, "up B64" brings a TunnelUp up, "down ID",
// "state" lists what the kernel-TUN mode owns in this namespace, "kernelerr".
func helperAgent() {
	var m *Manager
	out := func(f string, a ...any) { fmt.Printf("KTUN "+f+"\n", a...) }
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		cmd, arg, _ := strings.Cut(sc.Text(), " ")
		switch cmd {
		case "start":
			opts := Options{SSCMode: SSCKernelTUN}
			if arg != "" {
				opts.Consent = FileConsent(arg, false)
			}
			m = New(opts)
			out("ok")
		case "startuser":
			m = New(Options{})
			out("ok")
		case "kernelerr":
			out("%v", m.KernelTUNErr())
		case "up":
			b, _ := base64.StdEncoding.DecodeString(arg)
			var up gantryv1.TunnelUp
			if err := proto.Unmarshal(b, &up); err != nil {
				out("err %v", err)
				continue
			}
			if err := m.Up(&up); err != nil {
				out("err %v", err)
				continue
			}
			out("ok")
		case "down":
			_ = m.Down(arg)
			out("ok")
		case "state":
			out("%s", kernelState())
		}
	}
	if m != nil {
		m.Close()
	}
}

// kernelState lists the kernel-TUN mode's objects in this namespace.
func kernelState() string {
	var parts []string
	if nc, err := nftables.New(); err == nil {
		ts, _ := nc.ListTablesOfFamily(nftables.TableFamilyIPv4)
		for _, t := range ts {
			if strings.HasPrefix(t.Name, ktunPrefix) {
				parts = append(parts, "table:"+t.Name)
			}
		}
	}
	ls, _ := netlink.LinkList()
	for _, l := range ls {
		if strings.HasPrefix(l.Attrs().Name, ktunPrefix) {
			parts = append(parts, "link:"+l.Attrs().Name)
		}
	}
	rs, _ := netlink.RuleList(netlink.FAMILY_V4)
	for _, r := range rs {
		if r.Priority == ktunRulePref {
			parts = append(parts, "rule:"+strconv.Itoa(r.Table))
		}
	}
	if len(parts) == 0 {
		return "clean"
	}
	return strings.Join(parts, ",")
}

// helperLAN serves TCP echo on 7 and 8, TCP discard on 9, UDP echo on
// 7, until stdin ends.
func helperLAN() {
	if ln, err := net.Listen("tcp4", ":9"); err == nil {
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() { n, _ := io.Copy(io.Discard, c); fmt.Fprintf(c, "%d\n", n); c.Close() }()
			}
		}()
	}
	for _, port := range []string{"7", "8"} {
		ln, err := net.Listen("tcp4", ":"+port)
		if err != nil {
			fmt.Println("KTUN err", err)
			return
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() { io.Copy(c, c); c.Close() }()
			}
		}()
	}
	pc, err := net.ListenPacket("udp4", ":7")
	if err != nil {
		fmt.Println("KTUN err", err)
		return
	}
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
	fmt.Println("KTUN ok")
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// helper is a running helper process.
type helper struct {
	t     *testing.T
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines chan string
}

func startHelper(t *testing.T, ns, role string) *helper {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run=^TestKernelTUNHelper$")
	cmd.Env = append(os.Environ(), helperEnv+"="+role)
	cmd.Stderr = os.Stderr
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := &helper{t: t, cmd: cmd, in: in, lines: make(chan string, 16)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if l, ok := strings.CutPrefix(sc.Text(), "KTUN "); ok {
				h.lines <- l
			}
		}
		close(h.lines)
	}()
	t.Cleanup(h.stop)
	return h
}

func (h *helper) read() string {
	h.t.Helper()
	select {
	case l, ok := <-h.lines:
		if !ok {
			h.t.Fatal("helper process ended")
		}
		return l
	case <-time.After(20 * time.Second):
		h.t.Fatal("helper process did not answer")
	}
	return ""
}

func (h *helper) do(cmd string) string {
	h.t.Helper()
	fmt.Fprintln(h.in, cmd)
	return h.read()
}

func (h *helper) stop() {
	h.in.Close()
	done := make(chan struct{})
	go func() { h.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		h.cmd.Process.Kill()
		<-done
	}
}

func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// kernelTestable skips unless this process can create a network
// namespace with a TUN interface and an nftables table in it.
func kernelTestable(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("SKIP: kernel_tun tests need root (network namespaces, TUN, nftables)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("SKIP: kernel_tun tests need the ip command (iproute2)")
	}
	if f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0); err != nil {
		t.Skipf("SKIP: no /dev/net/tun: %v", err)
	} else {
		f.Close()
	}
	ns := fmt.Sprintf("gk%dchk", os.Getpid()%100000)
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Skipf("SKIP: cannot create a network namespace: %v %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", ns).Run()
	f, err := os.Open("/run/netns/" + ns)
	if err != nil {
		t.Skipf("SKIP: %v", err)
	}
	defer f.Close()
	nc, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())))
	if err != nil {
		t.Skipf("SKIP: nftables: %v", err)
	}
	nc.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: "probe"})
	if err := nc.Flush(); err != nil {
		t.Skipf("SKIP: nf_tables unavailable: %v", err)
	}
}

// kernelNetns creates the agent and LAN namespaces and their links; it
// returns the agent namespace's name, the LAN's, and the address of the
// test process as the agent reaches it.
func kernelNetns(t *testing.T) (agentNS, lanNS string, hostAddr netip.Addr) {
	t.Helper()
	id := os.Getpid() % 100000
	agentNS, lanNS = fmt.Sprintf("gk%da", id), fmt.Sprintf("gk%dl", id)
	vh, va := fmt.Sprintf("gk%dh", id), fmt.Sprintf("gk%dA", id) // host ↔ agent
	vl, vm := fmt.Sprintf("gk%dL", id), fmt.Sprintf("gk%dm", id) // agent ↔ LAN
	exec.Command("ip", "netns", "del", agentNS).Run()
	exec.Command("ip", "netns", "del", lanNS).Run()
	exec.Command("ip", "link", "del", vh).Run()
	t.Cleanup(func() {
		exec.Command("ip", "netns", "del", agentNS).Run()
		exec.Command("ip", "netns", "del", lanNS).Run()
		exec.Command("ip", "link", "del", vh).Run()
	})
	third := 1 + id%250
	hostAddr = netip.AddrFrom4([4]byte{10, 251, byte(third), 1})
	agentSide := netip.AddrFrom4([4]byte{10, 251, byte(third), 2})
	for _, c := range [][]string{
		{"ip", "netns", "add", agentNS},
		{"ip", "netns", "add", lanNS},
		{"ip", "link", "add", vh, "type", "veth", "peer", "name", va},
		{"ip", "link", "set", va, "netns", agentNS},
		{"ip", "addr", "add", hostAddr.String() + "/30", "dev", vh},
		{"ip", "link", "set", vh, "up"},
		{"ip", "-n", agentNS, "addr", "add", agentSide.String() + "/30", "dev", va},
		{"ip", "-n", agentNS, "link", "set", va, "up"},
		{"ip", "-n", agentNS, "link", "set", "lo", "up"},
		{"ip", "-n", agentNS, "link", "add", vl, "type", "veth", "peer", "name", vm},
		{"ip", "-n", agentNS, "link", "set", vm, "netns", lanNS},
		{"ip", "-n", agentNS, "addr", "add", "192.168.77.1/24", "dev", vl},
		{"ip", "-n", agentNS, "addr", "add", "192.168.78.1/24", "dev", vl},
		{"ip", "-n", agentNS, "link", "set", vl, "up"},
		{"ip", "-n", lanNS, "addr", "add", "192.168.77.5/24", "dev", vm},
		{"ip", "-n", lanNS, "addr", "add", "192.168.78.5/24", "dev", vm},
		{"ip", "-n", lanNS, "link", "set", vm, "up"},
		{"ip", "-n", lanNS, "link", "set", "lo", "up"},
	} {
		run(t, c...)
	}
	return agentNS, lanNS, hostAddr
}

// kernelEngineer is the engineer's WireGuard peer (netstack) in the test
// process; it sends everything to the agent and records ICMP it gets.
type kernelEngineer struct {
	*wg.Interface
	key     wg.Key
	replies chan []byte
}

func newKernelEngineer(t *testing.T, agentKey wg.Key, psk wg.Key) *kernelEngineer {
	t.Helper()
	ek, _ := wg.NewPrivateKey()
	eng, err := wg.New(wg.Config{PrivateKey: ek, Address: engAddr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eng.Close)
	e := &kernelEngineer{Interface: eng, key: ek, replies: make(chan []byte, 16)}
	eng.Stack().SetTransportProtocolHandler(gicmp.ProtocolNumber4, func(_ stack.TransportEndpointID, pkt *stack.PacketBuffer) bool {
		v := stack.PayloadSince(pkt.NetworkHeader())
		select {
		case e.replies <- append([]byte(nil), v.AsSlice()...):
		default:
		}
		v.Release()
		return true
	})
	// Everything goes to the agent, so the test can also try addresses
	// the hub would never route there (the agent's filter must drop them).
	if err := eng.SetPeer(wg.Peer{PublicKey: agentKey.Public(), PresharedKey: psk, AllowedIPs: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}}); err != nil {
		t.Fatal(err)
	}
	return e
}

// ping sends echo requests to dst until one is answered (true) or 3 s
// pass.
func (e *kernelEngineer) ping(t *testing.T, dst netip.Addr) bool {
	t.Helper()
	req, _ := (&icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: 4242, Seq: 9, Data: []byte("gantry-ktun")}}).Marshal(nil)
	p := echoReply(engAddr, dst, 0, 0, nil)[:20]
	p = append(p, req...)
	binary.BigEndian.PutUint16(p[2:4], uint16(len(p)))
	h := header.IPv4(p)
	h.SetChecksum(0)
	h.SetChecksum(^h.CalculateChecksum())
	for range 6 {
		if err := e.WritePacket(p); err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-e.replies:
			msg, err := icmp.ParseMessage(1, r[20:])
			if err == nil && msg.Type == ipv4.ICMPTypeEchoReply && netip.AddrFrom4([4]byte(r[12:16])) == dst {
				return true
			}
		case <-time.After(500 * time.Millisecond):
		}
	}
	return false
}

func kernelTunnelUp(agentKey, engKey, psk wg.Key, hub netip.AddrPort, ports []string) *gantryv1.TunnelUp {
	pub := engKey.Public()
	return &gantryv1.TunnelUp{GrantId: "grant-k", PrivateKey: agentKey[:], HubPublicKey: pub[:], PresharedKey: psk[:],
		HubEndpoint: hub.String(), Address: agentAddr.String(), HubAddress: engAddr.String(),
		Targets:    []string{"192.168.77.5:7"},
		SscSubnets: []*gantryv1.SSCSubnet{{Machine: "192.168.77.0/24", Virtual: vnet.String()}},
		SscClients: "100.97.0.0/16", SscPorts: ports, ExpiresAt: timestamppb.New(time.Now().Add(time.Hour))}
}

func encodeUp(t *testing.T, up *gantryv1.TunnelUp) string {
	b, err := proto.Marshal(up)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(b)
}

func TestKernelTUNEndToEnd(t *testing.T) {
	kernelTestable(t)
	agentNS, lanNS, hostAddr := kernelNetns(t)
	lan := startHelper(t, lanNS, "lan")
	if l := lan.read(); l != "ok" {
		t.Fatalf("lan helper: %s", l)
	}

	agent := startHelper(t, agentNS, "agent")
	t.Run("forwarding off is reported, not fatal", func(t *testing.T) {
		run(t, "ip", "netns", "exec", agentNS, "sysctl", "-qw", "net.ipv4.ip_forward=0")
		agent.do("start")
		if e := agent.do("kernelerr"); !strings.Contains(e, "net.ipv4.ip_forward") || !strings.Contains(e, "sysctl") {
			t.Errorf("kernel_tun start error = %q, want it to name net.ipv4.ip_forward", e)
		}
		ak, _ := wg.NewPrivateKey()
		up := kernelTunnelUp(ak, ak, ak, netip.MustParseAddrPort("10.0.0.1:51820"), nil)
		if r := agent.do("up " + encodeUp(t, up)); !strings.Contains(r, "ip_forward") {
			t.Errorf("SSC grant without forwarding: %q", r)
		}
		// A grant without SSC still works (userspace).
		up.SscSubnets, up.SscClients, up.GrantId = nil, "", "grant-plain"
		if r := agent.do("up " + encodeUp(t, up)); r != "ok" {
			t.Errorf("grant without SSC: %q", r)
		}
		agent.stop()
	})
	run(t, "ip", "netns", "exec", agentNS, "sysctl", "-qw", "net.ipv4.ip_forward=1")

	ak, _ := wg.NewPrivateKey()
	psk, _ := wg.NewPresharedKey()
	eng := newKernelEngineer(t, ak, psk)
	hub := netip.AddrPortFrom(hostAddr, uint16(eng.ListenPort()))
	up := kernelTunnelUp(ak, eng.key, psk, hub, []string{"tcp/7", "udp/7", "icmp"})

	agent = startHelper(t, agentNS, "agent")
	if r := agent.do("start"); r != "ok" {
		t.Fatal(r)
	}
	if e := agent.do("kernelerr"); e != "<nil>" {
		t.Fatalf("kernel_tun unavailable in the test namespace: %s", e)
	}
	if r := agent.do("up " + encodeUp(t, up)); r != "ok" {
		t.Fatalf("up: %s", r)
	}
	if s := agent.do("state"); s != "table:gantry-ssc0,link:gantry-ssc0,rule:26465,rule:26465" {
		t.Errorf("kernel objects while up: %s", s)
	}
	host := netip.AddrFrom4([4]byte{100, 64, 7, 5})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	t.Run("tcp through the virtual subnet", func(t *testing.T) {
		c, err := eng.DialTCP(ctx, netip.AddrPortFrom(host, 7))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		msg := bytes.Repeat([]byte("plc!"), 1<<18) // 1 MiB
		go c.Write(msg)
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("echo: %v", err)
		}
	})
	t.Run("udp", func(t *testing.T) {
		if !udpEchoes(eng, netip.AddrPortFrom(host, 7), 3*time.Second) {
			t.Fatal("no UDP echo through the virtual subnet")
		}
	})
	t.Run("icmp echo answered by the machine's kernel", func(t *testing.T) {
		if !eng.ping(t, host) {
			t.Fatal("no echo reply from 100.64.7.5")
		}
	})
	t.Run("data link through the kernel listener", func(t *testing.T) {
		c, err := eng.DialTCP(ctx, netip.AddrPortFrom(agentAddr, tunnelproto.Port))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		line, _ := tunnelproto.Request{GrantID: "grant-k", Target: "192.168.77.5:7"}.Encode()
		c.Write(line)
		if err := tunnelproto.ReadResponse(c); err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("x"))
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
	})
	refused := func(t *testing.T, to netip.AddrPort, why string) {
		t.Helper()
		c2, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if c, err := eng.DialTCP(c2, to); err == nil {
			c.Close()
			t.Errorf("engineer reached %s (%s)", to, why)
		}
	}
	t.Run("not allowed", func(t *testing.T) {
		refused(t, netip.AddrPortFrom(host, 8), "port not in the template, service listening")
		refused(t, netip.MustParseAddrPort("192.168.77.5:7"), "machine address without the virtual subnet")
		refused(t, netip.MustParseAddrPort("192.168.78.5:7"), "subnet outside the grant")
		refused(t, netip.MustParseAddrPort("192.168.77.1:7"), "the agent's own LAN address")
		if eng.ping(t, netip.MustParseAddr("192.168.78.5")) {
			t.Error("ping to a subnet outside the grant answered")
		}
	})

	t.Run("grant removed", func(t *testing.T) {
		// A UDP flow keeps running; after Down it must stop within 1 s.
		c, err := eng.DialUDP(netip.AddrPortFrom(host, 7))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		var last atomic.Int64
		var wg sync.WaitGroup
		stop := make(chan struct{})
		wg.Add(2)
		go func() {
			defer wg.Done()
			buf := make([]byte, 64)
			for {
				_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
				if _, err := c.Read(buf); err == nil {
					last.Store(time.Now().UnixNano())
				}
				select {
				case <-stop:
					return
				default:
				}
			}
		}()
		go func() {
			defer wg.Done()
			for {
				c.Write([]byte("tick"))
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
		}()
		time.Sleep(300 * time.Millisecond)
		if last.Load() == 0 {
			t.Fatal("no UDP echo before Down")
		}
		down := time.Now()
		if r := agent.do("down grant-k"); r != "ok" {
			t.Fatal(r)
		}
		tookDown := time.Since(down)
		time.Sleep(1500 * time.Millisecond)
		close(stop)
		wg.Wait()
		if l := time.Unix(0, last.Load()); l.Sub(down) > time.Second {
			t.Errorf("UDP echoes continued %v after Down (Down took %v)", l.Sub(down), tookDown)
		}
		if s := agent.do("state"); s != "clean" {
			t.Errorf("kernel objects after Down: %s", s)
		}
	})

	t.Run("leftovers of a crashed agent are removed at start", func(t *testing.T) {
		if r := agent.do("up " + encodeUp(t, up)); r != "ok" {
			t.Fatalf("up: %s", r)
		}
		agent.cmd.Process.Kill()
		agent.cmd.Wait()
		next := startHelper(t, agentNS, "agent")
		agent = next
		if s := next.do("state"); !strings.Contains(s, "table:gantry-ssc0") || !strings.Contains(s, "rule:") {
			t.Errorf("after kill -9: %s (want the table and rules left over)", s)
		}
		next.do("start")
		if s := next.do("state"); s != "clean" {
			t.Errorf("after start: %s", s)
		}
		// And the mode works again.
		up2 := proto.Clone(up).(*gantryv1.TunnelUp)
		up2.ExpiresAt = timestamppb.New(time.Now().Add(time.Hour))
		if r := next.do("up " + encodeUp(t, up2)); r != "ok" {
			t.Fatalf("up after restart: %s", r)
		}
		if !udpEchoes(eng, netip.AddrPortFrom(host, 7), 5*time.Second) {
			t.Error("no UDP echo after the restart")
		}
	})

	t.Run("local consent gates new flows", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		agent.stop()
		consent := filepath.Join(t.TempDir(), "consent")
		os.WriteFile(consent, []byte("off\n"), 0o644)
		agent = startHelper(t, agentNS, "agent")
		agent.do("start " + consent)
		up3 := proto.Clone(up).(*gantryv1.TunnelUp)
		up3.ExpiresAt = timestamppb.New(time.Now().Add(time.Hour))
		if r := agent.do("up " + encodeUp(t, up3)); r != "ok" {
			t.Fatalf("up: %s", r)
		}
		c2, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if c, err := eng.DialTCP(c2, netip.AddrPortFrom(host, 7)); err == nil {
			c.Close()
			t.Error("connected without local consent")
		}
		os.WriteFile(consent, []byte("on\n"), 0o644)
		time.Sleep(2 * consentPoll)
		c, err := eng.DialTCP(ctx, netip.AddrPortFrom(host, 7))
		if err != nil {
			t.Fatalf("with consent: %v", err)
		}
		defer c.Close()
		os.WriteFile(consent, []byte("off\n"), 0o644)
		time.Sleep(2 * consentPoll)
		// The running connection continues; new ones are refused.
		c.Write([]byte("still"))
		if _, err := io.ReadFull(c, make([]byte, 5)); err != nil {
			t.Errorf("running flow cut when consent went away: %v", err)
		}
		if udpEchoes(eng, netip.AddrPortFrom(host, 7), time.Second) {
			t.Error("new UDP flow after consent went away")
		}
	})
}

// udpEchoes reports whether a datagram to dst comes back within d.
func udpEchoes(eng *kernelEngineer, dst netip.AddrPort, d time.Duration) bool {
	c, err := eng.DialUDP(dst)
	if err != nil {
		return false
	}
	defer c.Close()
	buf := make([]byte, 64)
	for end := time.Now().Add(d); time.Now().Before(end); {
		c.Write([]byte("ping"))
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if n, err := c.Read(buf); err == nil && string(buf[:n]) == "ping" {
			return true
		}
	}
	return false
}
