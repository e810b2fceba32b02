package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/ua"

	"github.com/gantry-iot/gantry/agent/collector"
	"github.com/gantry-iot/gantry/pkg/machinemodel"
	"github.com/gantry-iot/gantry/testbed/opcuasim"
)

// Issue 6's load: 10,000 nodes changing every 100 ms in one template.
const (
	loadNodes    = 10000
	loadInterval = 100 * time.Millisecond
	loadWindow   = 20 * time.Second
)

// TestOPCUA10kLoad measures one agent process collecting 10,000 OPC-UA
// nodes that change every 100 ms (all in one template) through its
// durable queue and MQTT: values/s collected, delivered to the broker
// (PUBACK) and stored by the control plane, agent CPU seconds per 100k
// collected and per 100k delivered values, and RSS — against a bare gopcua
// subscription client receiving the same nodes in the same run, alone
// before and after each agent (alongside, the two clients would share
// the simulator, which cannot serve two subscribers at the full rate on
// this machine). Two brokers: the embedded one (acknowledges after the control plane stored
// the batch) and Mosquitto (acknowledges on receipt). Part of make bench
// (GANTRY_BENCH=1); GANTRY_BENCH_AGENT_BEFORE=path also measures another
// gantry-agent build in the same run, GANTRY_BENCH_PPROF=addr serves the
// agent's pprof there.
func TestOPCUA10kLoad(t *testing.T) {
	if os.Getenv("GANTRY_BENCH") == "" {
		t.Skip("set GANTRY_BENCH=1 to measure the 10,000-node OPC-UA load (part of make bench)")
	}
	bin := binaries(t)
	sim := filepath.Join(t.TempDir(), "opcuasim")
	if out, err := exec.Command("go", "build", "-o", sim, "../opcuasim/cmd/opcuasim").CombinedOutput(); err != nil {
		t.Fatalf("build opcuasim: %v\n%s", err, out)
	}
	// The simulator in its own process, so neither measured client shares
	// a process with it; a fresh one for every window (see loadSim).
	ls := &loadSim{bin: sim, port: 0}
	ls.start(t)
	t.Cleanup(ls.stop)
	endpoint, ns := ls.endpoint, ls.ns
	produced := ls.produced
	var points []machinemodel.DataPoint
	for i := range loadNodes {
		points = append(points, machinemodel.DataPoint{NodeID: opcuasim.GeneratedNodeID(ns, i), Name: fmt.Sprintf("gen%d", i), SamplingIntervalMS: uint32(loadInterval / time.Millisecond)})
	}

	// Baseline: a bare gopcua client, ≤ 1,000 items per subscription,
	// measured alone before the first agent and after every agent.
	base := bareSubscriber(t, endpoint, points)
	// fresh restarts the simulator before a window: gopcua's server keeps
	// every subscription ever created fed (see startBare), so a simulator
	// that served earlier windows is slower and costs every client more
	// CPU per value; each window gets a new one on the same port.
	fresh := func() { ls.stop(); ls.start(t) }

	b, _ := json.Marshal(machinemodel.OPCUA{EndpointURL: endpoint, SecurityMode: "None", DataPoints: points})
	tplFile := filepath.Join(t.TempDir(), "opcua.json")
	if err := os.WriteFile(tplFile, b, 0o600); err != nil {
		t.Fatal(err)
	}
	nominal := float64(loadNodes) / loadInterval.Seconds()
	t.Logf("produced (nominal): %.0f values/s; load average %s", nominal, loadAvg())
	t.Logf("bare gopcua client: %.0f values/s, %.3f CPU s per 100k values", base.rate, base.cpuPer100k)
	// Agents to measure: this tree's, and optionally an earlier build
	// (GANTRY_BENCH_AGENT_BEFORE=path) for a before/after in one run.
	agents := []struct{ name, bin string }{{"agent", filepath.Join(bin, "gantry-agent")}}
	if before := os.Getenv("GANTRY_BENCH_AGENT_BEFORE"); before != "" {
		agents = append([]struct{ name, bin string }{{"before", before}}, agents...)
	}
	// The embedded broker acknowledges a batch after the control plane
	// stored it; Mosquitto acknowledges on receipt, so it measures the
	// agent's delivery to a broker independent of the ingest speed.
	// Each agent's CPU is compared with the mean of the bare client's
	// windows just before and just after it.
	measure := func(t *testing.T, cp *controlPlane, states []string, ingest bool) {
		for i, a := range agents {
			fresh()
			m := loadAgent(t, cp, a.name, a.bin, states[i], tplFile, ingest, produced)
			fresh()
			after := bareSubscriber(t, endpoint, points)
			t.Logf("bare gopcua client after %s: %.0f values/s, %.3f CPU s per 100k values", a.name, after.rate, after.cpuPer100k)
			m.report(t, baseline{rate: (base.rate + after.rate) / 2, cpuPer100k: (base.cpuPer100k + after.cpuPer100k) / 2})
			base = after
		}
	}
	t.Run("embedded", func(t *testing.T) {
		cp := startControlPlane(t)
		measure(t, cp, enrollLoadAgents(t, cp, agents), true)
	})
	t.Run("mosquitto", func(t *testing.T) {
		dataDir, brokerDir := t.TempDir(), t.TempDir()
		if out, err := exec.Command(filepath.Join(bin, "gantry-controlplane"), "mosquitto-files", "--data-dir", dataDir, "--out", brokerDir, "--hosts", "127.0.0.1,localhost").CombinedOutput(); err != nil {
			t.Fatalf("mosquitto-files: %v\n%s", err, out)
		}
		addr, mosq, _ := startMosquitto(t, brokerDir)
		cp := startControlPlaneArgs(t, dataDir, "--mqtt-external", "tls://"+addr, "--mqtt-crl-file", filepath.Join(brokerDir, "crl.pem"),
			"--mqtt-crl-reload", fmt.Sprintf("kill -HUP %d", mosq.Process.Pid), "--mqtt-ingest-clients", "1")
		measure(t, cp, enrollLoadAgents(t, cp, agents), false)
	})
}

