package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencyGuard: the control plane never imports the agent.
func TestDependencyGuard(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, "github.com/gantry-iot/gantry/agent") {
			t.Errorf("gantry-controlplane imports %s", dep)
		}
	}
}
