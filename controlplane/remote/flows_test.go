package remote

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/gantry-iot/gantry/pkg/machinemodel"
)

// TestFlowBook: forwarded packets are summed per engineer and 5-tuple in
// both directions; flows beyond the bound are summed into one entry; the
// audit detail lists the largest flows first and says how many more.
func TestFlowBook(t *testing.T) {
	pool := netip.MustParsePrefix("100.97.0.0/16")
	eng, other := netip.MustParseAddr("100.97.0.1"), netip.MustParseAddr("100.97.0.2")
	plc := netip.MustParseAddr("100.64.0.5")
	var b flowBook
	now := time.Now()
	b.account(packet(eng, plc, machinemodel.ProtoTCP, 40000, 502, 100), pool, now)
	b.account(packet(plc, eng, machinemodel.ProtoTCP, 502, 40000, 60), pool, now.Add(time.Second))
	b.account(packet(eng, plc, machinemodel.ProtoTCP, 40000, 502, 100), pool, now.Add(2*time.Second))
	b.account(packet(eng, plc, machinemodel.ProtoUDP, 5000, 161, 40), pool, now)
	b.account(packet(other, plc, machinemodel.ProtoUDP, 5000, 161, 40), pool, now)
	for i := range MaxFlowsPerEngineer + 10 {
		b.account(packet(eng, plc, machinemodel.ProtoTCP, uint16(1000+i), 102, 28), pool, now)
	}
	flows, rest, n := b.take(eng)
	if len(flows) != MaxFlowsPerEngineer || n != 12 || rest.ToMachine != 12*28 {
		t.Fatalf("%d flows, %d more summing %d bytes; want %d tracked and 12 more (336 bytes)", len(flows), n, rest.ToMachine, MaxFlowsPerEngineer)
	}
	top := flows[0]
	if top.Proto != machinemodel.ProtoTCP || top.SrcPort != 40000 || top.Dst != plc || top.DstPort != 502 || top.ToMachine != 200 || top.ToEngineer != 60 || !top.Last.Equal(now.Add(2*time.Second)) {
		t.Errorf("largest flow %+v", top)
	}
	if f, _, _ := b.take(eng); f != nil {
		t.Errorf("flows still held after take: %v", f)
	}
	if f, _, _ := b.take(other); len(f) != 1 || f[0].ToMachine != 40 {
		t.Errorf("other engineer's flows %v", f)
	}
	s := SSCSession{Address: eng, Issued: now, Ended: now.Add(time.Minute), Flows: flows, Other: rest, OtherFlows: n}
	d := s.Detail(2)
	want := "tcp :40000 → 100.64.0.5:502 200/60 bytes; udp :5000 → 100.64.0.5:161 40/0 bytes; +266 more"
	if !strings.Contains(d, want) || !strings.Contains(d, "268 flows") {
		t.Errorf("detail %q, want it to contain %q and 268 flows", d, want)
	}
}

// TestHubRefusesOverlappingPools: the engineers' SSC pool must not
// overlap the agents' tunnel network (an engineer could then pose as an
// agent's address).
func TestHubRefusesOverlappingPools(t *testing.T) {
	for _, c := range []struct{ tunnel, ssc string }{
		{"100.96.0.0/16", "100.96.128.0/17"},
		{"100.96.0.0/16", "100.96.0.0/12"},
	} {
		_, err := NewHub(HubConfig{Prefix: netip.MustParsePrefix(c.tunnel), SSCPrefix: netip.MustParsePrefix(c.ssc)})
		if err == nil || !strings.Contains(err.Error(), "overlaps") {
			t.Errorf("tunnel %s, SSC pool %s: %v", c.tunnel, c.ssc, err)
		}
	}
}