// loadSim runs opcuasim with the load's nodes as a process that can be
// restarted on the same port (so the agent's template stays valid).
type loadSim struct {
	bin      string
	port     int
	endpoint string
	ns       uint16
	cmd      *exec.Cmd
	// count is the number of values the running process set so far (it
	// prints it every 100 ms): on a busy machine it falls short of the
	// nominal rate, and that is the rate delivery is measured against.
	count atomic.Uint64
}

func (s *loadSim) start(t *testing.T) {
	t.Helper()
	cmd := exec.Command(s.bin, "--port", strconv.Itoa(s.port), "--nodes", strconv.Itoa(loadNodes), "--interval", loadInterval.String(), "--stats", "100ms")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.cmd = cmd
	s.count.Store(0)
	sc := bufio.NewScanner(out)
	re := regexp.MustCompile(`on (opc\.tcp://\S+) \(namespace (\d+)\)`)
	for sc.Scan() {
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			s.endpoint = m[1]
			n, _ := strconv.Atoi(m[2])
			s.ns = uint16(n)
			break
		}
	}
	if s.endpoint == "" {
		t.Fatal("opcuasim printed no endpoint")
	}
	if s.port == 0 {
		i := strings.LastIndexByte(s.endpoint, ':')
		p, err := strconv.Atoi(strings.TrimRight(s.endpoint[i+1:], "/"))
		if err != nil {
			t.Fatalf("opcuasim endpoint %q: %v", s.endpoint, err)
		}
		s.port = p
	}
	go func() {
		for sc.Scan() {
			if n, ok := strings.CutPrefix(sc.Text(), "produced "); ok {
				if v, err := strconv.ParseUint(strings.TrimSuffix(n, " values"), 10, 64); err == nil {
					s.count.Store(v)
				}
			}
		}
		_, _ = io.Copy(io.Discard, out)
	}()
}

func (s *loadSim) stop() {
	if s.cmd != nil {
		_ = s.cmd.Process.Kill()
		_, _ = s.cmd.Process.Wait()
		s.cmd = nil
	}
}

func (s *loadSim) produced() float64 { return float64(s.count.Load()) }

// enrollLoadAgents enrolls a device for each agent before any runs (the
// control plane is busiest once telemetry flows) and returns their state
// directories.
func enrollLoadAgents(t *testing.T, cp *controlPlane, agents []struct{ name, bin string }) []string {
	t.Helper()
	var states []string
	for _, a := range agents {
		_, _, state := enrollDevice(t, cp, a.bin, "load gateway "+a.name)
		states = append(states, state)
	}
	return states
}

