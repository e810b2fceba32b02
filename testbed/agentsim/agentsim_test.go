package agentsim_test

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
	"github.com/gantry-iot/gantry/testbed/agentsim"
)

func TestValidate(t *testing.T) {
	ok := agentsim.Config{Server: "http://127.0.0.1:8080", Agents: 1, Rate: 1, Batch: 1}
	for _, tc := range []struct {
		name    string
		edit    func(*agentsim.Config)
		wantErr string // substring; "" = valid
	}{
		{"valid", func(*agentsim.Config) {}, ""},
		{"no server", func(c *agentsim.Config) { c.Server = "" }, "--server is required"},
		{"bad scheme", func(c *agentsim.Config) { c.Server = "tls://x:1" }, "want http(s)://host:port"},
		{"no agents", func(c *agentsim.Config) { c.Agents = 0 }, "--agents 0"},
		{"zero rate", func(c *agentsim.Config) { c.Rate = 0 }, "--rate 0"},
		{"huge batch", func(c *agentsim.Config) { c.Batch = 10001 }, "--batch 10001"},
		{"negative duration", func(c *agentsim.Config) { c.Run = -time.Second }, "--duration -1s"},
		{"negative concurrency", func(c *agentsim.Config) { c.Concurrency = -1 }, "--concurrency"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.edit(&c)
			err := c.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				if c.Concurrency != 16 || c.ConnectConcurrency != 256 || c.PublishTimeout != 10*time.Second {
					t.Errorf("defaults not filled: %+v", c)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Validate = %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

// TestRun runs 20 simulated agents against a real control plane process:
// all enroll and show online, a signed ping is acknowledged, the control
// plane ingests exactly the batches agentsim saw acknowledged, and a clean
// stop turns every device offline.
// TestRun runs 20 agents against a control plane process, with the
// agent's own link and with the light client: both enroll, come online,
// answer a command, publish without loss or duplicates and go offline
// cleanly.
func TestRun(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a control plane process")
	}
	t.Run("link", func(t *testing.T) { testRun(t, false) })
	t.Run("light", func(t *testing.T) { testRun(t, true) })
}

func testRun(t *testing.T, light bool) {
	const agents = 20
	cp := startControlPlane(t, t.TempDir())
	dc := cp.devices(t)
	// Every goroutine of the simulated agents ends with Run (the test's
	// own HTTP client keeps its idle connections).
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent(),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"))
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	sim, err := agentsim.New(agentsim.Config{Server: cp.url, Email: demoEmail, Password: demoPassword,
		Agents: agents, Rate: 5, Batch: 4, Concurrency: 8, Progress: -1, Light: light}, logger)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		sum agentsim.Summary
		err error
	}
	done := make(chan result, 1)
	go func() {
		s, err := sim.Run(ctx)
		done <- result{s, err}
	}()
	select {
	case <-sim.Ready():
	case r := <-done:
		t.Fatalf("Run ended before all agents connected: %v %+v", r.err, r.sum)
	case <-time.After(25 * time.Second):
		t.Fatal("agents not connected within 25s")
	}
	ids := sim.DeviceIDs()
	if len(ids) != agents {
		t.Fatalf("%d agents connected, want %d", len(ids), agents)
	}
	eventually(t, 10*time.Second, "all devices online", func() (bool, string) {
		n := online(t, dc, ids)
		return n == agents, fmt.Sprintf("%d online", n)
	})
	if got := cp.metric(t, "gantry_mqtt_connected_devices"); got != agents {
		t.Errorf("gantry_mqtt_connected_devices = %v, want %d", got, agents)
	}
	ping, err := dc.SendCommand(ctx, connect.NewRequest(&gantryv1.SendCommandRequest{DeviceId: ids[0], Command: "ping", TimeoutSeconds: 10}))
	if err != nil || !ping.Msg.Ok {
		t.Fatalf("ping: %v %v", ping, err)
	}
	time.Sleep(2 * time.Second) // publish ~10 batches per agent
	cancel()
	r := <-done
	if r.err != nil {
		t.Fatalf("Run: %v", r.err)
	}
	s := r.sum
	t.Logf("summary: %+v", s)
	if s.Enrolled != agents || s.Connected != agents || s.Commands != 1 {
		t.Errorf("enrolled %d, connected %d, commands %d; want %d, %d, 1", s.Enrolled, s.Connected, s.Commands, agents, agents)
	}
	// Send slots skipped because the previous publish was still in flight
	// are load, not faults (this test runs on shared, busy machines).
	errs := maps.Clone(s.Errors)
	delete(errs, "behind_schedule")
	if diff := cmp.Diff(map[string]int64{}, errs); diff != "" {
		t.Errorf("errors (-want +got):\n%s", diff)
	}
	if s.Acked < agents*2 || s.Acked != s.Sent || s.Values != s.Acked*4 {
		t.Errorf("sent %d, acked %d, values %d; want ≥ %d acked, all of them, 4 values each", s.Sent, s.Acked, s.Values, agents*2)
	}
	if s.P50 <= 0 || s.P99 < s.P50 || s.RSS <= 0 {
		t.Errorf("latency p50 %v p99 %v, RSS %d", s.P50, s.P99, s.RSS)
	}
	// Every acknowledged batch is ingested once; nothing is a duplicate.
	eventually(t, 10*time.Second, "ingested batches = acked", func() (bool, string) {
		got := cp.metric(t, "gantry_telemetry_batches_total")
		return got == float64(s.Acked), fmt.Sprintf("%v ingested, %d acked", got, s.Acked)
	})
	if d := cp.metric(t, "gantry_telemetry_duplicates_total"); d != 0 {
		t.Errorf("gantry_telemetry_duplicates_total = %v, want 0", d)
	}
	if v := cp.metric(t, "gantry_telemetry_values_total"); v != float64(s.Values) {
		t.Errorf("gantry_telemetry_values_total = %v, want %d", v, s.Values)
	}
	eventually(t, 10*time.Second, "all devices offline", func() (bool, string) {
		n := online(t, dc, ids)
		return n == 0, fmt.Sprintf("%d online", n)
	})
	if got := cp.metric(t, "gantry_mqtt_connected_devices"); got != 0 {
		t.Errorf("gantry_mqtt_connected_devices = %v after stop, want 0", got)
	}
}
