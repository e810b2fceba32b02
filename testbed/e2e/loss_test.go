package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
	"github.com/gantry-iot/gantry/proto/gantry/v1/gantryv1connect"
)

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// runControlPlane starts gantry-controlplane on fixed addresses (so it can
// be restarted) and waits until it serves.
func runControlPlane(t *testing.T, httpAddr, mqttAddr, dataDir string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(filepath.Join(binaries(t), "gantry-controlplane"), "serve", "--dev", "--listen", httpAddr, "--mqtt-listen", mqttAddr, "--data-dir", dataDir)
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "Try:") {
			break
		}
	}
	go func() {
		for sc.Scan() {
		}
	}()
	return cmd
}

// TestNoLossAcrossOutages: a simulated agent publishes a numbered sequence
// through its durable queue while the control plane (with its broker) is
// stopped and restarted, and while the agent is SIGKILLed and restarted.
// The control plane ends up with every sequence number from the first to
// the last (duplicates allowed and counted, none missing).
func TestNoLossAcrossOutages(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real processes")
	}
	httpAddr, mqttAddr, data := freePort(t), freePort(t), t.TempDir()
	cp := runControlPlane(t, httpAddr, mqttAddr, data)
	base := "http://" + httpAddr
	c := &controlPlane{url: base, http: &http.Client{Timeout: 20 * time.Second}}
	auth := c.login(t, "st@acme.example")
	dc := gantryv1connect.NewDeviceServiceClient(c.http, base, connect.WithProtoJSON(), auth)
	ctx := context.Background()
	dev, err := dc.CreateDevice(ctx, connect.NewRequest(&gantryv1.CreateDeviceRequest{Name: "Loss test", SerialNumber: "GW-LOSS"}))
	if err != nil {
		t.Fatal(err)
	}
	id := dev.Msg.Device.Id
	tok, err := dc.CreateEnrollmentToken(ctx, connect.NewRequest(&gantryv1.CreateEnrollmentTokenRequest{DeviceId: id}))
	if err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	if out, err := agentCmd(t, "enroll", "--server", base, "--token", tok.Msg.Token, "--state-dir", state).CombinedOutput(); err != nil {
		t.Fatalf("enroll: %v\n%s", err, out)
	}
	startAgent := func() *exec.Cmd {
		a := agentCmd(t, "run", "--state-dir", state, "--metrics-listen", "off", "--simulate", "50")
		if err := a.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = a.Process.Kill(); _, _ = a.Process.Wait() })
		return a
	}
	history := func() []uint64 {
		r, err := dc.GetHistory(ctx, connect.NewRequest(&gantryv1.GetHistoryRequest{DeviceId: id, Point: "sim.counter", Limit: 10000}))
		if err != nil {
			t.Fatalf("history: %v", err)
		}
		var seqs []uint64
		for _, v := range r.Msg.Values {
			seqs = append(seqs, v.BatchSeq)
		}
		return seqs
	}
	waitCount := func(n int, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for len(history()) < n {
			if time.Now().After(deadline) {
				t.Fatalf("history has %d values after %v, want %d", len(history()), within, n)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}

	agent := startAgent()
	waitCount(25, 20*time.Second)

	// Control plane (and its broker) down for 3 s while the agent keeps producing.
	_ = cp.Process.Signal(syscall.SIGTERM)
	_, _ = cp.Process.Wait()
	time.Sleep(3 * time.Second)
	runControlPlane(t, httpAddr, mqttAddr, data)
	c.http.CloseIdleConnections()
	before := len(history())
	waitCount(before+150, 60*time.Second) // the backlog of the outage arrives

	// kill -9 the agent and restart it.
	_ = agent.Process.Kill()
	_, _ = agent.Process.Wait()
	agent = startAgent()
	n := len(history())
	waitCount(n+50, 30*time.Second)
	_ = agent.Process.Signal(syscall.SIGTERM)
	_, _ = agent.Process.Wait()
	time.Sleep(500 * time.Millisecond)

	seqs := history()
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	seen := map[uint64]int{}
	for _, s := range seqs {
		seen[s]++
	}
	dups := len(seqs) - len(seen)
	var missing []string
	for s := seqs[0]; s <= seqs[len(seqs)-1]; s++ {
		if seen[s] == 0 {
			missing = append(missing, fmt.Sprint(s))
		}
	}
	t.Logf("received %d batches, sequence %d..%d, %d duplicates", len(seqs), seqs[0], seqs[len(seqs)-1], dups)
	if seqs[0] != 1 {
		t.Errorf("first sequence %d, want 1", seqs[0])
	}
	if len(missing) > 0 {
		t.Errorf("missing sequence numbers: %s", strings.Join(missing, ","))
	}
}
