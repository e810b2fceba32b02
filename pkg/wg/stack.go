package wg

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"

	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
)

// NIC is the ID of the only network interface of an Interface's stack.
const NIC tcpip.NICID = 1

// stackTUN is a tun.Device whose other side is a gVisor TCP/IP stack the
// package owns (unlike netstack.CreateNetTUN's, which is private), so
// callers can attach forwarders to it (the agent's SSC subnet router).
// Packets the stack sends are queued on out until WireGuard reads them;
// packets WireGuard writes are injected into the stack.
type stackTUN struct {
	ep     *channel.Endpoint
	stack  *stack.Stack
	events chan tun.Event
	out    chan *buffer.View
	mtu    int

	closeOnce sync.Once
	done      chan struct{}
	notify    *channel.NotificationHandle
}

func newStackTUN(addr netip.Addr, mtu int) (*stackTUN, error) {
	if !addr.Is4() {
		return nil, fmt.Errorf("wg: address %s is not IPv4", addr)
	}
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4},
		// No HandleLocal: nothing here talks to itself, and with it a
		// promiscuous stack (the agent's subnet router) takes every source
		// address for its own and drops the packet.
		HandleLocal: false,
	})
	sack := tcpip.TCPSACKEnabled(true)
	if err := s.SetTransportProtocolOption(tcp.ProtocolNumber, &sack); err != nil {
		return nil, fmt.Errorf("wg: enable TCP SACK: %v", err)
	}
	t := &stackTUN{ep: channel.New(1024, uint32(mtu), ""), stack: s, events: make(chan tun.Event, 4),
		out: make(chan *buffer.View, 256), mtu: mtu, done: make(chan struct{})}
	t.notify = t.ep.AddNotify(t)
	if err := s.CreateNIC(NIC, t.ep); err != nil {
		return nil, fmt.Errorf("wg: create NIC: %v", err)
	}
	pa := tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber, AddressWithPrefix: tcpip.AddrFromSlice(addr.AsSlice()).WithPrefix()}
	if err := s.AddProtocolAddress(NIC, pa, stack.AddressProperties{}); err != nil {
		return nil, fmt.Errorf("wg: add address %s: %v", addr, err)
	}
	s.AddRoute(tcpip.Route{Destination: header.IPv4EmptySubnet, NIC: NIC})
	t.events <- tun.EventUp
	return t, nil
}

func (t *stackTUN) Name() (string, error)    { return "gantry", nil }
func (t *stackTUN) File() *os.File           { return nil }
func (t *stackTUN) Events() <-chan tun.Event { return t.events }
func (t *stackTUN) MTU() (int, error)        { return t.mtu, nil }
func (t *stackTUN) BatchSize() int           { return 1 }

// Read returns the next packet the stack sent.
func (t *stackTUN) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	select {
	case v := <-t.out:
		n, err := v.Read(bufs[0][offset:])
		v.Release()
		if err != nil {
			return 0, err
		}
		sizes[0] = n
		return 1, nil
	case <-t.done:
		return 0, os.ErrClosed
	}
}

// Write injects packets WireGuard decrypted into the stack.
func (t *stackTUN) Write(bufs [][]byte, offset int) (int, error) {
	for _, b := range bufs {
		p := b[offset:]
		if len(p) == 0 {
			continue
		}
		if p[0]>>4 != 4 {
			return 0, syscall.EAFNOSUPPORT
		}
		pkb := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(p)})
		t.ep.InjectInbound(header.IPv4ProtocolNumber, pkb)
		pkb.DecRef()
	}
	return len(bufs), nil
}

// WriteNotify is called by the channel endpoint when the stack has sent a
// packet.
func (t *stackTUN) WriteNotify() {
	pkt := t.ep.Read()
	if pkt == nil {
		return
	}
	v := pkt.ToView()
	pkt.DecRef()
	select {
	case t.out <- v:
	case <-t.done:
		v.Release()
	}
}

// writeOut queues a packet for WireGuard as if the stack had sent it.
func (t *stackTUN) writeOut(p []byte) error {
	v := buffer.NewViewWithData(append([]byte(nil), p...))
	select {
	case t.out <- v:
		return nil
	case <-t.done:
		v.Release()
		return os.ErrClosed
	}
}

func (t *stackTUN) Close() error {
	t.closeOnce.Do(func() {
		close(t.done)
		t.ep.RemoveNotify(t.notify)
		t.stack.RemoveNIC(NIC)
		t.ep.Close()
		t.stack.Close()
		close(t.events)
	})
	return nil
}

func fullAddr(ap netip.AddrPort) tcpip.FullAddress {
	return tcpip.FullAddress{NIC: NIC, Addr: tcpip.AddrFromSlice(ap.Addr().Unmap().AsSlice()), Port: ap.Port()}
}

func (t *stackTUN) dialTCP(ctx context.Context, to netip.AddrPort) (net.Conn, error) {
	return gonet.DialContextTCP(ctx, t.stack, fullAddr(to), ipv4.ProtocolNumber)
}

func (t *stackTUN) listenTCP(at netip.AddrPort) (net.Listener, error) {
	return gonet.ListenTCP(t.stack, fullAddr(at), ipv4.ProtocolNumber)
}

func (t *stackTUN) dialUDP(from netip.AddrPort, to netip.AddrPort) (*gonet.UDPConn, error) {
	la, ra := fullAddr(from), fullAddr(to)
	return gonet.DialUDP(t.stack, &la, &ra, ipv4.ProtocolNumber)
}
