package tunnel

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/gantry-iot/gantry/pkg/machinemodel"
)

// pingTimeout bounds the wait for a machine's echo reply.
const pingTimeout = 2 * time.Second

// forwardICMP relays an engineer's ICMP echo request to the machine
// network: the agent pings the translated address itself — through an
// unprivileged ping socket where net.ipv4.ping_group_range allows, else a
// raw socket (root) — and answers the engineer from the virtual address
// with the original identifier, sequence and data. Other ICMP is
// dropped. It runs on the stack's packet path, so the ping itself runs in
// a goroutine. The stack does not answer echo requests to addresses it
// only routes (promiscuous), so a reply means the machine answered.
func (m *Manager) forwardICMP(t *tunnel, _ stack.TransportEndpointID, pkt *stack.PacketBuffer) bool {
	v := stack.PayloadSince(pkt.NetworkHeader())
	p := append([]byte(nil), v.AsSlice()...)
	v.Release()
	if len(p) < 20 {
		return true
	}
	ihl := int(p[0]&0x0f) * 4
	if ihl < 20 || len(p) < ihl+8 || p[ihl] != byte(ipv4.ICMPTypeEcho) {
		return true
	}
	src := netip.AddrFrom4([4]byte(p[12:16]))
	dst := netip.AddrFrom4([4]byte(p[16:20]))
	id, seq := binary.BigEndian.Uint16(p[ihl+4:]), binary.BigEndian.Uint16(p[ihl+6:])
	data := p[ihl+8:]
	from, to := netip.AddrPortFrom(src, 0), netip.AddrPortFrom(dst, 0)
	if !t.ssc.clients.Contains(src) {
		m.refuseFlow(t, "icmp", from, to, errors.New("source is not an engineer address"))
		return true
	}
	host, ok := t.ssc.translate(dst)
	if !ok {
		m.refuseFlow(t, "icmp", from, to, errors.New("destination is outside the grant's subnets"))
		return true
	}
	if !machinemodel.PortsAllow(t.ssc.ports, machinemodel.ProtoICMP, 0) {
		m.refuseFlow(t, "icmp", from, to, errors.New("icmp is not allowed by the template"))
		return true
	}
	if m.opts.Consent != nil {
		if err := m.opts.Consent(); err != nil {
			m.refuseFlow(t, "icmp", from, to, err)
			return true
		}
	}
	if !t.addFlow() {
		m.refuseFlow(t, "icmp", from, to, errors.New("too many flows through this tunnel"))
		return true
	}
	go func() {
		defer t.flowDone()
		start := m.opts.Now()
		if err := ping(host, seq, data); err != nil {
			m.refuseFlow(t, "icmp", from, to, err)
			return
		}
		if err := t.iface.WritePacket(echoReply(dst, src, id, seq, data)); err != nil {
			return
		}
		m.Stats.FlowsOpened.Add(1)
		m.endFlow(t, &flow{proto: "icmp", src: from, dst: to, target: host.String(), start: start, toTarget: int64(len(data)), fromTarget: int64(len(data))})
	}()
	return true
}

// ping sends one echo request to host and waits for its reply.
func ping(host netip.Addr, seq uint16, data []byte) error {
	network, raw := "udp4", false
	c, err := icmp.ListenPacket(network, "0.0.0.0")
	if err != nil {
		network, raw = "ip4:icmp", true
		if c, err = icmp.ListenPacket(network, "0.0.0.0"); err != nil {
			return errors.New("the agent may not send ICMP: allow it with sysctl net.ipv4.ping_group_range or run it as root")
		}
	}
	defer c.Close()
	const ident = 0x6761 // raw sockets keep it; ping sockets set their own
	b, err := (&icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: ident, Seq: int(seq), Data: data}}).Marshal(nil)
	if err != nil {
		return err
	}
	var to net.Addr = &net.UDPAddr{IP: host.AsSlice()}
	if raw {
		to = &net.IPAddr{IP: host.AsSlice()}
	}
	if _, err := c.WriteTo(b, to); err != nil {
		return err
	}
	_ = c.SetReadDeadline(time.Now().Add(pingTimeout))
	buf := make([]byte, 1500)
	for {
		n, peer, err := c.ReadFrom(buf)
		if err != nil {
			return errors.New("no echo reply from " + host.String())
		}
		msg, err := icmp.ParseMessage(1, buf[:n])
		if err != nil || msg.Type != ipv4.ICMPTypeEchoReply {
			continue
		}
		e, ok := msg.Body.(*icmp.Echo)
		if !ok || e.Seq != int(seq) || (raw && e.ID != ident) {
			continue
		}
		if pa, ok := netip.AddrFromSlice(addrIP(peer)); ok && pa.Unmap() == host {
			return nil
		}
	}
}

func addrIP(a net.Addr) net.IP {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.IP
	case *net.IPAddr:
		return a.IP
	}
	return nil
}

// echoReply builds an IPv4 ICMP echo reply from src to dst.
func echoReply(src, dst netip.Addr, id, seq uint16, data []byte) []byte {
	b, _ := (&icmp.Message{Type: ipv4.ICMPTypeEchoReply, Body: &icmp.Echo{ID: int(id), Seq: int(seq), Data: data}}).Marshal(nil)
	p := make([]byte, header.IPv4MinimumSize+len(b))
	h := header.IPv4(p)
	h.Encode(&header.IPv4Fields{TotalLength: uint16(len(p)), TTL: 64, Protocol: uint8(header.ICMPv4ProtocolNumber),
		SrcAddr: tcpipAddr(src), DstAddr: tcpipAddr(dst)})
	h.SetChecksum(^h.CalculateChecksum())
	copy(p[header.IPv4MinimumSize:], b)
	return p
}
