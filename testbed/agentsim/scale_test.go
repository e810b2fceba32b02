package agentsim_test

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/gantry-iot/gantry/testbed/agentsim"
)

// TestScaleLoad measures agentsim against one control plane process at
// growing numbers of agents, each against a fresh control plane, and
// compares with a 1-agent baseline measured in the same run. Not part of
// the normal test run:
//
//	GANTRY_BENCH=1 GANTRY_AGENTSIM_N=1000,5000,10000 GANTRY_AGENTSIM_RUN=20s \
//	  go test -run TestScaleLoad -v -timeout 60m ./testbed/agentsim
//
// Defaults: N=1000 (the smoke variant `make bench` runs), 20 s of
// publishing, 1 message/s per agent (GANTRY_AGENTSIM_RATE) with 10 values
// each. GANTRY_AGENTSIM_STORE=postgres runs the control planes on a fresh
// database each in the server of GANTRY_TEST_POSTGRES instead of SQLite.
// GANTRY_AGENTSIM_BROKER=mosquitto runs each control plane against a
// Mosquitto started from deploy/mosquitto (external-broker mode); the
// broker's own CPU and RSS are logged beside the table.
func TestScaleLoad(t *testing.T) {
	if os.Getenv("GANTRY_BENCH") == "" {
		t.Skip("load measurement: set GANTRY_BENCH=1 (see make bench)")
	}
	sizes := []int{1000}
	if v := os.Getenv("GANTRY_AGENTSIM_N"); v != "" {
		sizes = nil
		for f := range strings.SplitSeq(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 {
				t.Fatalf("GANTRY_AGENTSIM_N=%q: want a comma-separated list of agent counts", v)
			}
			sizes = append(sizes, n)
		}
	}
	run := 20 * time.Second
	if v := os.Getenv("GANTRY_AGENTSIM_RUN"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("GANTRY_AGENTSIM_RUN=%q: want a duration", v)
		}
		run = d
	}
	rate := 1.0
	if v := os.Getenv("GANTRY_AGENTSIM_RATE"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f <= 0 {
			t.Fatalf("GANTRY_AGENTSIM_RATE=%q: want messages per second per agent", v)
		}
		rate = f
	}
	// The light MQTT client by default: with paho the 10,000 simulated
	// agents took 0.6 of this machine's two cores from the control plane.
	switch v := os.Getenv("GANTRY_AGENTSIM_CLIENT"); v {
	case "", "light":
		simLight = true
	case "link":
		simLight = false
	default:
		t.Fatalf("GANTRY_AGENTSIM_CLIENT=%q: want light or link (the agent's paho link)", v)
	}
	t.Logf("simulated agents' MQTT client: %s", map[bool]string{true: "light", false: "link (paho)"}[simLight])
	var store func(t *testing.T) string // DSN of a fresh store; nil: SQLite
	switch v := os.Getenv("GANTRY_AGENTSIM_STORE"); v {
	case "", "sqlite":
	case "postgres":
		store = freshPostgres
	default:
		t.Fatalf("GANTRY_AGENTSIM_STORE=%q: want sqlite or postgres", v)
	}
	base := measure(t, 1, rate, run, store)
	results := []scaleResult{base}
	for _, n := range sizes {
		results = append(results, measure(t, n, rate, run, store))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n| agents | enrolled/s | connect time | acked msgs/s | ingested msgs/s | values/s | p50 / p99 publish | control plane CPU | control plane RSS | agentsim CPU | agentsim RSS | duplicates | errors |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range results {
		fmt.Fprintf(&b, "| %d | %.0f | %v | %.0f | %.0f | %.0f | %v / %v | %.2f cores | %.0f MiB | %.2f cores | %.0f MiB | %.0f | %s |\n",
			r.sum.Connected, r.sum.EnrolledPerSec, r.sum.ConnectTime.Round(time.Millisecond), r.sum.AckedPerSec, r.ingestedPerSec, r.sum.AckedPerSec*10,
			r.sum.P50.Round(10*time.Microsecond), r.sum.P99.Round(10*time.Microsecond), r.cpCores, mib(r.cpRSS), r.simCores, mib(r.simRSS), r.dupes, errString(r.sum.Errors))
	}
	fmt.Fprintf(&b, "\nratios against the 1-agent baseline:\n\n| agents | connect time | msg rate | p99 latency | control plane RSS | control plane CPU | agentsim RSS |\n|---|---|---|---|---|---|---|\n")
	for _, r := range results[1:] {
		fmt.Fprintf(&b, "| %d | %.1f× | %.0f× | %.1f× | %.1f× | %.1f× | %.1f× |\n", r.sum.Connected,
			ratio(r.sum.ConnectTime.Seconds(), base.sum.ConnectTime.Seconds()), ratio(r.sum.AckedPerSec, base.sum.AckedPerSec),
			ratio(r.sum.P99.Seconds(), base.sum.P99.Seconds()), ratio(float64(r.cpRSS), float64(base.cpRSS)),
			ratio(r.cpCores, base.cpCores), ratio(float64(r.simRSS), float64(base.simRSS)))
	}
	// One log call per line: make bench keeps only lines naming the test file.
	for line := range strings.Lines(b.String()) {
		t.Log(strings.TrimRight(line, "\n"))
	}
}