// agentLoad is one agent's measurement over loadWindow.
type agentLoad struct {
	name                          string
	produced                      float64 // values/s the simulator set in the window
	collected, sent, stored       float64 // values/s
	perCol, perSent               float64 // CPU s per 100k values
	rssMax                        int64
	backlogMB, dropped, ackedMsgs float64
	ingest                        bool
	load                          string
}

// loadAgent runs one agent process (binary agentBin, enrolled at cp with
// its state in state) on the load template and measures, over
// loadWindow: values collected from the server, values acknowledged by
// the broker (and, with ingest, stored by the control plane), the
// agent's CPU per 100k collected and per 100k delivered values, and its
// RSS.
func loadAgent(t *testing.T, cp *controlPlane, name, agentBin, state, tplFile string, ingest bool, produced func() float64) agentLoad {
	t.Helper()
	agentMetrics := freePort(t)
	args := []string{"run", "--state-dir", state, "--metrics-listen", agentMetrics, "--opcua-template", tplFile}
	if pp := os.Getenv("GANTRY_BENCH_PPROF"); pp != "" && name == "agent" {
		args = append(args, "--pprof-listen", pp) // go tool pprof http://$GANTRY_BENCH_PPROF/debug/pprof/profile?seconds=20
	}
	agent := exec.Command(agentBin, args...)
	logFile := filepath.Join(t.TempDir(), "agent.log")
	lf, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	agent.Stdout, agent.Stderr = lf, lf
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			b, _ := os.ReadFile(logFile)
			t.Logf("%s: agent log:\n%s", name, b[max(0, len(b)-8000):])
		}
	}()
	// Killed, not stopped: a stopping agent deletes its subscriptions,
	// which can deadlock gopcua's server (see startBare).
	stop := func() { _ = agent.Process.Kill(); _, _ = agent.Process.Wait() }
	defer stop()
	am := "http://" + agentMetrics + "/metrics"
	collected := func() float64 { return metricRetry(t, am, "gantry_agent_values_collected_total") }
	sent := func() float64 { return metricRetry(t, am, "gantry_agent_values_sent_total") }
	ingested := func() float64 { return metric(t, cp.url+"/metrics", "gantry_telemetry_values_total") }
	deadline := time.Now().Add(120 * time.Second)
	for sent() < loadNodes {
		if time.Now().After(deadline) {
			t.Fatalf("%s: the agent's values did not reach the broker within 120 s", name)
		}
		time.Sleep(time.Second)
	}
	time.Sleep(5 * time.Second) // past the start-up burst
	c0, s0, i0, p0, cpu0, t0 := collected(), sent(), ingested(), produced(), cpuSeconds(t, agent.Process.Pid), time.Now()
	m := agentLoad{name: name, ingest: ingest}
	for time.Since(t0) < loadWindow {
		time.Sleep(time.Second)
		m.rssMax = max(m.rssMax, rss(t, agent.Process.Pid))
	}
	c1, s1, i1, p1, cpu1, el := collected(), sent(), ingested(), produced(), cpuSeconds(t, agent.Process.Pid), time.Since(t0)
	m.produced = (p1 - p0) / el.Seconds()
	cpu := cpu1 - cpu0
	m.collected, m.sent, m.stored = (c1-c0)/el.Seconds(), (s1-s0)/el.Seconds(), (i1-i0)/el.Seconds()
	m.perCol, m.perSent = cpu/((c1-c0)/100000), cpu/((s1-s0)/100000)
	m.backlogMB, m.dropped, m.ackedMsgs = metric(t, am, "gantry_agent_queue_bytes")/(1<<20), metric(t, am, "gantry_agent_queue_dropped_total"), metric(t, am, "gantry_agent_messages_sent_total")
	m.load = loadAvg()
	return m
}

// report logs the measurement against the bare client's.
func (m agentLoad) report(t *testing.T, base baseline) {
	t.Helper()
	produced := m.produced
	t.Logf("%s: load average %s; simulator produced %.0f values/s (%.1f %% of the nominal %.0f); bare client alone before/after (mean): %.0f values/s, %.3f CPU s per 100k values",
		m.name, m.load, produced, 100*produced/(float64(loadNodes)/loadInterval.Seconds()), float64(loadNodes)/loadInterval.Seconds(), base.rate, base.cpuPer100k)
	t.Logf("%s: queue after the window: %.1f MB backlog, %.0f records dropped (queue full), %.0f messages acked by the broker",
		m.name, m.backlogMB, m.dropped, m.ackedMsgs)
	t.Logf("%s: collected %.0f values/s (%.1f %% of produced), %.3f CPU s per 100k collected (%.2f× the bare client)",
		m.name, m.collected, 100*m.collected/produced, m.perCol, m.perCol/base.cpuPer100k)
	t.Logf("%s: delivered to the broker (PUBACK) %.0f values/s (%.1f %% of produced), %.3f CPU s per 100k delivered (%.2f× the bare client); RSS max %.1f MB",
		m.name, m.sent, 100*m.sent/produced, m.perSent, m.perSent/base.cpuPer100k, float64(m.rssMax)/(1<<20))
	if m.ingest {
		t.Logf("%s: stored by the control plane %.0f values/s (%.1f %% of produced)", m.name, m.stored, 100*m.stored/produced)
	}
}

