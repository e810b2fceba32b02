package authz

import (
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"slices"
	"testing"
	"time"
)

// benchWorld is the benchmark data set: 100 tenants (50 operators with 10
// facilities × 10 assets each, 50 providers with 5 orgs × 4 customers × 5
// machines), 10,000 users, 100,000 scoped assignments, and resources of
// operator assets shared with a provider.
type benchWorld struct {
	principals []Principal
	users      []string
	resources  []Resource
}

func newBenchWorld(seed uint64) benchWorld {
	rng := rand.New(rand.NewPCG(seed, 1))
	var w benchWorld
	opRoles := []RoleID{MachineOperator, WorkshopManager, OperatorInternalCases, MaintenanceEngineer}
	spRoles := []RoleID{FirstLevelSupport, ServiceTechnician, MasterDataManager, CustomerDataManager}
	for t := 0; t < 100; t++ {
		tenant := fmt.Sprintf("T%03d", t)
		operator := t%2 == 0
		for u := 0; u < 100; u++ {
			p := Principal{UserID: fmt.Sprintf("%s-U%03d", tenant, u), Tenant: tenant, TenantRoles: []TenantRole{OperatorInternalService}}
			for a := 0; a < 10; a++ {
				var as Assignment
				if operator {
					p.TenantKind = KindOperator
					as.Role = opRoles[rng.IntN(len(opRoles))]
					switch rng.IntN(3) {
					case 0:
						as.Scope = Scope{ScopeTenant, tenant}
					case 1:
						as.Scope = Scope{ScopeFacility, fmt.Sprintf("%s-F%d", tenant, rng.IntN(10))}
					default:
						as.Scope = Scope{ScopeAsset, fmt.Sprintf("%s-A%d", tenant, rng.IntN(100))}
					}
				} else {
					p.TenantKind = KindServiceProvider
					as.Role = spRoles[rng.IntN(len(spRoles))]
					switch rng.IntN(4) {
					case 0:
						as.Scope = Scope{ScopeTenant, tenant}
					case 1:
						as.Scope = Scope{ScopeServiceOrg, fmt.Sprintf("%s-SO%d", tenant, rng.IntN(5))}
					case 2:
						as.Scope = Scope{ScopeCustomer, fmt.Sprintf("%s-C%d", tenant, rng.IntN(20))}
					default:
						as.Scope = Scope{ScopeCustomerMachine, fmt.Sprintf("%s-M%d", tenant, rng.IntN(100))}
					}
				}
				p.Assignments = append(p.Assignments, as)
			}
			w.principals = append(w.principals, p)
			w.users = append(w.users, p.UserID)
		}
	}
	for i := 0; i < 10000; i++ {
		ot := fmt.Sprintf("T%03d", 2*rng.IntN(50))
		pt := fmt.Sprintf("T%03d", 2*rng.IntN(50)+1)
		a := rng.IntN(100)
		m := rng.IntN(100)
		w.resources = append(w.resources, Resource{
			Owner: Location{Tenant: ot, Chain: []Scope{{ScopeFacility, fmt.Sprintf("%s-F%d", ot, a/10)}, {ScopeAsset, fmt.Sprintf("%s-A%d", ot, a)}}},
			Shared: []Location{{Tenant: pt, Chain: []Scope{{ScopeServiceOrg, fmt.Sprintf("%s-SO%d", pt, m/20)}, {ScopeCustomer, fmt.Sprintf("%s-C%d", pt, m/5)},
				{ScopeCustomerMachine, fmt.Sprintf("%s-M%d", pt, m)}}}},
		})
	}
	return w
}

// BenchmarkDecide measures one decision for a random user and resource,
// against a baseline that only looks the principal up.
func BenchmarkDecide(b *testing.B) {
	w := newBenchWorld(1)
	e := NewEngine(w.principals)
	b.Run("baseline-lookup", func(b *testing.B) {
		b.ReportAllocs()
		n := 0
		for i := 0; b.Loop(); i++ {
			if _, ok := e.byUser[w.users[i%len(w.users)]]; ok {
				n++
			}
		}
		_ = n
	})
	b.Run("decide", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			e.Decide(w.users[(i*7919)%len(w.users)], ServiceCaseManagement, Read, w.resources[i%len(w.resources)])
		}
	})
}

// TestDecideLatency reports load time, memory and latency percentiles of
// the engine at the size. Run with GANTRY_BENCH=1 (make bench).
func TestDecideLatency(t *testing.T) {
	if os.Getenv("GANTRY_BENCH") == "" {
		t.Skip("set GANTRY_BENCH=1 to measure decision latency (part of make bench)")
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	w := newBenchWorld(1)
	e := NewEngine(w.principals)
	load := time.Since(start)
	runtime.GC()
	runtime.ReadMemStats(&after)
	n := 0
	for _, p := range w.principals {
		n += len(p.Assignments)
	}
	const samples = 1_000_000
	lat := make([]time.Duration, samples)
	base := make([]time.Duration, samples)
	allowed := 0
	for i := 0; i < samples; i++ {
		u, r := w.users[(i*7919)%len(w.users)], w.resources[i%len(w.resources)]
		t0 := time.Now()
		_ = e.byUser[u]
		base[i] = time.Since(t0)
		t0 = time.Now()
		d := e.Decide(u, ServiceCaseManagement, Read, r)
		lat[i] = time.Since(t0)
		if d.Allowed {
			allowed++
		}
	}
	slices.Sort(lat)
	slices.Sort(base)
	pct := func(s []time.Duration, p float64) time.Duration { return s[int(float64(len(s)-1)*p)] }
	allocs := testing.AllocsPerRun(10000, func() {
		e.Decide(w.users[42], ServiceCaseManagement, Read, w.resources[7])
	})
	t.Logf("data: %d tenants, %d users, %d assignments, %d resources; %d of %d sampled decisions allowed",
		100, e.Len(), n, len(w.resources), allowed, samples)
	t.Logf("load (generate + index): %v; heap after load: %.1f MB (includes the generated resources)", load, float64(after.HeapAlloc-before.HeapAlloc)/1e6)
	t.Logf("Decide: p50 %v  p99 %v  p99.9 %v  max %v; allocs/decision %.2f", pct(lat, .5), pct(lat, .99), pct(lat, .999), lat[len(lat)-1], allocs)
	t.Logf("baseline (principal lookup only): p50 %v  p99 %v  p99.9 %v", pct(base, .5), pct(base, .99), pct(base, .999))
	t.Logf("ratio Decide/baseline: p50 %.1fx  p99 %.1fx", float64(pct(lat, .5))/float64(pct(base, .5)), float64(pct(lat, .99))/float64(pct(base, .99)))
	if p99 := pct(lat, .99); p99 > 20*time.Microsecond {
		t.Errorf("p99 %v exceeds the 20 µs goal", p99)
	}
}