// shmDir is /dev/shm where it exists: enrollment writes four fsync'd files
// per agent, which the disk should not pace.
func shmDir() string {
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		return "/dev/shm"
	}
	return ""
}

// simLight selects the light MQTT client for TestScaleLoad (and the tests
// that share measure).
var simLight bool

type scaleResult struct {
	sum             agentsim.Summary
	ingestedPerSec  float64
	cpCores         float64 // control plane CPU during publishing
	simCores        float64
	cpRSS, simRSS   int64 // peaks during publishing
	ingested, dupes float64
	brokerCores     float64 // external broker (Mosquitto) CPU, if any
	brokerRSS       int64
}

// measure runs n agents for run against a fresh control plane process.
func measure(t *testing.T, n int, rate float64, run time.Duration, store func(*testing.T) string) scaleResult {
	t.Helper()
	var extra []string
	if store != nil {
		extra = []string{"--store", store(t)}
	}
	dataDir := t.TempDir()
	brokerPid := -1
	if os.Getenv("GANTRY_AGENTSIM_BROKER") == "mosquitto" {
		flags, pid := externalBroker(t, dataDir, extra)
		extra, brokerPid = append(extra, flags...), pid
	}
	cp := startControlPlane(t, dataDir, extra...)
	pid := cp.cmd.Process.Pid
	if brokerPid > 0 {
		eventually(t, 30*time.Second, "control plane connected to mosquitto", func() (bool, string) {
			n := cp.metric(t, "gantry_mqtt_external_clients_connected")
			return n == 5, fmt.Sprint(n, " clients")
		})
	}
	state, err := os.MkdirTemp(shmDir(), "agentsim-bench-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(state) })
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	sim, err := agentsim.New(agentsim.Config{Server: cp.url, Email: demoEmail, Password: demoPassword,
		Agents: n, Rate: rate, Batch: 10, Run: run, Concurrency: 32, ConnectConcurrency: 256, StateDir: state, Progress: 5 * time.Second, Light: simLight}, logger.With("n", n))
	if err != nil {
		t.Fatal(err)
	}
	var res scaleResult
	done := make(chan error, 1)
	go func() {
		var err error
		res.sum, err = sim.Run(context.Background())
		done <- err
	}()
	select {
	case <-sim.Ready():
	case err := <-done:
		t.Fatalf("%d agents: Run ended before publishing: %v %+v", n, err, res.sum)
	}
	cpu0, sim0, ing0, t0 := agentsim.ProcCPU(pid), agentsim.ProcCPU(0), cp.metric(t, "gantry_telemetry_batches_total"), time.Now()
	var brokerCPU0 time.Duration
	if brokerPid > 0 {
		brokerCPU0 = agentsim.ProcCPU(brokerPid)
	}
	var peakMu sync.Mutex
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tk := time.NewTicker(time.Second)
		defer tk.Stop()
		for {
			a, b := agentsim.ProcRSS(pid), agentsim.ProcRSS(0)
			peakMu.Lock()
			res.cpRSS, res.simRSS = max(res.cpRSS, a), max(res.simRSS, b)
			if brokerPid > 0 {
				res.brokerRSS = max(res.brokerRSS, agentsim.ProcRSS(brokerPid))
			}
			peakMu.Unlock()
			select {
			case <-stop:
				return
			case <-tk.C:
			}
		}
	}()
	time.Sleep(run - 500*time.Millisecond)
	cpu1, sim1, ing1, t1 := agentsim.ProcCPU(pid), agentsim.ProcCPU(0), cp.metric(t, "gantry_telemetry_batches_total"), time.Now()
	var brokerCPU1 time.Duration
	if brokerPid > 0 {
		brokerCPU1 = agentsim.ProcCPU(brokerPid)
	}
	close(stop)
	<-sampled
	if err := <-done; err != nil {
		t.Fatalf("%d agents: %v", n, err)
	}
	el := t1.Sub(t0).Seconds()
	res.cpCores, res.simCores = (cpu1-cpu0).Seconds()/el, (sim1-sim0).Seconds()/el
	if brokerPid > 0 {
		res.brokerCores = (brokerCPU1 - brokerCPU0).Seconds() / el
	}
	res.ingestedPerSec = (ing1 - ing0) / el
	// No loss: every acknowledged batch is ingested, once.
	deadline := time.Now().Add(30 * time.Second)
	for {
		res.ingested, res.dupes = cp.metric(t, "gantry_telemetry_batches_total"), cp.metric(t, "gantry_telemetry_duplicates_total")
		if res.ingested-res.dupes >= float64(res.sum.Acked) || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	// No loss: acked ≤ unique batches ingested ≤ sent (a publish that timed
	// out may still have arrived). Redeliveries after a reconnect are
	// allowed because the control plane counts them as duplicates.
	if unique := res.ingested - res.dupes; unique < float64(res.sum.Acked) || unique > float64(res.sum.Sent) {
		t.Errorf("%d agents: control plane ingested %v batches (%v duplicates), agentsim sent %d, saw %d acked", n, res.ingested, res.dupes, res.sum.Sent, res.sum.Acked)
	}
	t.Logf("%d agents: %+v", n, res.sum)
	if brokerPid > 0 {
		t.Logf("%d agents: mosquitto %.2f cores, peak RSS %.0f MiB", n, res.brokerCores, mib(res.brokerRSS))
	}
	return res
}

// freshPostgres creates a database for one control plane in the server of
// GANTRY_TEST_POSTGRES and drops it after the test.
func freshPostgres(t *testing.T) string {
	t.Helper()
	dsn := os.Getenv("GANTRY_TEST_POSTGRES")
	if dsn == "" {
		t.Fatal("GANTRY_AGENTSIM_STORE=postgres needs GANTRY_TEST_POSTGRES (e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable)")
	}
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("GANTRY_TEST_POSTGRES: %v", err)
	}
	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close() })
	name := fmt.Sprintf("agentsim_%d", time.Now().UnixNano())
	if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
		t.Fatalf("create database: %v", err)
	}
	// Registered before the control plane starts, so it runs after it stops.
	t.Cleanup(func() {
		if _, err := admin.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)"); err != nil {
			t.Logf("drop database %s: %v", name, err)
		}
	})
	u.Path = "/" + name
	return u.String()
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func errString(m map[string]int64) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%s %d", k, v))
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}
