// Package sscbench measures Secure Service Connect's data path in one
// process: an engineer's WireGuard client (wireguard-go on a netstack)
// through the control plane's hub and the agent's subnet router to TCP
// services on loopback, against a two-hop baseline measured in the same
// run (the same client → a plain wireguard-go relay without policy → a
// second netstack peer). Run with GANTRY_BENCH=1 (make bench).
package sscbench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gantry-iot/gantry/agent/tunnel"
	"github.com/gantry-iot/gantry/controlplane/remote"
	"github.com/gantry-iot/gantry/pkg/wg"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
)

// Service ports on the target: discard and echo.
const (
	discardPort = 9
	echoPort    = 7
)

// loopTUN hands every packet WireGuard writes straight back to it, so a
// wireguard-go device becomes a plain relay between its peers (cryptokey
// routing only, no stack, no policy).
type loopTUN struct {
	ch     chan []byte
	events chan tun.Event
	done   chan struct{}
	once   sync.Once
}

func newLoopTUN() *loopTUN {
	t := &loopTUN{ch: make(chan []byte, 1024), events: make(chan tun.Event, 1), done: make(chan struct{})}
	t.events <- tun.EventUp
	return t
}

func (t *loopTUN) File() *os.File           { return nil }
func (t *loopTUN) MTU() (int, error)        { return wg.MTU, nil }
func (t *loopTUN) Name() (string, error)    { return "loop", nil }
func (t *loopTUN) Events() <-chan tun.Event { return t.events }
func (t *loopTUN) BatchSize() int           { return 16 }
func (t *loopTUN) Close() error {
	t.once.Do(func() { close(t.done); close(t.events) })
	return nil
}

func (t *loopTUN) Write(bufs [][]byte, offset int) (int, error) {
	for _, b := range bufs {
		p := append([]byte(nil), b[offset:]...)
		select {
		case t.ch <- p:
		case <-t.done:
			return 0, os.ErrClosed
		}
	}
	return len(bufs), nil
}

func (t *loopTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	var p []byte
	select {
	case p = <-t.ch:
	case <-t.done:
		return 0, os.ErrClosed
	}
	n := 0
	for {
		sizes[n] = copy(bufs[n][offset:], p)
		if n++; n == len(bufs) {
			return n, nil
		}
		select {
		case p = <-t.ch:
		default:
			return n, nil
		}
	}
}

// path is one way from the engineer's client to the services.
type path struct {
	eng     *wg.Interface
	host    netip.Addr
	cleanup func()
}

func serve(l net.Listener, echo bool) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			if echo {
				_, _ = io.Copy(c, c)
			} else {
				_, _ = io.Copy(io.Discard, c)
			}
			c.Close()
		}()
	}
}

var loopback = netip.MustParseAddr("127.0.0.1")

