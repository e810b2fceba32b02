package tunnel

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/gantry-iot/gantry/pkg/machinemodel"
	"github.com/gantry-iot/gantry/pkg/tunnelproto"
)

// Names and numbers the kernel-TUN mode owns on the device. Slot i (one
// per SSC grant, 0..MaxTunnels-1) has the interface and the nftables
// table (family ip) "gantry-ssc<i>", routing table ktunRouteTable+i, ip
// rules of preference ktunRulePref pointing there, and connection mark
// ktunMark+i. Agent start removes whatever matches these (a crashed run's
// leftovers).
const (
	ktunPrefix     = "gantry-ssc"
	ktunRouteTable = 0x6761 // "ga"
	ktunRulePref   = 0x6761
	ktunMark       = 0x67610001
)

// ipsDstNAT is the conntrack status bit of a DNATed connection
// (IPS_DST_NAT).
const ipsDstNAT = 1 << 5

// kernelPlan is everything one SSC grant installs in the kernel: derived
// from the validated TunnelUp and the slot, pure (unit-tested without
// privileges).
type kernelPlan struct {
	slot    int
	name    string // interface and nftables table
	mark    uint32 // conntrack and packet mark of the grant's flows
	table   int    // routing table: default route into the interface
	addr    netip.Addr
	hub     netip.Addr
	subnets []subnetMap
	clients netip.Prefix
	ports   []machinemodel.PortRule
}

func newKernelPlan(s spec, slot int) (kernelPlan, error) {
	p := kernelPlan{slot: slot, name: fmt.Sprintf("%s%d", ktunPrefix, slot), mark: ktunMark + uint32(slot),
		table: ktunRouteTable + slot, addr: s.addr, hub: s.hubAddr, subnets: s.ssc.subnets, clients: s.ssc.clients, ports: s.ssc.ports}
	own := []netip.Prefix{netip.PrefixFrom(s.addr, 32), netip.PrefixFrom(s.hubAddr, 32)}
	for i, sn := range s.ssc.subnets {
		for _, o := range own {
			if sn.virtual.Overlaps(o) || sn.machine.Overlaps(o) {
				return p, fmt.Errorf("tunnel_up: ssc_subnets[%d] %s → %s contains the tunnel address %s; the control plane's address pools overlap the machine network — change the template's subnet or the hub's pools", i, sn.machine, sn.virtual, o.Addr())
			}
		}
		if sn.virtual.Overlaps(s.ssc.clients) || sn.machine.Overlaps(s.ssc.clients) {
			return p, fmt.Errorf("tunnel_up: ssc_subnets[%d] %s → %s overlaps the engineer addresses %s; replies could not be routed back", i, sn.machine, sn.virtual, s.ssc.clients)
		}
		for j, o := range s.ssc.subnets[:i] {
			if sn.machine.Overlaps(o.machine) {
				return p, fmt.Errorf("tunnel_up: ssc_subnets[%d]: machine subnet %s overlaps ssc_subnets[%d] %s", i, sn.machine, j, o.machine)
			}
		}
	}
	if s.ssc.clients.Contains(s.addr) {
		return p, fmt.Errorf("tunnel_up: the tunnel address %s is inside the engineer addresses %s", s.addr, s.ssc.clients)
	}
	return p, nil
}

// nftTable is the plan's nftables table.
func (p kernelPlan) nftTable() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyIPv4, Name: p.name}
}

