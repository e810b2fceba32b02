package collector

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"
)

// nodeIDSyntax is the standard string form (gopcua's parser is lenient).
var nodeIDSyntax = regexp.MustCompile(`^(ns=\d+;)?[isgb]=\S.*$`)

// Browse limits.
const (
	DefaultBrowseDepth = 3
	MaxBrowseDepth     = 10
	DefaultBrowseNodes = 1000
	MaxBrowseNodes     = 5000
)

// BrowsedNode is one node found by Browse.
type BrowsedNode struct {
	NodeID, ParentID        string
	BrowseName, DisplayName string
	NodeClass               string
	Depth                   int
}

// BrowseRequest says where to browse.
type BrowseRequest struct {
	Endpoint string // opc.tcp://host:port
	Root     string // empty: the Objects folder
	MaxDepth int    // 0: DefaultBrowseDepth
	MaxNodes int    // 0: DefaultBrowseNodes
}

// Validate checks a request and fills defaults.
func (r *BrowseRequest) Validate() error {
	u, err := url.Parse(r.Endpoint)
	if err != nil || u.Scheme != "opc.tcp" || u.Host == "" {
		return fmt.Errorf("browse: endpoint %q: want opc.tcp://host:port", r.Endpoint)
	}
	if r.Root == "" {
		r.Root = ua.NewNumericNodeID(0, id.ObjectsFolder).String()
	}
	if _, err := ua.ParseNodeID(r.Root); err != nil || !nodeIDSyntax.MatchString(r.Root) {
		return fmt.Errorf("browse: node %q is not an OPC-UA node ID (e.g. ns=2;s=Machine1 or i=85)", r.Root)
	}
	switch {
	case r.MaxDepth == 0:
		r.MaxDepth = DefaultBrowseDepth
	case r.MaxDepth < 0 || r.MaxDepth > MaxBrowseDepth:
		return fmt.Errorf("browse: max depth %d: 1..%d", r.MaxDepth, MaxBrowseDepth)
	}
	switch {
	case r.MaxNodes == 0:
		r.MaxNodes = DefaultBrowseNodes
	case r.MaxNodes < 0 || r.MaxNodes > MaxBrowseNodes:
		return fmt.Errorf("browse: max nodes %d: 1..%d", r.MaxNodes, MaxBrowseNodes)
	}
	return nil
}

// Browse connects to an OPC-UA server (security None) and walks its
// address space breadth first along hierarchical references from the
// root, visiting each node once. truncated reports that a limit stopped
// the walk.
func Browse(ctx context.Context, r BrowseRequest) (nodes []BrowsedNode, truncated bool, err error) {
	if err := r.Validate(); err != nil {
		return nil, false, err
	}
	cl, err := opcua.NewClient(r.Endpoint, opcua.SecurityMode(ua.MessageSecurityModeNone), opcua.AutoReconnect(false), opcua.RequestTimeout(10*time.Second))
	if err != nil {
		return nil, false, fmt.Errorf("browse: %w", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = cl.Connect(cctx)
	cancel()
	if err != nil {
		return nil, false, fmt.Errorf("browse: connect to %s: %w", r.Endpoint, err)
	}
	defer cl.Close(context.WithoutCancel(ctx))
	root, _ := ua.ParseNodeID(r.Root)
	type item struct {
		id    *ua.NodeID
		depth int
	}
	queue := []item{{root, 0}}
	seen := map[string]bool{root.String(): true}
	for len(queue) > 0 {
		it := queue[0]
		queue = queue[1:]
		if it.depth >= r.MaxDepth {
			truncated = true
			continue
		}
		refs, err := cl.Node(it.id).References(ctx, id.HierarchicalReferences, ua.BrowseDirectionForward, ua.NodeClassAll, true)
		if err != nil {
			if it.depth == 0 {
				return nil, false, fmt.Errorf("browse %s: %w", it.id, err)
			}
			continue // a node we may not browse; keep the rest
		}
		for _, ref := range refs {
			if ref.NodeID == nil || ref.NodeID.NodeID == nil {
				continue
			}
			nid := ref.NodeID.NodeID.String()
			if seen[nid] {
				continue
			}
			if len(nodes) >= r.MaxNodes {
				return nodes, true, nil
			}
			seen[nid] = true
			n := BrowsedNode{NodeID: nid, ParentID: it.id.String(), NodeClass: ref.NodeClass.String(), Depth: it.depth + 1}
			if ref.BrowseName != nil {
				n.BrowseName = ref.BrowseName.Name
			}
			if ref.DisplayName != nil {
				n.DisplayName = ref.DisplayName.Text
			}
			nodes = append(nodes, n)
			queue = append(queue, item{ref.NodeID.NodeID, it.depth + 1})
		}
		if err := ctx.Err(); err != nil {
			return nodes, true, errors.Join(errors.New("browse: stopped"), err)
		}
	}
	return nodes, truncated, nil
}
