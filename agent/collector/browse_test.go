package collector

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/gantry-iot/gantry/testbed/opcuasim"
)

// TestBrowseSimulator browses the simulator's address space from the
// Objects folder and finds the CNC profile's variables with their node IDs.
func TestBrowseSimulator(t *testing.T) {
	sim, err := opcuasim.New(opcuasim.Config{Profiles: []opcuasim.Profile{{Name: "cnc1", Kind: "cnc"}}, Generated: 5, Interval: opcuasim.Duration(time.Second)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := sim.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Not stopped: see TestCollectFromSimulator.
	ctx := context.Background()
	nodes, truncated, err := Browse(ctx, BrowseRequest{Endpoint: sim.Endpoint(), MaxDepth: 4})
	if err != nil {
		t.Fatal(err)
	}
	want := opcuasim.NodeID(sim.Namespace(), "cnc1", "SpindleSpeed")
	found := false
	for _, n := range nodes {
		if n.NodeID == want {
			found = true
			if n.NodeClass != "NodeClassVariable" && !strings.Contains(n.NodeClass, "Variable") {
				t.Errorf("%s has class %s", want, n.NodeClass)
			}
			if n.ParentID == "" || n.Depth < 1 {
				t.Errorf("%s lacks its parent/depth: %+v", want, n)
			}
		}
	}
	if !found {
		t.Fatalf("%s not among %d browsed nodes (truncated %v): %+v", want, len(nodes), truncated, nodes)
	}
	// Limits hold.
	small, truncated, err := Browse(ctx, BrowseRequest{Endpoint: sim.Endpoint(), MaxDepth: 4, MaxNodes: 3})
	if err != nil || len(small) != 3 || !truncated {
		t.Errorf("max nodes 3: %d nodes, truncated %v, %v", len(small), truncated, err)
	}
	// Bad input.
	for _, r := range []BrowseRequest{{Endpoint: "http://x"}, {Endpoint: sim.Endpoint(), Root: "not a node"}, {Endpoint: sim.Endpoint(), MaxDepth: 11}, {Endpoint: sim.Endpoint(), MaxNodes: 9999}} {
		if _, _, err := Browse(ctx, r); err == nil {
			t.Errorf("%+v accepted", r)
		}
	}
}