// ruleset builds the grant's table:
//
//	chain mark     (filter, prerouting, mangle -150): new flows from the
//	               interface get the grant's ct mark; every packet of a
//	               marked flow gets it as packet mark, so the ip rule
//	               "fwmark → table" routes replies back into this grant's
//	               interface (all grants share the engineer pool; the
//	               table holds only the engineer pool and the hub, so
//	               packets towards the machines fall through to main).
//	chain dnat     (nat, prerouting, -100): per subnet, iifname X ip daddr
//	               VIRTUAL dnat to ip daddr & HOSTMASK | MACHINE (1:1).
//	chain snat     (nat, postrouting, 100): ct mark M oifname != X
//	               masquerade — machines answer the agent's LAN address.
//	chain forward  (filter, forward, 0): TCP MSS clamped to the route's
//	               MTU both ways; from X only engineer sources,
//	               DNATed flows (no direct machine addresses), the
//	               subnets and the template's ports; then drop; into X only
//	               established/related.
//	chain input    (filter, input, 0): from X only the hub to the
//	               GANTRY-TUNNEL/1 port, and established/related.
func (p kernelPlan) ruleset() (*nftables.Table, []*nftables.Chain, []*nftables.Rule) {
	t := p.nftTable()
	accept := nftables.ChainPolicyAccept
	mk := func(name string, typ nftables.ChainType, hook *nftables.ChainHook, prio *nftables.ChainPriority) *nftables.Chain {
		return &nftables.Chain{Name: name, Table: t, Type: typ, Hooknum: hook, Priority: prio, Policy: &accept}
	}
	cMark := mk("mark", nftables.ChainTypeFilter, nftables.ChainHookPrerouting, nftables.ChainPriorityMangle)
	cDNAT := mk("dnat", nftables.ChainTypeNAT, nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest)
	cSNAT := mk("snat", nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource)
	cFwd := mk("forward", nftables.ChainTypeFilter, nftables.ChainHookForward, nftables.ChainPriorityFilter)
	cIn := mk("input", nftables.ChainTypeFilter, nftables.ChainHookInput, nftables.ChainPriorityFilter)
	chains := []*nftables.Chain{cMark, cDNAT, cSNAT, cFwd, cIn}

	var rules []*nftables.Rule
	add := func(c *nftables.Chain, e ...[]expr.Any) {
		var all []expr.Any
		for _, x := range e {
			all = append(all, x...)
		}
		rules = append(rules, &nftables.Rule{Table: t, Chain: c, Exprs: all})
	}
	mark := binaryutil.NativeEndian.PutUint32(p.mark)

	// mark
	add(cMark, iifname(p.name), ctState(expr.CtStateBitNEW), []expr.Any{
		&expr.Immediate{Register: 1, Data: mark},
		&expr.Ct{Key: expr.CtKeyMARK, Register: 1, SourceRegister: true},
	})
	add(cMark, ctMark(mark), []expr.Any{
		&expr.Immediate{Register: 1, Data: mark},
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1, SourceRegister: true},
	})
	// dnat: the 1:1 netmap, host bits kept.
	for _, sn := range p.subnets {
		host := hostMask(sn.virtual.Bits())
		add(cDNAT, iifname(p.name), ipPrefix(16, sn.virtual), []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: host[:], Xor: sn.machine.Addr().AsSlice()},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1},
		})
	}
	// snat
	add(cSNAT, ctMark(mark), oifname(p.name, false), []expr.Any{&expr.Masq{}})
	// forward: first clamp the MSS of SYNs both ways to the route's MTU
	// (the TUN's 1420 vs the LAN's 1500; the userspace router terminates
	// TCP, so there it comes for free), then filter.
	add(cFwd, iifname(p.name), clampMSS())
	add(cFwd, oifname(p.name, true), clampMSS())
	for _, sn := range p.subnets {
		base := [][]expr.Any{iifname(p.name), ipPrefix(12, p.clients), ctStatus(ipsDstNAT), ipPrefix(16, sn.machine)}
		if len(p.ports) == 0 {
			add(cFwd, append(base, verdict(expr.VerdictAccept))...)
			continue
		}
		for _, r := range p.ports {
			add(cFwd, append(base[:len(base):len(base)], portMatch(r), verdict(expr.VerdictAccept))...)
		}
	}
	add(cFwd, iifname(p.name), verdict(expr.VerdictDrop))
	add(cFwd, oifname(p.name, true), ctState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), verdict(expr.VerdictAccept))
	add(cFwd, oifname(p.name, true), verdict(expr.VerdictDrop))
	// input
	add(cIn, iifname(p.name), ctState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), verdict(expr.VerdictAccept))
	add(cIn, iifname(p.name), ipPrefix(12, netip.PrefixFrom(p.hub, 32)), l4proto(unix.IPPROTO_TCP), dport(tunnelproto.Port, tunnelproto.Port), verdict(expr.VerdictAccept))
	add(cIn, iifname(p.name), verdict(expr.VerdictDrop))
	return t, chains, rules
}