// baseline: engineer → relay → target peer (netstack services).
func baseline(t testing.TB) path {
	ek, _ := wg.NewPrivateKey()
	rk, _ := wg.NewPrivateKey()
	tk, _ := wg.NewPrivateKey()
	ea, ta := netip.MustParseAddr("100.97.0.2"), netip.MustParseAddr("100.64.0.5")
	lt := newLoopTUN()
	relay := device.NewDevice(lt, conn.NewDefaultBind(), device.NewLogger(device.LogLevelSilent, ""))
	must(t, relay.IpcSet(fmt.Sprintf("private_key=%s\nlisten_port=0\npublic_key=%s\nallowed_ip=%s/32\npublic_key=%s\nallowed_ip=%s/32\n",
		rk.Hex(), ek.Public().Hex(), ea, tk.Public().Hex(), ta)))
	must(t, relay.Up())
	port := listenPort(t, relay)
	target, err := wg.New(wg.Config{PrivateKey: tk, Address: ta})
	must(t, err)
	must(t, target.SetPeer(wg.Peer{PublicKey: rk.Public(), Endpoint: netip.AddrPortFrom(loopback, port),
		AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.97.0.0/16")}, KeepaliveSeconds: 25}))
	for p, echo := range map[int]bool{discardPort: false, echoPort: true} {
		l, err := target.ListenTCP(p)
		must(t, err)
		go serve(l, echo)
	}
	eng, err := wg.New(wg.Config{PrivateKey: ek, Address: ea})
	must(t, err)
	must(t, eng.SetPeer(wg.Peer{PublicKey: rk.Public(), Endpoint: netip.AddrPortFrom(loopback, port),
		AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.64.0.0/24")}, KeepaliveSeconds: 25}))
	return path{eng: eng, host: ta, cleanup: func() { eng.Close(); target.Close(); relay.Close() }}
}

func listenPort(t testing.TB, d *device.Device) uint16 {
	s, err := d.IpcGet()
	must(t, err)
	var p uint16
	for _, line := range slices.Collect(splitLines(s)) {
		if _, err := fmt.Sscanf(line, "listen_port=%d", &p); err == nil {
			return p
		}
	}
	t.Fatal("relay has no listen port")
	return 0
}

func splitLines(s string) func(func(string) bool) {
	return func(yield func(string) bool) {
		start := 0
		for i := range len(s) {
			if s[i] == '\n' {
				if !yield(s[start:i]) {
					return
				}
				start = i + 1
			}
		}
	}
}

// ssc: engineer → hub (policy) → agent subnet router → loopback sockets.
func ssc(t testing.TB) path {
	hub, err := remote.NewHub(remote.HubConfig{Logger: slog.New(slog.DiscardHandler)})
	must(t, err)
	p, err := hub.AddPeerSSC("g1", []string{"192.168.0.0/24"}, []string{"tcp/7", "tcp/9"})
	must(t, err)
	cfg, err := hub.AddEngineer(remote.SSCRequest{GrantID: "g1", UserID: "u1", Subnets: []string{"192.168.0.0/24"}, Ports: []string{"tcp/7", "tcp/9"}})
	must(t, err)
	var addrs = map[string]string{}
	for port, echo := range map[int]bool{discardPort: false, echoPort: true} {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		must(t, err)
		go serve(l, echo)
		addrs[fmt.Sprintf("192.168.0.5:%d", port)] = l.Addr().String()
	}
	var d net.Dialer
	m := tunnel.New(tunnel.Options{Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		if a, ok := addrs[addr]; ok {
			return d.DialContext(ctx, network, a)
		}
		return nil, fmt.Errorf("no service at %s", addr)
	}})
	up := &gantryv1.TunnelUp{GrantId: "g1", PrivateKey: p.PrivateKey[:], HubPublicKey: p.HubPublicKey[:], PresharedKey: p.PresharedKey[:],
		HubEndpoint: p.HubEndpoint, Address: p.Address.String(), HubAddress: p.HubAddress.String(), ExpiresAt: timestamppb.New(time.Now().Add(time.Hour)),
		SscClients: p.SSCClients.String(), SscPorts: p.SSCPorts}
	for _, s := range p.SSC {
		up.SscSubnets = append(up.SscSubnets, &gantryv1.SSCSubnet{Machine: s.Machine.String(), Virtual: s.Virtual.String()})
	}
	must(t, m.Up(up))
	eng, err := wg.New(wg.Config{PrivateKey: cfg.PrivateKey, Address: cfg.Address})
	must(t, err)
	ep, err := netip.ParseAddrPort(cfg.HubEndpoint)
	must(t, err)
	must(t, eng.SetPeer(wg.Peer{PublicKey: cfg.HubPublicKey, PresharedKey: cfg.PresharedKey, Endpoint: ep, AllowedIPs: cfg.AllowedIPs, KeepaliveSeconds: 25}))
	host := cfg.AllowedIPs[0].Addr().As4()
	host[3] = 5
	return path{eng: eng, host: netip.AddrFrom4(host), cleanup: func() { eng.Close(); m.Close(); hub.Close() }}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// throughput writes n bytes in 64 KiB writes to the discard service and
// returns MB/s (the sender's view; TCP flow control keeps it honest).
func throughput(t testing.TB, p path, n int) float64 {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := p.eng.DialTCP(ctx, netip.AddrPortFrom(p.host, discardPort))
	must(t, err)
	defer c.Close()
	buf := make([]byte, 64<<10)
	start := time.Now()
	for sent := 0; sent < n; sent += len(buf) {
		if _, err := c.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	return float64(n) / time.Since(start).Seconds() / 1e6
}

// rtts returns k round-trip times of 64-byte messages through the echo
// service, sorted.
func rtts(t testing.TB, p path, k int) []time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := p.eng.DialTCP(ctx, netip.AddrPortFrom(p.host, echoPort))
	must(t, err)
	defer c.Close()
	msg, got := make([]byte, 64), make([]byte, 64)
	out := make([]time.Duration, 0, k)
	for range k {
		start := time.Now()
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatal(err)
		}
		out = append(out, time.Since(start))
	}
	slices.Sort(out)
	return out
}

// TestSSCLatencyThroughput measures both paths alternately in one run and
// reports the ratios docs/benchmarks.md records. It fails only on gross
// regressions (below half the baseline's throughput, more than 5 ms added
// p50), as the machine is shared.
func TestSSCLatencyThroughput(t *testing.T) {
	if os.Getenv("GANTRY_BENCH") == "" {
		t.Skip("set GANTRY_BENCH=1 to measure the SSC data path (part of make bench)")
	}
	const rounds, size, pings = 3, 64 << 20, 2000
	var base, sscs []float64
	var baseRTT, sscRTT []time.Duration
	for r := range rounds {
		for _, which := range []string{"baseline", "ssc"} {
			var p path
			if which == "baseline" {
				p = baseline(t)
			} else {
				p = ssc(t)
			}
			mbps := throughput(t, p, size)
			rt := rtts(t, p, pings)
			p.cleanup()
			t.Logf("round %d %-8s %6.1f MB/s  rtt p50 %v p99 %v", r+1, which, mbps, rt[len(rt)/2], rt[len(rt)*99/100])
			if which == "baseline" {
				base, baseRTT = append(base, mbps), append(baseRTT, rt[len(rt)/2])
			} else {
				sscs, sscRTT = append(sscs, mbps), append(sscRTT, rt[len(rt)/2])
			}
		}
	}
	med := func(v []float64) float64 { s := slices.Clone(v); slices.Sort(s); return s[len(s)/2] }
	medD := func(v []time.Duration) time.Duration { s := slices.Clone(v); slices.Sort(s); return s[len(s)/2] }
	ratio := med(sscs) / med(base)
	added := medD(sscRTT) - medD(baseRTT)
	t.Logf("throughput: baseline %.1f MB/s, ssc %.1f MB/s, ratio %.2f (goal ≥ 0.80)", med(base), med(sscs), ratio)
	t.Logf("rtt p50: baseline %v, ssc %v, added %v (goal ≤ 1 ms)", medD(baseRTT), medD(sscRTT), added)
	if ratio < 0.5 {
		t.Errorf("SSC throughput is %.2f of the baseline", ratio)
	}
	if added > 5*time.Millisecond {
		t.Errorf("SSC adds %v round-trip latency", added)
	}
}
