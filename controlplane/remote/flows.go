package remote

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gantry-iot/gantry/pkg/machinemodel"
)

// MaxFlowsPerEngineer bounds the flows the hub tracks for one SSC config;
// further flows are summed into one "other" entry, so a port scan cannot
// grow the hub's memory.
const MaxFlowsPerEngineer = 256

// Flow is one engineer flow as the hub saw it: protocol, the engineer's
// port, and the (virtual) machine address and port, with bytes each way.
type Flow struct {
	Proto      uint8
	SrcPort    uint16 // the engineer's
	Dst        netip.Addr
	DstPort    uint16
	ToMachine  int64
	ToEngineer int64
	First      time.Time
	Last       time.Time
}

func (f Flow) String() string {
	p := map[uint8]string{machinemodel.ProtoTCP: "tcp", machinemodel.ProtoUDP: "udp", machinemodel.ProtoICMP: "icmp"}[f.Proto]
	if p == "" {
		p = fmt.Sprintf("proto %d", f.Proto)
	}
	if f.Proto == machinemodel.ProtoICMP {
		return fmt.Sprintf("%s → %s %d/%d bytes", p, f.Dst, f.ToMachine, f.ToEngineer)
	}
	return fmt.Sprintf("%s :%d → %s %d/%d bytes", p, f.SrcPort, netip.AddrPortFrom(f.Dst, f.DstPort), f.ToMachine, f.ToEngineer)
}

type flowKey struct {
	proto            uint8
	srcPort, dstPort uint16
	dst              netip.Addr
}

// flowTable holds one engineer's flows. Its mutex is taken once per
// forwarded packet of that engineer only.
type flowTable struct {
	mu     sync.Mutex
	flows  map[flowKey]*Flow
	other  Flow // flows beyond MaxFlowsPerEngineer
	others int
}

// flowBook maps engineer addresses to their flow tables.
type flowBook struct {
	mu     sync.RWMutex
	tables map[netip.Addr]*flowTable
}

// account adds one forwarded packet p (a checked IPv4 packet) to its
// engineer's flow.
func (b *flowBook) account(p []byte, sscPrefix netip.Prefix, now time.Time) {
	ihl := int(p[0]&0x0f) * 4
	src := netip.AddrFrom4([4]byte(p[12:16]))
	dst := netip.AddrFrom4([4]byte(p[16:20]))
	k := flowKey{proto: p[9]}
	fromEngineer := sscPrefix.Contains(src)
	engineer := src
	if !fromEngineer {
		engineer, dst = dst, src
	}
	k.dst = dst
	if l4 := p[ihl:]; (k.proto == machinemodel.ProtoTCP || k.proto == machinemodel.ProtoUDP) && len(l4) >= 4 {
		a, z := binary.BigEndian.Uint16(l4[0:2]), binary.BigEndian.Uint16(l4[2:4])
		if fromEngineer {
			k.srcPort, k.dstPort = a, z
		} else {
			k.srcPort, k.dstPort = z, a
		}
	}
	b.mu.RLock()
	t := b.tables[engineer]
	b.mu.RUnlock()
	if t == nil {
		b.mu.Lock()
		if t = b.tables[engineer]; t == nil {
			if b.tables == nil {
				b.tables = map[netip.Addr]*flowTable{}
			}
			t = &flowTable{flows: map[flowKey]*Flow{}}
			b.tables[engineer] = t
		}
		b.mu.Unlock()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.flows[k]
	if f == nil {
		if len(t.flows) >= MaxFlowsPerEngineer {
			f = &t.other
			t.others++
		} else {
			f = &Flow{Proto: k.proto, SrcPort: k.srcPort, Dst: k.dst, DstPort: k.dstPort, First: now}
			t.flows[k] = f
		}
	}
	if f.First.IsZero() {
		f.First = now
	}
	f.Last = now
	if fromEngineer {
		f.ToMachine += int64(len(p))
	} else {
		f.ToEngineer += int64(len(p))
	}
}

// take removes an engineer's flows and returns them, largest first, with
// the number of flows summed into other (whose bytes are in other).
func (b *flowBook) take(engineer netip.Addr) (flows []Flow, other Flow, others int) {
	b.mu.Lock()
	t := b.tables[engineer]
	delete(b.tables, engineer)
	b.mu.Unlock()
	if t == nil {
		return nil, Flow{}, 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, f := range t.flows {
		flows = append(flows, *f)
	}
	slices.SortFunc(flows, func(a, b Flow) int {
		return cmp.Compare(b.ToMachine+b.ToEngineer, a.ToMachine+a.ToEngineer)
	})
	return flows, t.other, t.others
}

// SSCSession is the audit summary of one SSC config when it ends.
type SSCSession struct {
	GrantID, UserID  string
	CaseID, TenantID string // the audit record's target and tenant
	Address          netip.Addr
	Issued, Ended    time.Time
	Flows            []Flow // largest first
	OtherFlows       int    // flows beyond MaxFlowsPerEngineer, summed in Other
	Other            Flow
}

// Bytes returns the bytes to the machine and to the engineer.
func (s SSCSession) Bytes() (toMachine, toEngineer int64) {
	for _, f := range append(s.Flows, s.Other) {
		toMachine += f.ToMachine
		toEngineer += f.ToEngineer
	}
	return toMachine, toEngineer
}

// Detail renders the summary for the audit log: totals and the largest
// flows as 5-tuple summaries (never payloads).
func (s SSCSession) Detail(maxFlows int) string {
	up, down := s.Bytes()
	var b strings.Builder
	fmt.Fprintf(&b, "ssc %s from %s to %s, %d bytes to the machine, %d bytes to the engineer, %d flows",
		s.Address, s.Issued.UTC().Format(time.RFC3339), s.Ended.UTC().Format(time.RFC3339), up, down, len(s.Flows)+s.OtherFlows)
	for i, f := range s.Flows {
		if i == maxFlows {
			fmt.Fprintf(&b, "; +%d more", len(s.Flows)-maxFlows+s.OtherFlows)
			return b.String()
		}
		fmt.Fprintf(&b, "; %s", f)
	}
	if s.OtherFlows > 0 {
		fmt.Fprintf(&b, "; +%d more (%d/%d bytes)", s.OtherFlows, s.Other.ToMachine, s.Other.ToEngineer)
	}
	return b.String()
}
