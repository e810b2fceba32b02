package collector

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gantry-iot/gantry/pkg/machinemodel"
	"github.com/gantry-iot/gantry/testbed/opcuasim"
)

type sink struct {
	mu sync.Mutex
	s  []Sample
}

func (k *sink) add(s []Sample) { k.mu.Lock(); k.s = append(k.s, s...); k.mu.Unlock() }

func (k *sink) find(point string, pred func(Sample) bool) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, s := range k.s {
		if s.Point == point && pred(s) {
			return true
		}
	}
	return false
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not happen within %v", what, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startCNC starts a simulator with cfg plus a CNC profile "cnc1" and a TCP
// proxy in front of it. The simulator is not stopped at the end: closing
// gopcua's server while a client (re)connects races inside gopcua (v0.8,
// seen with -race); outages are made at the proxy instead.
func startCNC(t *testing.T, cfg opcuasim.Config) (*opcuasim.Sim, *proxy) {
	t.Helper()
	cfg.Profiles = []opcuasim.Profile{{Name: "cnc1", Kind: "cnc"}}
	sim, err := opcuasim.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := sim.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return sim, newProxy(t, strings.TrimPrefix(sim.Endpoint(), "opc.tcp://"))
}

func TestCollectFromSimulator(t *testing.T) {
	sim, px := startCNC(t, opcuasim.Config{Generated: 10, Interval: opcuasim.Duration(100 * time.Millisecond)})
	ns := sim.Namespace()
	tpl := machinemodel.OPCUA{EndpointURL: "opc.tcp://" + px.addr, SecurityMode: "None", DataPoints: []machinemodel.DataPoint{
		{NodeID: opcuasim.NodeID(ns, "cnc1", "Temperature"), Name: "temperature", SamplingIntervalMS: 100},
		{NodeID: opcuasim.NodeID(ns, "cnc1", "Running"), Name: "running", SamplingIntervalMS: 100},
		{NodeID: opcuasim.GeneratedNodeID(ns, 3), Name: "gen3", SamplingIntervalMS: 100, DeadbandType: "absolute", DeadbandValue: 1000},
		{NodeID: "ns=2;s=does.not.exist", Name: "missing"},
	}}
	var k sink
	c := runCollector(t, tpl, k.add, Options{})

	waitFor(t, 10*time.Second, "temperature values", func() bool { return k.find("temperature", func(Sample) bool { return true }) })
	if err := sim.Set(opcuasim.NodeID(ns, "cnc1", "Temperature"), 77.25); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Second, "the set value", func() bool { return k.find("temperature", func(s Sample) bool { return s.Value == 77.25 }) })
	// The large absolute deadband lets only the first gen3 value through.
	time.Sleep(500 * time.Millisecond)
	k.mu.Lock()
	n := 0
	for _, s := range k.s {
		if s.Point == "gen3" {
			n++
		}
	}
	k.mu.Unlock()
	if n != 1 {
		t.Errorf("gen3 passed the deadband %d times, want 1", n)
	}
	var missing string
	for _, st := range c.Statuses() {
		if st.Point == "missing" {
			missing = st.Status
		}
	}
	if !strings.Contains(missing, "refused") && !strings.Contains(missing, "bad value") {
		t.Errorf("missing node status %q", missing)
	}

	// Fault: the server becomes unreachable and comes back; values flow again.
	px.down()
	waitFor(t, 10*time.Second, "the collector noticing the outage", func() bool { return c.State() != "connected" })
	// Every point gets a bad sample, so consumers stop trusting held values.
	for _, p := range []string{"temperature", "running", "gen3", "missing"} {
		if !k.find(p, func(s Sample) bool { return s.Status == StatusLost }) {
			t.Errorf("no connection-lost sample for %s", p)
		}
	}
	px.up()
	if err := sim.Set(opcuasim.NodeID(ns, "cnc1", "Temperature"), 12.5); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "values after the outage", func() bool {
		return c.State() == "connected" && k.find("temperature", func(s Sample) bool { return s.Value == 12.5 })
	})
}

func TestNewRejectsBadTemplates(t *testing.T) {
	if _, err := New(machinemodel.OPCUA{EndpointURL: "http://x", SecurityMode: "None"}, nil, Options{}); err == nil {
		t.Errorf("bad endpoint accepted")
	}
	if _, err := New(machinemodel.OPCUA{EndpointURL: "opc.tcp://1.2.3.4:4840", SecurityMode: "SignAndEncrypt"}, nil, Options{}); err == nil || !strings.Contains(err.Error(), "client certificate") {
		t.Errorf("secured endpoint without a client certificate: %v", err)
	}
	if _, err := New(machinemodel.OPCUA{EndpointURL: "opc.tcp://1.2.3.4:4840", SecurityMode: "Sign"}, nil, Options{Security: Security{Identity: &Identity{}, Policy: "Basic128Rsa15"}}); err == nil || !strings.Contains(err.Error(), "want one of") {
		t.Errorf("deprecated security policy: %v", err)
	}
}

