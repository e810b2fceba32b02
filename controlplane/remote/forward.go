package remote

import (
	"encoding/binary"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/gantry-iot/gantry/pkg/machinemodel"
	"github.com/gantry-iot/gantry/pkg/wg"
)

// Reasons the hub drops a Secure Service Connect packet (the reason label
// of gantry_ssc_dropped_packets_total).
const (
	DropMalformed   = "malformed"               // not a well-formed IPv4 packet
	DropOversized   = "oversized"               // larger than the tunnel MTU
	DropSpoofed     = "spoofed_source"          // source not the sending peer's address
	DropDestination = "destination_not_allowed" // outside the grant's (virtual) machine subnets
	DropPort        = "port_not_allowed"        // protocol/port not in the template's ssc_ports
	DropFragment    = "fragment"                // IP fragment while the template filters ports
	DropTunnelDown  = "tunnel_down"             // the grant's agent is not connected
)

var dropReasons = []string{DropMalformed, DropOversized, DropSpoofed, DropDestination, DropPort, DropFragment, DropTunnelDown}

// fwdBatch is the number of packets the forwarder hands WireGuard per read.
const fwdBatch = 16

// grantNet is the SSC routing state of one grant: machine subnets, the
// virtual subnets they map onto (same index), the port filter, and whether
// the grant's agent peer exists. Immutable once published in a fwdPolicy.
type grantNet struct {
	id      string
	machine []netip.Prefix
	virtual []netip.Prefix
	ports   []machinemodel.PortRule
	agentUp bool
}

func (g *grantNet) virtualContains(a netip.Addr) bool {
	for _, p := range g.virtual {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// fwdPolicy is an immutable snapshot the forwarder reads without locks:
// engineer address → its grant's routing state.
type fwdPolicy struct {
	engineers map[netip.Addr]*grantNet
}

// forwarder is the tun.Device between the hub's WireGuard device and its
// TCP/IP stack. Packets that neither come from nor go to the SSC pool pass
// to the stack unchanged (agents ↔ hub: VNC and data link). SSC packets
// are checked against the policy and, if allowed, handed back to
// WireGuard, whose cryptokey routing sends them to the grant's agent
// (virtual subnets are in its AllowedIPs) or to the engineer (its /32).
// Everything else is dropped and counted per reason; the first drop of
// each reason is logged.
type forwarder struct {
	inner     tun.Device
	sscPrefix netip.Prefix
	policy    atomic.Pointer[fwdPolicy]
	log       *slog.Logger

	fromInner chan []byte // packets the stack sent, for WireGuard
	inject    chan []byte // SSC packets to route back through WireGuard
	done      chan struct{}
	closeOnce sync.Once
	readers   sync.WaitGroup
	bufs      sync.Pool

	flows flowBook // per-engineer flow summaries for the audit log

	dropped   *prometheus.CounterVec
	forwarded prometheus.Counter
	counts    map[string]*atomic.Int64 // by reason; keys fixed at creation
	logged    sync.Map                 // reason → struct{}
}

func newForwarder(inner tun.Device, sscPrefix netip.Prefix, reg prometheus.Registerer, log *slog.Logger) *forwarder {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := &forwarder{inner: inner, sscPrefix: sscPrefix, log: log,
		fromInner: make(chan []byte, fwdBatch*4), inject: make(chan []byte, 1024), done: make(chan struct{}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gantry_ssc_dropped_packets_total",
			Help: "Secure Service Connect packets the hub dropped, by reason."}, []string{"reason"}),
		forwarded: prometheus.NewCounter(prometheus.CounterOpts{Name: "gantry_ssc_forwarded_packets_total",
			Help: "Secure Service Connect packets the hub forwarded between engineers and agents."}),
	}
	f.bufs.New = func() any { b := make([]byte, 0, wg.MTU+64); return &b }
	f.counts = map[string]*atomic.Int64{}
	for _, r := range dropReasons {
		f.dropped.WithLabelValues(r) // export zeros
		f.counts[r] = &atomic.Int64{}
	}
	if reg != nil {
		reg.MustRegister(f.dropped, f.forwarded)
	}
	f.policy.Store(&fwdPolicy{})
	f.readers.Add(1)
	go f.readInner()
	return f
}

// droppedCount returns the number of drops for a reason.
func (f *forwarder) droppedCount(reason string) int64 {
	if c := f.counts[reason]; c != nil {
		return c.Load()
	}
	return 0
}

func (f *forwarder) readInner() {
	defer f.readers.Done()
	bufs := [][]byte{make([]byte, wg.MTU+64)}
	sizes := []int{0}
	for {
		n, err := f.inner.Read(bufs, sizes, 0)
		if err != nil {
			return
		}
		for i := range n {
			p := f.get(sizes[i])
			copy(p, bufs[i][:sizes[i]])
			select {
			case f.fromInner <- p:
			case <-f.done:
				return
			}
		}
	}
}

func (f *forwarder) get(n int) []byte {
	bp := f.bufs.Get().(*[]byte)
	if cap(*bp) < n {
		return make([]byte, n)
	}
	return (*bp)[:n]
}

func (f *forwarder) put(b []byte) {
	if cap(b) >= wg.MTU+64 {
		b = b[:0]
		f.bufs.Put(&b)
	}
}

// Read hands WireGuard the stack's packets and the SSC packets to route.
func (f *forwarder) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	var p []byte
	select {
	case p = <-f.inject:
	case p = <-f.fromInner:
	case <-f.done:
		return 0, os.ErrClosed
	}
	n := 0
	for {
		sizes[n] = copy(bufs[n][offset:], p)
		f.put(p)
		if n++; n == len(bufs) {
			return n, nil
		}
		select {
		case p = <-f.inject:
		case p = <-f.fromInner:
		default:
			return n, nil
		}
	}
}