// metricRetry is metric for a process that may still be starting.
func metricRetry(t *testing.T, url, name string) float64 {
	t.Helper()
	for i := 0; ; i++ {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			return metric(t, url, name)
		}
		if i == 50 {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

type baseline struct{ rate, cpuPer100k float64 }

// bareSubscriber subscribes to points with plain gopcua (no queue, no
// MQTT), counts the values it receives over loadWindow and the test
// process's CPU time meanwhile.
func bareSubscriber(t *testing.T, endpoint string, points []machinemodel.DataPoint) baseline {
	t.Helper()
	c := startBare(t, endpoint, points)
	defer c.stop()
	time.Sleep(5 * time.Second)
	v0, c0, t0 := c.values.Load(), selfCPU(t), time.Now()
	time.Sleep(loadWindow)
	v1, c1, el := c.values.Load(), selfCPU(t), time.Since(t0)
	n := float64(v1 - v0)
	return baseline{rate: n / el.Seconds(), cpuPer100k: (c1 - c0) / (n / 100000)}
}

// bareClient is a running bare gopcua subscription client.
type bareClient struct {
	values atomic.Int64
	stop   func()
}

// startBare connects a bare gopcua client and subscribes to points (≤
// 1,000 items per subscription, created in batches of 500); it counts the
// values it receives until stop.
func startBare(t *testing.T, endpoint string, points []machinemodel.DataPoint) *bareClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cl, err := opcua.NewClient(endpoint, opcua.SecurityMode(ua.MessageSecurityModeNone), opcua.AutoReconnect(false))
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	c := &bareClient{}
	done := make(chan struct{})
	// The subscriptions are not deleted: gopcua's server can deadlock when
	// a subscription is deleted while its items change (a change blocks on
	// the stopped subscription's channel while holding the item lock), and
	// it ignores CloseSession's DeleteSubscriptions. So they stay, fed,
	// for their lifetime, and later windows of one run see a simulator that
	// slows down: compare runs, not windows of one run.
	c.stop = func() {
		cancel()
		<-done
		_ = cl.Close(context.Background())
	}
	notify := make(chan *opcua.PublishNotificationData, 256)
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case n := <-notify:
				if d, ok := n.Value.(*ua.DataChangeNotification); ok {
					c.values.Add(int64(len(d.MonitoredItems)))
				}
			}
		}
	}()
	for start := 0; start < len(points); start += 1000 {
		// The same publishing interval as the agent asks for, so both see the
		// same responses from the server.
		sub, err := cl.Subscribe(ctx, &opcua.SubscriptionParameters{Interval: collector.PublishingInterval(loadInterval)}, notify)
		if err != nil {
			t.Fatal(err)
		}
		for b := start; b < min(start+1000, len(points)); b += 500 {
			var reqs []*ua.MonitoredItemCreateRequest
			for i := b; i < min(b+500, start+1000, len(points)); i++ {
				id, _ := ua.ParseNodeID(points[i].NodeID)
				req := opcua.NewMonitoredItemCreateRequestWithDefaults(id, ua.AttributeIDValue, uint32(i+1))
				req.RequestedParameters.SamplingInterval = float64(loadInterval / time.Millisecond)
				reqs = append(reqs, req)
			}
			if _, err := sub.Monitor(ctx, ua.TimestampsToReturnBoth, reqs...); err != nil {
				t.Fatal(err)
			}
		}
	}
	return c
}

// cpuSeconds reads a process's user + system CPU time from /proc.
func cpuSeconds(t *testing.T, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name (which may contain spaces).
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

func selfCPU(t *testing.T) float64 {
	t.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// metric reads one counter from a Prometheus text endpoint.
func metric(t *testing.T, url, name string) float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			return f
		}
	}
	return 0
}
