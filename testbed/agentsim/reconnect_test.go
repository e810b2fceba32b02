package agentsim_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gantry-iot/gantry/testbed/agentsim"
)

// TestReconnectLoad connects N agents (GANTRY_AGENTSIM_RECONNECT_N,
// default 1000) to a control plane, restarts the control plane on the same
// ports and data, and measures how long until every agent is connected
// again (the agents' links reconnect on their own, with their backoff and
// jitter, resuming their TLS sessions where the control plane's ticket
// keys allow). It breaks the time down: how long the old control plane
// took to stop, until the new one's broker completed TLS handshakes and
// until it served HTTP; how late after the broker was back the agents
// retried; full and resumed handshakes and their peak rate. Finally it
// starts the control plane once more without agents (log level info) to
// log its startup steps.
//
//	ulimit -n 65536; GANTRY_BENCH=1 GANTRY_AGENTSIM_RECONNECT_N=10000 go test -count=1 -run TestReconnectLoad -v -timeout 30m ./testbed/agentsim
func TestReconnectLoad(t *testing.T) {
	if os.Getenv("GANTRY_BENCH") == "" {
		t.Skip("load measurement: set GANTRY_BENCH=1 (see make bench)")
	}
	n := 1000
	if v := os.Getenv("GANTRY_AGENTSIM_RECONNECT_N"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			t.Fatalf("GANTRY_AGENTSIM_RECONNECT_N=%q: want an agent count", v)
		}
	}
	dataDir := t.TempDir()
	mqttAddr := freePort(t)
	ports := []string{"--listen", freePort(t), "--mqtt-listen", mqttAddr}
	cp := startControlPlane(t, dataDir, ports...)
	state, err := os.MkdirTemp(shmDir(), "agentsim-bench-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(state) })
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	sim, err := agentsim.New(agentsim.Config{Server: cp.url, Email: demoEmail, Password: demoPassword,
		Agents: n, Rate: 1, Batch: 10, Concurrency: 32, StateDir: state, Progress: 5 * time.Second}, logger.With("n", n))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	var sum agentsim.Summary
	go func() {
		var err error
		sum, err = sim.Run(ctx)
		done <- err
	}()
	select {
	case <-sim.Ready():
	case err := <-done:
		t.Fatalf("Run ended before publishing: %v", err)
	}
	time.Sleep(3 * time.Second)
	load0, drops0 := loadAvg(), listenDrops()
	t0 := time.Now()
	cp.stop()
	stopped := time.Since(t0)
	// The broker is back when a TLS handshake completes on its port (the
	// listener may be bound before it serves).
	backc := make(chan time.Duration, 1)
	go func() { backc <- tlsBack(mqttAddr, t0) }()
	// As the agents see it (the control plane's /metrics answers only
	// once HTTP serves, after the broker).
	agentsBack := make(chan [3]time.Duration, 1)
	go func() {
		var r [3]time.Duration // 50 %, 90 %, all
		all := len(sim.DeviceIDs())
		for time.Since(t0) < 3*time.Minute {
			c, el := sim.Connected(), time.Since(t0)
			if r[0] == 0 && c >= all/2 {
				r[0] = el
			}
			if r[1] == 0 && c >= all*9/10 {
				r[1] = el
			}
			if c >= all {
				r[2] = el
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		agentsBack <- r
	}()
	exec := time.Since(t0)
	cp2 := startControlPlane(t, dataDir, ports...)
	up := time.Since(t0)
	back := <-backc
	want := float64(len(sim.DeviceIDs()))
	var connected, at20s, resumed, full, peakRate float64
	var half, ninety time.Duration
	type sample struct {
		at        time.Duration
		handshake float64
	}
	var window []sample
	for {
		el := time.Since(t0)
		c, err1 := cp2.tryMetric("gantry_mqtt_connected_devices")
		r, err2 := cp2.tryMetric("gantry_mqtt_tls_resumed_total")
		f, err3 := cp2.tryMetric("gantry_mqtt_tls_full_handshakes_total")
		if err1 == nil && err2 == nil && err3 == nil {
			connected, resumed, full = c, r, f
			window = append(window, sample{el, r + f})
			for len(window) > 1 && el-window[0].at > time.Second {
				window = window[1:]
			}
			if d := el - window[0].at; d >= 500*time.Millisecond {
				peakRate = max(peakRate, (r+f-window[0].handshake)/d.Seconds())
			}
			if half == 0 && connected >= want/2 {
				half = el
			}
			if ninety == 0 && connected >= want*0.9 {
				ninety = el
			}
			if el <= 20*time.Second {
				at20s = connected
			}
		}
		if connected >= want || el > 3*time.Minute {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	all := time.Since(t0)
	load1, drops1 := loadAvg(), listenDrops()
	ab := <-agentsBack
	// How late after the broker was back did each agent retry?
	if back < 0 {
		t.Logf("the broker completed no TLS handshake of a probe within 3 minutes of the stop")
		back = up
	}
	backAt := t0.Add(back)
	first := map[int]time.Time{}
	during := 0
	for _, a := range sim.Attempts() {
		if a.At.Before(t0) {
			continue
		}
		if a.At.Before(backAt) {
			during++
			continue
		}
		if f, ok := first[a.Agent]; !ok || a.At.Before(f) {
			first[a.Agent] = a.At
		}
	}
	var late []time.Duration
	for _, at := range first {
		late = append(late, at.Sub(backAt))
	}
	slices.Sort(late)
	var mean time.Duration
	for _, d := range late {
		mean += d
	}
	if len(late) > 0 {
		mean /= time.Duration(len(late))
	}
	time.Sleep(3 * time.Second)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	r := func(d time.Duration) time.Duration { return d.Round(10 * time.Millisecond) }
	t.Logf("reconnect: 50%% after %v, 90%% after %v, %v of %v within 20 s of the stop (control plane's count, from when it served HTTP); load average %s before, %s after", r(half), r(ninety), at20s, want, load0, load1)
	t.Logf("agents' own count: 50%% connected again %v, 90%% %v, all %v after the stop began (0: not within 3 min)", r(ab[0]), r(ab[1]), r(ab[2]))
	t.Logf("%d agents (first connect %v): control plane stopped in %v; new process started %v after the stop began, its broker completed TLS handshakes after %v (%v after exec), HTTP served after %v; %v agents connected again %v after the stop began (%v after the broker was back); run errors %v",
		n, r(sum.ConnectTime), r(stopped), r(exec), r(back), r(back-exec), r(up), connected, r(all), r(all-back), sum.Errors)
	t.Logf("handshakes on the new broker: %v resumed, %v full (%.0f %% resumed), peak %.0f/s; reconnect attempts while it was down: %d (%.1f per agent)",
		resumed, full, 100*resumed/max(1, resumed+full), peakRate, during, float64(during)/max(1, want))
	t.Logf("connection attempts the kernel dropped because a listen queue was full (TcpExt ListenOverflows/ListenDrops, whole machine): %d/%d; net.core.somaxconn %s",
		drops1[0]-drops0[0], drops1[1]-drops0[1], strings.TrimSpace(readFile("/proc/sys/net/core/somaxconn")))
	if len(late) > 0 {
		t.Logf("first attempt after the broker was back, per agent (%d agents): mean %v, p50 %v, p90 %v, last %v",
			len(late), r(mean), r(late[len(late)/2]), r(late[len(late)*9/10]), r(late[len(late)-1]))
	}
	// Startup without agents, its steps logged (level info).
	cp2.stop()
	t1 := time.Now()
	backc = make(chan time.Duration, 1)
	go func() { backc <- tlsBack(mqttAddr, t1) }()
	cp3 := startControlPlane(t, dataDir, append(ports, "--log-level", "info")...)
	served := time.Since(t1)
	t.Logf("idle restart with %d devices in the store: broker completed TLS handshakes %v after exec, HTTP served after %v (startup steps in the \"control plane started\" log line above)", n, r(<-backc), r(served))
	cp3.stop()
}

// tlsBack polls addr until a TLS handshake completes there (the broker
// serves) and returns the time since t0; -1 after three minutes. A probe
// waits up to 5 s: under a reconnect storm the handshake queues behind
// the agents'.
func tlsBack(addr string, t0 time.Time) time.Duration {
	for time.Since(t0) < 3*time.Minute {
		d := &net.Dialer{Timeout: 5 * time.Second}
		c, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{InsecureSkipVerify: true}) // a probe: only whether the broker answers
		if err == nil {
			el := time.Since(t0)
			c.Close()
			return el
		}
		time.Sleep(10 * time.Millisecond)
	}
	return -1
}

// loadAvg is the 1-minute load average.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	var l1 float64
	fmt.Sscan(string(b), &l1)
	return strconv.FormatFloat(l1, 'f', 1, 64)
}

// listenDrops returns the kernel's TcpExt ListenOverflows and ListenDrops
// counters (zeros where /proc/net/netstat is missing).
func listenDrops() [2]int64 {
	var out [2]int64
	lines := strings.Split(readFile("/proc/net/netstat"), "\n")
	for i := 0; i+1 < len(lines); i++ {
		if !strings.HasPrefix(lines[i], "TcpExt:") || !strings.HasPrefix(lines[i+1], "TcpExt:") {
			continue
		}
		names, vals := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		for j := 1; j < len(names) && j < len(vals); j++ {
			switch names[j] {
			case "ListenOverflows":
				out[0], _ = strconv.ParseInt(vals[j], 10, 64)
			case "ListenDrops":
				out[1], _ = strconv.ParseInt(vals[j], 10, 64)
			}
		}
	}
	return out
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}
