package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencyGuard keeps the agent small and separate: it must not
// import control-plane packages or database drivers.
func TestDependencyGuard(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"github.com/gantry-iot/gantry/controlplane", "modernc.org/sqlite", "github.com/jackc/pgx", "github.com/mochi-mqtt", "github.com/lib/pq"} {
			if strings.HasPrefix(dep, banned) {
				t.Errorf("gantry-agent imports %s", dep)
			}
		}
	}
}
