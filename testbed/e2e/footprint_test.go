package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Footprint goals of issue 5.
const (
	maxAgentBinary  = 30 << 20 // stripped
	maxAgentIdleRSS = 25 << 20
)

// idleProgram is the baseline: a Go process that does nothing but wait,
// built with the same flags in the same run. It shows the Go runtime's own
// floor on this machine.
const idleProgram = `package main

import (
	"os"
	"os/signal"
)

func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, os.Interrupt)
	<-c
}
`

// TestAgentFootprintLoad measures the stripped agent binary and the
// resident memory of an enrolled, connected, idle agent process (issue 5:
// ≤ 30 MB stripped, ≤ 25 MB idle RSS), against an idle Go program built
// the same way. Part of make bench (GANTRY_BENCH=1).
func TestAgentFootprintLoad(t *testing.T) {
	if os.Getenv("GANTRY_BENCH") == "" {
		t.Skip("set GANTRY_BENCH=1 to measure the agent's binary size and idle memory (part of make bench)")
	}
	dir := t.TempDir()
	agent := filepath.Join(dir, "gantry-agent")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", agent, "../../agent/cmd/gantry-agent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the agent: %v\n%s", err, b)
	}
	idleDir := filepath.Join(dir, "idle")
	if err := os.MkdirAll(idleDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(idleDir, "main.go"), []byte(idleProgram), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(idleDir, "go.mod"), []byte("module idle\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	idle := filepath.Join(dir, "idle-go")
	cmd = exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", idle, ".")
	cmd.Dir = idleDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=mod")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build baseline: %v\n%s", err, b)
	}
	agentSize, idleSize := fileSize(t, agent), fileSize(t, idle)

	// An enrolled agent, connected and idle.
	cp := startControlPlane(t)
	dc, id, state := enrollDevice(t, cp, agent, "Footprint")
	start := func(bin string, args ...string) *exec.Cmd {
		c := exec.Command(bin, args...)
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Process.Kill(); _, _ = c.Process.Wait() })
		return c
	}
	a := start(agent, "run", "--state-dir", state, "--metrics-listen", "127.0.0.1:0")
	b := start(idle)
	waitOnline(t, dc, id, true, 30*time.Second)
	// Idle: connected, keepalives only. Sample for a while and keep the
	// highest resident size seen.
	var agentRSS, idleRSS int64
	for range 20 {
		time.Sleep(time.Second)
		agentRSS = max(agentRSS, rss(t, a.Process.Pid))
		idleRSS = max(idleRSS, rss(t, b.Process.Pid))
	}
	mb := func(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/(1<<20)) }
	t.Logf("agent binary (stripped, CGO off) %s; idle Go program %s; ratio %.1f", mb(agentSize), mb(idleSize), float64(agentSize)/float64(idleSize))
	t.Logf("agent idle RSS (enrolled, connected, 20 s) %s; idle Go program %s; difference %s", mb(agentRSS), mb(idleRSS), mb(agentRSS-idleRSS))
	if agentSize > maxAgentBinary {
		t.Errorf("stripped agent binary is %s, goal ≤ %s", mb(agentSize), mb(maxAgentBinary))
	}
	if agentRSS > maxAgentIdleRSS {
		t.Errorf("idle agent RSS is %s, goal ≤ %s", mb(agentRSS), mb(maxAgentIdleRSS))
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// rss reads a process's resident set size from /proc.
func rss(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("process %d: %v", pid, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmRSS %q: %v", v, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("process %d: no VmRSS", pid)
	return 0
}
