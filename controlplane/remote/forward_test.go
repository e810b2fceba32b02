package remote

import (
	"context"
	"encoding/binary"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.zx2c4.com/wireguard/tun/tuntest"

	"github.com/gantry-iot/gantry/pkg/wg"
)

// packet builds an IPv4 packet with a TCP or UDP header carrying ports
// (other protocols: the payload only).
func packet(src, dst netip.Addr, proto byte, sport, dport uint16, size int) []byte {
	if size < 28 {
		size = 28
	}
	p := make([]byte, size)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:4], uint16(size))
	p[8], p[9] = 64, proto
	s4, d4 := src.As4(), dst.As4()
	copy(p[12:16], s4[:])
	copy(p[16:20], d4[:])
	binary.BigEndian.PutUint16(p[20:22], sport)
	binary.BigEndian.PutUint16(p[22:24], dport)
	return checksummed(p)
}

// checksummed sets the IPv4 header checksum.
func checksummed(p []byte) []byte {
	ihl := int(p[0]&0x0f) * 4
	if ihl < 20 || ihl > len(p) {
		return p
	}
	p[10], p[11] = 0, 0
	var sum uint32
	for i := 0; i < ihl; i += 2 {
		sum += uint32(p[i])<<8 | uint32(p[i+1])
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(p[10:12], ^uint16(sum))
	return p
}

// TestForwardPolicy: every packet the hub's WireGuard device decrypts is
// either passed to the hub's own stack (agents ↔ hub), forwarded between
// an engineer and its grant's agent, or dropped with a reason — one
// crafted packet per case, against the policy the hub builds from its
// peers.
func TestForwardPolicy(t *testing.T) {
	hub := newTestHub(t, HubConfig{})
	c1, err := hub.AddEngineer(SSCRequest{GrantID: "g1", UserID: "u1", Subnets: []string{"192.168.0.0/24"}, Ports: []string{"tcp/102", "udp/161", "icmp"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hub.AddPeerSSC("g1", []string{"192.168.0.0/24"}, []string{"tcp/102", "udp/161", "icmp"}); err != nil {
		t.Fatal(err)
	}
	// g2 has the same machine subnet, no port filter, but no agent yet.
	c2, err := hub.AddEngineer(SSCRequest{GrantID: "g2", UserID: "u2", Subnets: []string{"192.168.0.0/24"}})
	if err != nil {
		t.Fatal(err)
	}
	v1, v2 := c1.AllowedIPs[0], c2.AllowedIPs[0]
	if v1.Overlaps(v2) {
		t.Fatalf("grants with the same machine subnet share virtual subnet %s / %s", v1, v2)
	}
	e1, e2 := c1.Address, c2.Address
	host1 := v1.Addr().Next().Next() // .2 of g1's virtual subnet
	agent := hub.peers["g1"].Address
	hubAddr := hub.iface.Address()
	unissued := DefaultSSCPrefix.Addr().Next().Next().Next().Next().Next().Next().Next().Next()
	frag := packet(e1, host1, 6, 40000, 102, 60)
	binary.BigEndian.PutUint16(frag[6:8], 0x2000) // more fragments
	checksummed(frag)
	badSum := packet(e1, host1, 6, 40000, 102, 60)
	badSum[8]-- // TTL changed, checksum not
	badIHL := packet(e1, host1, 6, 40000, 102, 60)
	badIHL[0] = 0x44
	badLen := packet(e1, host1, 6, 40000, 102, 60)
	binary.BigEndian.PutUint16(badLen[2:4], 80)
	shortTCP := packet(e1, host1, 6, 0, 0, 28)[:22]
	binary.BigEndian.PutUint16(shortTCP[2:4], 22)
	checksummed(shortTCP)

	for _, tc := range []struct {
		name   string
		pkt    []byte
		want   verdict
		reason string
	}{
		{"agent to hub goes to the stack", packet(agent, hubAddr, 6, 7000, 50000, 60), verdictStack, ""},
		{"engineer to allowed tcp port", packet(e1, host1, 6, 40000, 102, 60), verdictForward, ""},
		{"engineer to allowed udp port", packet(e1, host1, 17, 40000, 161, 60), verdictForward, ""},
		{"engineer icmp", packet(e1, host1, 1, 0, 0, 60), verdictForward, ""},
		{"reply from the machine", packet(host1, e1, 6, 102, 40000, 60), verdictForward, ""},
		{"full-size packet", packet(e1, host1, 6, 40000, 102, wg.MTU), verdictForward, ""},
		{"oversized", packet(e1, host1, 6, 40000, 102, wg.MTU+1), verdictDrop, DropOversized},
		{"not allowed port", packet(e1, host1, 6, 40000, 103, 60), verdictDrop, DropPort},
		{"not allowed protocol", packet(e1, host1, 47, 0, 0, 60), verdictDrop, DropPort},
		{"reply from a not allowed port", packet(host1, e1, 17, 9, 40000, 60), verdictDrop, DropPort},
		{"fragment with port filter", frag, verdictDrop, DropFragment},
		{"other grant's subnet", packet(e1, v2.Addr().Next(), 6, 40000, 102, 60), verdictDrop, DropDestination},
		{"real machine address", packet(e1, netip.MustParseAddr("192.168.0.2"), 6, 40000, 102, 60), verdictDrop, DropDestination},
		{"the hub itself", packet(e1, hubAddr, 6, 40000, 102, 60), verdictDrop, DropDestination},
		{"another engineer", packet(e1, e2, 6, 40000, 102, 60), verdictDrop, DropDestination},
		{"unissued engineer source", packet(unissued, host1, 6, 40000, 102, 60), verdictDrop, DropSpoofed},
		{"reply from outside the grant's subnet", packet(v2.Addr().Next(), e1, 6, 102, 40000, 60), verdictDrop, DropSpoofed},
		{"grant without agent", packet(e2, v2.Addr().Next(), 6, 40000, 9999, 60), verdictDrop, DropTunnelDown},
		{"header length below 20", badIHL, verdictDrop, DropMalformed},
		{"total length mismatch", badLen, verdictDrop, DropMalformed},
		{"bad header checksum", badSum, verdictDrop, DropMalformed},
		{"truncated tcp header with port filter", shortTCP, verdictDrop, DropMalformed},
		{"short packet", []byte{0x45, 0, 0, 10, 0, 0, 0, 0, 64, 6}, verdictDrop, DropMalformed},
		{"not IP", []byte{0x15, 0, 0, 0}, verdictDrop, DropMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, reason := hub.fwd.check(tc.pkt)
			if got != tc.want || reason != tc.reason {
				t.Errorf("check = %d %q, want %d %q", got, reason, tc.want, tc.reason)
			}
		})
	}

	// Removing g1's agent peer stops forwarding at once.
	hub.RemovePeer("g1")
	if got, reason := hub.fwd.check(packet(e1, host1, 6, 40000, 102, 60)); got != verdictDrop || reason != DropTunnelDown {
		t.Errorf("after RemovePeer: %d %q, want tunnel_down", got, reason)
	}
	// Ending the grant frees its virtual subnet and engineer addresses.
	hub.RemoveEngineers("g1")
	if got, reason := hub.fwd.check(packet(e1, host1, 6, 40000, 102, 60)); got != verdictDrop || reason != DropSpoofed {
		t.Errorf("after the grant ended: %d %q, want spoofed_source (address no longer issued)", got, reason)
	}
	if _, ok := hub.grants["g1"]; ok {
		t.Error("g1's virtual subnets were not freed")
	}
}

// TestForwarderPlumbing: through the tun.Device seam, allowed SSC packets
// come back out of Read (to WireGuard), hub traffic reaches the stack
// unchanged, and each drop is counted under its reason in Prometheus and
// logged once.
func TestForwarderPlumbing(t *testing.T) {
	inner := tuntest.NewChannelTUN()
	reg := prometheus.NewRegistry()
	f := newForwarder(inner.TUN(), DefaultSSCPrefix, reg, nil)
	logs := &countingHandler{}
	f.log = newLogger(logs)
	t.Cleanup(func() { f.Close() })
	eng := netip.MustParseAddr("100.97.0.2")
	gn := &grantNet{id: "g", machine: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")},
		virtual: []netip.Prefix{netip.MustParsePrefix("100.64.9.0/24")}, agentUp: true}
	f.policy.Store(&fwdPolicy{engineers: map[netip.Addr]*grantNet{eng: gn}})
	target := netip.MustParseAddr("100.64.9.7")

	allowed := packet(eng, target, 17, 5000, 53, 100)
	toStack := packet(netip.MustParseAddr("100.96.0.2"), netip.MustParseAddr("100.96.0.1"), 6, 7000, 4000, 80)
	bad := packet(eng, netip.MustParseAddr("100.64.10.1"), 17, 5000, 53, 100)
	go func() {
		if _, err := f.Write([][]byte{allowed, toStack, bad, bad, bad}, 0); err != nil {
			t.Error(err)
		}
	}()
	select {
	case got := <-inner.Inbound:
		if string(got) != string(toStack) {
			t.Error("the stack got a different packet")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("hub traffic did not reach the stack")
	}
	bufs, sizes := [][]byte{make([]byte, 2000)}, []int{0}
	n, err := f.Read(bufs, sizes, 0)
	if err != nil || n != 1 || string(bufs[0][:sizes[0]]) != string(allowed) {
		t.Fatalf("Read = %d, %v; want the allowed packet back for WireGuard", n, err)
	}
	// The stack's own packets still reach WireGuard.
	inner.Outbound <- toStack
	if n, err := f.Read(bufs, sizes, 0); err != nil || n != 1 || string(bufs[0][:sizes[0]]) != string(toStack) {
		t.Fatalf("stack packet not read: %d %v", n, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for f.droppedCount(DropDestination) < 3 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := gathered(t, reg, "gantry_ssc_dropped_packets_total", DropDestination); got != 3 {
		t.Errorf("gantry_ssc_dropped_packets_total{reason=destination_not_allowed} = %v, want 3", got)
	}
	if got := gathered(t, reg, "gantry_ssc_dropped_packets_total", DropPort); got != 0 {
		t.Errorf("port_not_allowed = %v, want 0", got)
	}
	if got := gathered(t, reg, "gantry_ssc_forwarded_packets_total", ""); got != 1 {
		t.Errorf("forwarded = %v, want 1", got)
	}
	if got := logs.count(); got != 1 {
		t.Errorf("%d drop log lines for one reason, want 1", got)
	}
}

// countingHandler counts warning records.
type countingHandler struct {
	mu sync.Mutex
	n  int
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		h.mu.Lock()
		h.n++
		h.mu.Unlock()
	}
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }
func (h *countingHandler) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}

func newLogger(h slog.Handler) *slog.Logger { return slog.New(h) }

// gathered reads a counter from reg (reason "" for unlabelled ones).
func gathered(t *testing.T, reg *prometheus.Registry, name, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			r := ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" {
					r = l.GetValue()
				}
			}
			if r == reason {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("metric %s{reason=%q} not exported", name, reason)
	return 0
}