// gateTag marks the consent gate rule (rule user data).
const gateTag = "gantry-consent-gate"

// gateRule drops new flows from the interface (first in chain forward)
// while local consent is missing.
func (p kernelPlan) gateRule() (*nftables.Table, *nftables.Chain, *nftables.Rule) {
	t := p.nftTable()
	c := &nftables.Chain{Name: "forward", Table: t}
	var e []expr.Any
	e = append(e, iifname(p.name)...)
	e = append(e, ctState(expr.CtStateBitNEW)...)
	e = append(e, verdict(expr.VerdictDrop)...)
	return t, c, &nftables.Rule{Table: t, Chain: c, Exprs: e, UserData: []byte(gateTag)}
}

func ifnameBytes(n string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, n)
	return b
}

// iifname matches the input interface.
func iifname(n string) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifnameBytes(n)}}
}

// oifname matches (eq) or excludes (!eq) the output interface.
func oifname(n string, eq bool) []expr.Any {
	op := expr.CmpOpEq
	if !eq {
		op = expr.CmpOpNeq
	}
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1}, &expr.Cmp{Op: op, Register: 1, Data: ifnameBytes(n)}}
}

// ipPrefix matches the IPv4 address at offset (12 source, 16
// destination) against p.
func ipPrefix(offset uint32, p netip.Prefix) []expr.Any {
	e := []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4}}
	if p.Bits() < 32 {
		m := netMask(p.Bits())
		e = append(e, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: m[:], Xor: make([]byte, 4)})
	}
	return append(e, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Masked().Addr().AsSlice()})
}

func netMask(bits int) [4]byte {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], ^(^uint32(0) >> bits))
	if bits == 0 {
		b = [4]byte{}
	}
	return b
}

func hostMask(bits int) [4]byte {
	m := netMask(bits)
	return [4]byte{^m[0], ^m[1], ^m[2], ^m[3]}
}

func ctState(bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

func ctStatus(bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATUS, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

func ctMark(mark []byte) []expr.Any {
	return []expr.Any{&expr.Ct{Key: expr.CtKeyMARK, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: mark}}
}

func l4proto(p byte) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}}}
}

func dport(lo, hi uint16) []expr.Any {
	e := []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}}
	if lo == hi {
		return append(e, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(lo)})
	}
	return append(e, &expr.Range{Op: expr.CmpOpEq, Register: 1, FromData: binaryutil.BigEndian.PutUint16(lo), ToData: binaryutil.BigEndian.PutUint16(hi)})
}

// portMatch is one template port rule: tcp/udp with a port range, or
// icmp echo requests.
func portMatch(r machinemodel.PortRule) []expr.Any {
	switch r.Proto {
	case machinemodel.ProtoICMP:
		return append(l4proto(unix.IPPROTO_ICMP),
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{8}}) // echo-request
	default:
		return append(l4proto(r.Proto), dport(r.Lo, r.Hi)...)
	}
}

// clampMSS is "tcp flags syn / syn,rst tcp option maxseg size set rt
// mtu".
func clampMSS() []expr.Any {
	return append(l4proto(unix.IPPROTO_TCP),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x06}, Xor: []byte{0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x02}},
		&expr.Rt{Register: 1, Key: expr.RtTCPMSS},
		&expr.Exthdr{SourceRegister: 1, Type: 2, Offset: 2, Len: 2, Op: expr.ExthdrOpTcpopt})
}

func verdict(k expr.VerdictKind) []expr.Any { return []expr.Any{&expr.Verdict{Kind: k}} }
