package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"

	"github.com/gantry-iot/gantry/pkg/machinemodel"
	"github.com/gantry-iot/gantry/pkg/wg"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
)

// Secure Service Connect limits.
const (
	MaxFlowsPerTunnel = 256
	// DefaultUDPIdle ends a UDP flow after this long without a datagram
	// either way.
	DefaultUDPIdle = 60 * time.Second
	maxSSCSubnets  = 16
)

// subnetMap is one machine subnet and the virtual subnet engineers
// address it by (same size).
type subnetMap struct {
	machine, virtual netip.Prefix
}

// sscSpec is the validated SSC part of a TunnelUp.
type sscSpec struct {
	subnets []subnetMap
	clients netip.Prefix
	ports   []machinemodel.PortRule
}

func parseSSC(m *gantryv1.TunnelUp) (sscSpec, error) {
	var s sscSpec
	if len(m.GetSscSubnets()) == 0 {
		if m.GetSscClients() != "" || len(m.GetSscPorts()) > 0 {
			return s, errors.New("tunnel_up: ssc_clients or ssc_ports without ssc_subnets")
		}
		return s, nil
	}
	if len(m.GetSscSubnets()) > maxSSCSubnets {
		return s, fmt.Errorf("tunnel_up: at most %d ssc_subnets", maxSSCSubnets)
	}
	for i, sn := range m.GetSscSubnets() {
		mp, err1 := netip.ParsePrefix(sn.GetMachine())
		vp, err2 := netip.ParsePrefix(sn.GetVirtual())
		if err1 != nil || err2 != nil || !mp.Addr().Is4() || !vp.Addr().Is4() || mp.Masked() != mp || vp.Masked() != vp {
			return s, fmt.Errorf("tunnel_up: ssc_subnets[%d] %q → %q: both must be IPv4 CIDRs without host bits", i, sn.GetMachine(), sn.GetVirtual())
		}
		if mp.Bits() != vp.Bits() || mp.Bits() < machinemodel.MinSubnetBits {
			return s, fmt.Errorf("tunnel_up: ssc_subnets[%d]: machine %s and virtual %s must have the same size, at most /%d", i, mp, vp, machinemodel.MinSubnetBits)
		}
		for _, o := range s.subnets {
			if o.virtual.Overlaps(vp) {
				return s, fmt.Errorf("tunnel_up: ssc_subnets[%d]: virtual subnet %s overlaps %s", i, vp, o.virtual)
			}
		}
		s.subnets = append(s.subnets, subnetMap{machine: mp, virtual: vp})
	}
	c, err := netip.ParsePrefix(m.GetSscClients())
	if err != nil || !c.Addr().Is4() {
		return s, fmt.Errorf("tunnel_up: ssc_clients %q is not an IPv4 CIDR", m.GetSscClients())
	}
	s.clients = c.Masked()
	if s.ports, err = machinemodel.ParsePortRules(m.GetSscPorts()); err != nil {
		return s, fmt.Errorf("tunnel_up: ssc_ports: %w", err)
	}
	return s, nil
}