// proxy forwards TCP to target and can drop every connection and refuse
// new ones (down) until up, or swallow every byte while the connections
// stay open (frozen: a hung server).
type proxy struct {
	t      *testing.T
	addr   string
	target string
	mu     sync.Mutex
	l      net.Listener
	conns  []net.Conn
	frozen atomic.Bool
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{t: t, addr: l.Addr().String(), target: target}
	p.serve(l)
	t.Cleanup(p.down)
	return p
}

func (p *proxy) serve(l net.Listener) {
	p.mu.Lock()
	p.l = l
	p.mu.Unlock()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			go func() { p.copy(s, c); s.Close() }()
			go func() { p.copy(c, s); c.Close() }()
		}
	}()
}

// copy forwards src to dst, dropping what it reads while frozen.
func (p *proxy) copy(dst io.Writer, src io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.frozen.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *proxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.l != nil {
		p.l.Close()
		p.l = nil
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *proxy) up() {
	l, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatalf("proxy: listen again on %s: %v", p.addr, err)
	}
	p.serve(l)
}

// TestBatchLimits checks mqtt.batch as the collector applies it: no batch
// holds more than MaxBatch samples, and without a batch window every
// notification's samples go at once (more batches than a ticker allows).
func TestBatchLimits(t *testing.T) {
	sim, pts := startGenerated(t, 20)
	tpl := machinemodel.OPCUA{EndpointURL: sim.Endpoint(), SecurityMode: "None", DataPoints: pts}
	run := func(opts Options, d time.Duration) (sizes []int) {
		var mu sync.Mutex
		opts.Watchdog, opts.MaxBackoff = 5*time.Second, time.Second
		c, err := New(tpl, func(s []Sample) { mu.Lock(); sizes = append(sizes, len(s)); mu.Unlock() }, opts)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		waitFor(t, 10*time.Second, "collecting", func() bool { return c.State() == "connected" })
		mu.Lock()
		sizes = nil // from the first full window on
		mu.Unlock()
		time.Sleep(d)
		cancel()
		<-done
		mu.Lock()
		defer mu.Unlock()
		return sizes
	}
	for _, n := range run(Options{MaxBatch: 3, FlushInterval: time.Second}, 1500*time.Millisecond) {
		if n > 3 {
			t.Fatalf("a batch of %d samples with MaxBatch 3", n)
		}
	}
	// 3 s at 100 ms publishing: ~30 notifications. A 250 ms window would
	// give at most 13 batches.
	if got := run(Options{FlushInterval: -1}, 3*time.Second); len(got) <= 14 {
		t.Errorf("without a batch window: %d batches in 3 s, want one per notification (~30)", len(got))
	}
}

// TestCollectOverSeveralSessions: a template larger than ItemsPerSession
// is spread over several sessions to the same endpoint (1,000 points, 300
// a session: four), every point delivers, and after an outage all of
// them deliver again.
func TestCollectOverSeveralSessions(t *testing.T) {
	sim, pts := startGenerated(t, 1000)
	px := newProxy(t, strings.TrimPrefix(sim.Endpoint(), "opc.tcp://"))
	tpl := machinemodel.OPCUA{EndpointURL: "opc.tcp://" + px.addr, SecurityMode: "None", DataPoints: pts}
	var k sink
	c := runCollector(t, tpl, k.add, Options{ItemsPerSession: 300})
	every := func(since time.Time) func() bool {
		return func() bool {
			k.mu.Lock()
			defer k.mu.Unlock()
			got := map[string]bool{}
			for _, s := range k.s {
				if s.Status == 0 && !s.At.Before(since) {
					got[s.Point] = true
				}
			}
			return len(got) == 1000
		}
	}
	waitFor(t, 15*time.Second, "values of all 1,000 points", every(time.Time{}))
	px.mu.Lock()
	sessions := len(px.conns) / 2
	px.mu.Unlock()
	if sessions != 4 {
		t.Errorf("%d connections to the server, want 4 sessions of at most 300 points", sessions)
	}
	px.down()
	waitFor(t, 10*time.Second, "the collector noticing the outage", func() bool { return c.State() != "connected" })
	back := time.Now()
	px.up()
	waitFor(t, 15*time.Second, "values of all 1,000 points after the outage", every(back))
}