// Write takes packets WireGuard decrypted.
func (f *forwarder) Write(bufs [][]byte, offset int) (int, error) {
	var toStack [][]byte
	for _, b := range bufs {
		p := b[offset:]
		switch verdict, reason := f.check(p); verdict {
		case verdictStack:
			toStack = append(toStack, b)
		case verdictForward:
			q := f.get(len(p))
			copy(q, p)
			select {
			case f.inject <- q:
				f.forwarded.Inc()
				f.flows.account(p, f.sscPrefix, time.Now())
			case <-f.done:
				return 0, os.ErrClosed
			}
		default:
			f.drop(reason, p)
		}
	}
	if len(toStack) > 0 {
		if _, err := f.inner.Write(toStack, offset); err != nil {
			return 0, err
		}
	}
	return len(bufs), nil
}

func (f *forwarder) drop(reason string, p []byte) {
	f.dropped.WithLabelValues(reason).Inc()
	f.counts[reason].Add(1)
	if _, seen := f.logged.LoadOrStore(reason, struct{}{}); seen {
		return
	}
	// Once per reason: a misbehaving client must not flood the log.
	attrs := []any{"reason", reason, "bytes", len(p)}
	if len(p) >= 20 {
		src, _ := netip.AddrFromSlice(p[12:16])
		dst, _ := netip.AddrFromSlice(p[16:20])
		attrs = append(attrs, "src", src, "dst", dst, "protocol", p[9])
	}
	f.log.Warn("ssc packet dropped (further drops for this reason are only counted in gantry_ssc_dropped_packets_total)", attrs...)
}

type verdict int

const (
	verdictDrop verdict = iota
	verdictStack
	verdictForward
)

// check decides a packet's fate. It reads only the immutable policy
// snapshot, so it runs concurrently for every peer without locks.
func (f *forwarder) check(p []byte) (verdict, string) {
	if len(p) == 0 || p[0]>>4 != 4 {
		if len(p) > 0 && p[0]>>4 == 6 {
			return verdictStack, "" // the stack has no IPv6 address and drops it
		}
		return verdictDrop, DropMalformed
	}
	if len(p) < 20 {
		return verdictDrop, DropMalformed
	}
	ihl := int(p[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(p[2:4]))
	if ihl < 20 || ihl > len(p) || total != len(p) {
		return verdictDrop, DropMalformed
	}
	src := netip.AddrFrom4([4]byte(p[12:16]))
	dst := netip.AddrFrom4([4]byte(p[16:20]))
	fromEngineer, toEngineer := f.sscPrefix.Contains(src), f.sscPrefix.Contains(dst)
	if !fromEngineer && !toEngineer {
		return verdictStack, "" // agents ↔ hub, as without SSC
	}
	if len(p) > wg.MTU {
		return verdictDrop, DropOversized
	}
	if !headerChecksumOK(p[:ihl]) {
		return verdictDrop, DropMalformed
	}
	pol := f.policy.Load()
	var g *grantNet
	var port uint16
	proto := p[9]
	l4 := p[ihl:]
	fragment := binary.BigEndian.Uint16(p[6:8])&0x3fff != 0 // MF or an offset
	if fromEngineer {
		if g = pol.engineers[src]; g == nil {
			return verdictDrop, DropSpoofed
		}
		if !g.virtualContains(dst) {
			return verdictDrop, DropDestination
		}
		if (proto == machinemodel.ProtoTCP || proto == machinemodel.ProtoUDP) && len(l4) >= 4 {
			port = binary.BigEndian.Uint16(l4[2:4])
		}
	} else {
		if g = pol.engineers[dst]; g == nil {
			return verdictDrop, DropDestination
		}
		if !g.virtualContains(src) {
			return verdictDrop, DropSpoofed
		}
		if (proto == machinemodel.ProtoTCP || proto == machinemodel.ProtoUDP) && len(l4) >= 4 {
			port = binary.BigEndian.Uint16(l4[0:2])
		}
	}
	if len(g.ports) > 0 {
		if fragment {
			return verdictDrop, DropFragment
		}
		if (proto == machinemodel.ProtoTCP || proto == machinemodel.ProtoUDP) && len(l4) < 4 {
			return verdictDrop, DropMalformed
		}
		if !machinemodel.PortsAllow(g.ports, proto, port) {
			return verdictDrop, DropPort
		}
	}
	if !g.agentUp {
		return verdictDrop, DropTunnelDown
	}
	return verdictForward, ""
}

// headerChecksumOK verifies an IPv4 header's checksum (the ones'
// complement sum over the header, checksum included, is all ones).
func headerChecksumOK(h []byte) bool {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(h[i])<<8 | uint32(h[i+1])
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return sum == 0xffff
}

func (f *forwarder) File() *os.File           { return nil }
func (f *forwarder) MTU() (int, error)        { return f.inner.MTU() }
func (f *forwarder) Name() (string, error)    { return f.inner.Name() }
func (f *forwarder) Events() <-chan tun.Event { return f.inner.Events() }
func (f *forwarder) BatchSize() int           { return fwdBatch }

func (f *forwarder) Close() error {
	var err error
	f.closeOnce.Do(func() {
		close(f.done)
		err = f.inner.Close()
		f.readers.Wait()
	})
	return err
}