// translate maps a virtual destination back onto the machine subnet (same
// host bits); ok is false outside every virtual subnet.
func (s *sscSpec) translate(dst netip.Addr) (netip.Addr, bool) {
	for _, m := range s.subnets {
		if !m.virtual.Contains(dst) {
			continue
		}
		mask := ^uint32(0) >> m.virtual.Bits()
		if m.virtual.Bits() == 0 {
			mask = ^uint32(0)
		}
		d, b := u32(dst), u32(m.machine.Addr())
		return from32(b | d&mask), true
	}
	return netip.Addr{}, false
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func from32(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// flow is one engineer TCP or UDP flow through the subnet router.
type flow struct {
	proto      string
	src, dst   netip.AddrPort // engineer, virtual destination
	target     string         // machine-network host:port dialed
	start      time.Time
	toTarget   int64
	fromTarget int64
}

// startRouter makes the tunnel's stack a subnet router: promiscuous (it
// accepts packets for the virtual subnets, which are not its own address)
// and spoofing (it answers from them), with TCP and UDP forwarders that
// turn each engineer flow into an ordinary socket from the agent — no
// root, no kernel routing. The GANTRY-TUNNEL/1 listener on the tunnel
// address keeps working: established endpoints match before forwarders.
func (m *Manager) startRouter(t *tunnel) error {
	s := t.iface.Stack()
	if err := s.SetPromiscuousMode(wg.NIC, true); err != nil {
		return fmt.Errorf("tunnel: promiscuous mode: %v", err)
	}
	if err := s.SetSpoofing(wg.NIC, true); err != nil {
		return fmt.Errorf("tunnel: spoofing: %v", err)
	}
	tf := tcp.NewForwarder(s, 0, MaxFlowsPerTunnel, func(r *tcp.ForwarderRequest) { m.forwardTCP(t, r) })
	s.SetTransportProtocolHandler(tcp.ProtocolNumber, tf.HandlePacket)
	uf := udp.NewForwarder(s, func(r *udp.ForwarderRequest) { m.forwardUDP(t, r) })
	s.SetTransportProtocolHandler(udp.ProtocolNumber, uf.HandlePacket)
	s.SetTransportProtocolHandler(icmp.ProtocolNumber4, func(id stack.TransportEndpointID, pkt *stack.PacketBuffer) bool {
		return m.forwardICMP(t, id, pkt)
	})
	return nil
}

// admit checks an engineer flow; it returns the machine-network target or
// why it is refused.
func (m *Manager) admit(t *tunnel, proto uint8, id stack.TransportEndpointID) (src, dst netip.AddrPort, target string, err error) {
	src = netip.AddrPortFrom(addrOf(id.RemoteAddress), id.RemotePort)
	dst = netip.AddrPortFrom(addrOf(id.LocalAddress), id.LocalPort)
	if !t.ssc.clients.Contains(src.Addr()) {
		return src, dst, "", fmt.Errorf("source %s is not an engineer address", src.Addr())
	}
	host, ok := t.ssc.translate(dst.Addr())
	if !ok {
		return src, dst, "", fmt.Errorf("destination %s is outside the grant's subnets", dst.Addr())
	}
	if !machinemodel.PortsAllow(t.ssc.ports, proto, dst.Port()) {
		return src, dst, "", fmt.Errorf("port %d is not allowed by the template", dst.Port())
	}
	if m.opts.Consent != nil {
		if err := m.opts.Consent(); err != nil {
			return src, dst, "", fmt.Errorf("local consent missing: %v", err)
		}
	}
	return src, dst, net.JoinHostPort(host.String(), strconv.Itoa(int(dst.Port()))), nil
}

func tcpipAddr(a netip.Addr) tcpip.Address { return tcpip.AddrFrom4(a.As4()) }

func addrOf(a tcpip.Address) netip.Addr {
	ip, _ := netip.AddrFromSlice(a.AsSlice())
	return ip.Unmap()
}

// refuseFlow counts a refused flow and logs the first ones of each tunnel
// and then every 100th (a port scan must not flood the log).
func (m *Manager) refuseFlow(t *tunnel, proto string, src, dst netip.AddrPort, err error) {
	m.Stats.FlowsRefused.Add(1)
	if n := t.refused.Add(1); n <= 20 || n%100 == 0 {
		m.log.Warn("ssc flow refused", "grant", t.grant, "proto", proto, "src", src, "dst", dst, "reason", err, "refused_in_tunnel", n)
	}
}

// forwardTCP runs in its own goroutine (the TCP forwarder starts one per
// SYN): it dials the target first and completes the engineer's handshake
// only if that worked, else it resets.
func (m *Manager) forwardTCP(t *tunnel, r *tcp.ForwarderRequest) {
	src, dst, target, err := m.admit(t, machinemodel.ProtoTCP, r.ID())
	if err != nil {
		r.Complete(true)
		m.refuseFlow(t, "tcp", src, dst, err)
		return
	}
	if !t.addFlow() {
		r.Complete(true)
		m.refuseFlow(t, "tcp", src, dst, errors.New("too many flows through this tunnel"))
		return
	}
	defer t.flowDone()
	ctx, cancel := context.WithTimeout(context.Background(), m.opts.DialTimeout)
	tc, err := m.opts.Dial(ctx, "tcp", target)
	cancel()
	if err != nil {
		r.Complete(true)
		m.refuseFlow(t, "tcp", src, dst, fmt.Errorf("cannot reach %s: %w", target, err))
		return
	}
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	if terr != nil {
		r.Complete(true)
		tc.Close()
		m.refuseFlow(t, "tcp", src, dst, fmt.Errorf("engineer side: %v", terr))
		return
	}
	r.Complete(false)
	ec := gonet.NewTCPConn(&wq, ep)
	if !t.hold(ec) {
		ec.Close()
		tc.Close()
		return
	}
	defer t.untrack(ec)
	if !t.hold(tc) {
		tc.Close()
		return
	}
	defer t.untrack(tc)
	f := &flow{proto: "tcp", src: src, dst: dst, target: target, start: m.opts.Now()}
	m.Stats.FlowsOpened.Add(1)
	f.toTarget, f.fromTarget = Splice(ec, tc)
	m.endFlow(t, f)
}

// forwardUDP runs on the stack's packet path, so it only sets the flow up
// and hands the relay to a goroutine.
func (m *Manager) forwardUDP(t *tunnel, r *udp.ForwarderRequest) {
	src, dst, target, err := m.admit(t, machinemodel.ProtoUDP, r.ID())
	if err != nil {
		m.refuseFlow(t, "udp", src, dst, err)
		return
	}
	if !t.addFlow() {
		m.refuseFlow(t, "udp", src, dst, errors.New("too many flows through this tunnel"))
		return
	}
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	if terr != nil {
		t.flowDone()
		m.refuseFlow(t, "udp", src, dst, fmt.Errorf("engineer side: %v", terr))
		return
	}
	ec := gonet.NewUDPConn(&wq, ep)
	go func() {
		defer t.flowDone()
		ctx, cancel := context.WithTimeout(context.Background(), m.opts.DialTimeout)
		tc, err := m.opts.Dial(ctx, "udp", target)
		cancel()
		if err != nil {
			ec.Close()
			m.refuseFlow(t, "udp", src, dst, fmt.Errorf("cannot reach %s: %w", target, err))
			return
		}
		if !t.hold(ec) {
			ec.Close()
			tc.Close()
			return
		}
		defer t.untrack(ec)
		if !t.hold(tc) {
			tc.Close()
			return
		}
		defer t.untrack(tc)
		f := &flow{proto: "udp", src: src, dst: dst, target: target, start: m.opts.Now()}
		m.Stats.FlowsOpened.Add(1)
		f.toTarget, f.fromTarget = relayUDP(ec, tc, m.udpIdle())
		m.endFlow(t, f)
	}()
}

func (m *Manager) udpIdle() time.Duration {
	if m.opts.UDPIdle > 0 {
		return m.opts.UDPIdle
	}
	return DefaultUDPIdle
}

// relayUDP copies datagrams both ways until either side fails or neither
// has sent for idle; it closes both.
func relayUDP(a, b net.Conn, idle time.Duration) (aToB, bToA int64) {
	var mu sync.Mutex
	last := time.Now()
	copyDgrams := func(dst, src net.Conn, n *int64) {
		buf := make([]byte, 64<<10)
		for {
			_ = src.SetReadDeadline(time.Now().Add(idle))
			k, err := src.Read(buf)
			if err != nil {
				var ne net.Error
				mu.Lock()
				quiet := time.Since(last) >= idle
				mu.Unlock()
				if errors.As(err, &ne) && ne.Timeout() && !quiet {
					continue // the other direction is still active
				}
				break
			}
			mu.Lock()
			last = time.Now()
			mu.Unlock()
			if _, err := dst.Write(buf[:k]); err != nil {
				break
			}
			*n += int64(k)
		}
		a.Close()
		b.Close()
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		copyDgrams(a, b, &bToA)
	}()
	copyDgrams(b, a, &aToB)
	wg.Wait()
	return aToB, bToA
}

// endFlow records a flow's 5-tuple summary: a structured log line (the
// agent's audit trail; no payload) and counters.
func (m *Manager) endFlow(t *tunnel, f *flow) {
	m.Stats.BytesToTarget.Add(f.toTarget)
	m.Stats.BytesFromTarget.Add(f.fromTarget)
	m.log.Info("ssc flow", "grant", t.grant, "proto", f.proto, "src", f.src, "dst", f.dst, "target", f.target,
		"bytes_to_target", f.toTarget, "bytes_from_target", f.fromTarget,
		"start", f.start.UTC().Format(time.RFC3339Nano), "end", m.opts.Now().UTC().Format(time.RFC3339Nano))
	if m.opts.OnFlow != nil {
		m.opts.OnFlow(FlowSummary{Grant: t.grant, Proto: f.proto, Src: f.src, Dst: f.dst, Target: f.target,
			BytesToTarget: f.toTarget, BytesFromTarget: f.fromTarget, Start: f.start, End: m.opts.Now()})
	}
}

// FlowSummary is the audit record of one ended SSC flow.
type FlowSummary struct {
	Grant, Proto                   string
	Src, Dst                       netip.AddrPort // engineer, virtual destination
	Target                         string         // machine-network host:port
	BytesToTarget, BytesFromTarget int64
	Start, End                     time.Time
}

// addFlow registers a flow goroutine with the tunnel (t.wg) unless the
// tunnel is closed or full; the caller calls t.wg.Done when it ends.
func (t *tunnel) addFlow() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || t.flows >= MaxFlowsPerTunnel {
		return false
	}
	t.flows++
	t.wg.Add(1)
	return true
}

func (t *tunnel) flowDone() {
	t.mu.Lock()
	t.flows--
	t.mu.Unlock()
	t.wg.Done()
}

// hold tracks a flow's connection so closing the tunnel closes it; flows
// are limited by addFlow, not by MaxConnsPerTunnel.
func (t *tunnel) hold(c net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.conns[c] = struct{}{}
	return true
}