// startGenerated starts a simulator with n generated variables changing
// every 100 ms (left running: see TestCollectFromSimulator) and returns
// template points for all of them.
func startGenerated(t *testing.T, n int) (*opcuasim.Sim, []machinemodel.DataPoint) {
	t.Helper()
	sim, err := opcuasim.New(opcuasim.Config{Generated: n, Interval: opcuasim.Duration(100 * time.Millisecond)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := sim.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	pts := make([]machinemodel.DataPoint, n)
	for i := range pts {
		pts[i] = machinemodel.DataPoint{NodeID: opcuasim.GeneratedNodeID(sim.Namespace(), i), Name: fmt.Sprintf("gen%d", i), SamplingIntervalMS: 100}
	}
	return sim, pts
}

// runCollector runs a collector for tpl, with a 50 ms batch window, a 2 s
// watchdog and 1 s backoff unless opts says otherwise, until the test
// ends.
func runCollector(t *testing.T, tpl machinemodel.OPCUA, sink func([]Sample), opts Options) *Collector {
	t.Helper()
	if opts.FlushInterval == 0 {
		opts.FlushInterval = 50 * time.Millisecond
	}
	if opts.Watchdog == 0 {
		opts.Watchdog = 2 * time.Second
	}
	if opts.MaxBackoff == 0 {
		opts.MaxBackoff = time.Second
	}
	c, err := New(tpl, sink, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return c
}

func TestPublishingInterval(t *testing.T) {
	for _, c := range []struct{ sampling, want time.Duration }{
		{100 * time.Millisecond, 50 * time.Millisecond},
		{time.Second, 500 * time.Millisecond},
		{50 * time.Millisecond, 25 * time.Millisecond},
		{20 * time.Millisecond, 25 * time.Millisecond},
	} {
		if got := PublishingInterval(c.sampling); got != c.want {
			t.Errorf("PublishingInterval(%v) = %v, want %v", c.sampling, got, c.want)
		}
	}
}

// TestQuietServerKeepsSession: values that do not change for longer than
// the watchdog period are not an outage. gopcua's client does not pass the
// server's keep-alives on, so the watchdog probes a quiet subscription
// instead of reconnecting.
func TestQuietServerKeepsSession(t *testing.T) {
	sim, px := startCNC(t, opcuasim.Config{Interval: opcuasim.Duration(time.Hour)})
	ns := sim.Namespace()
	tpl := machinemodel.OPCUA{EndpointURL: "opc.tcp://" + px.addr, SecurityMode: "None", DataPoints: []machinemodel.DataPoint{
		{NodeID: opcuasim.NodeID(ns, "cnc1", "Temperature"), Name: "temperature", SamplingIntervalMS: 100},
	}}
	var k sink
	c := runCollector(t, tpl, k.add, Options{Watchdog: time.Second})
	waitFor(t, 10*time.Second, "the first value", func() bool { return k.find("temperature", func(Sample) bool { return true }) })
	time.Sleep(4 * time.Second) // four watchdog periods without a change
	if k.find("temperature", func(s Sample) bool { return s.Status == StatusLost }) {
		t.Errorf("a quiet server was treated as lost (state %q)", c.State())
	}
	px.mu.Lock()
	conns := len(px.conns) / 2
	px.mu.Unlock()
	if conns != 1 {
		t.Errorf("%d connections to the server, want 1 (no reconnects)", conns)
	}
	// The subscription still delivers after the quiet spell.
	if err := sim.Set(opcuasim.NodeID(ns, "cnc1", "Temperature"), 41.5); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Second, "the value set after the quiet spell", func() bool {
		return k.find("temperature", func(s Sample) bool { return s.Value == 41.5 })
	})

	// A hung server (connection open, nothing answers) is still an outage:
	// the probe goes unanswered and the collector reconnects.
	px.frozen.Store(true)
	waitFor(t, 10*time.Second, "the watchdog noticing the hung server", func() bool {
		return k.find("temperature", func(s Sample) bool { return s.Status == StatusLost })
	})
	px.frozen.Store(false)
	if err := sim.Set(opcuasim.NodeID(ns, "cnc1", "Temperature"), 42.5); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "values after the server answers again", func() bool {
		return c.State() == "connected" && k.find("temperature", func(s Sample) bool { return s.Value == 42.5 })
	})
}
