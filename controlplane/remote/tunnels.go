package remote

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gantry-iot/gantry/controlplane/store"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
)

// Sender delivers signed commands to devices and waits for the ack.
type Sender interface {
	Send(ctx context.Context, deviceID string, c *gantryv1.Command, ttl time.Duration) (*gantryv1.CommandAck, error)
}

// GrantSource lists active grants and the targets their tunnels may reach.
type GrantSource interface {
	ListActiveGrants(ctx context.Context, now time.Time) ([]store.Grant, error)
	GrantTargets(ctx context.Context, g store.Grant) ([]string, error)
	// GrantSSC returns the machine subnets and port filter of a grant
	// that allows Secure Service Connect (no subnets: no SSC).
	GrantSSC(ctx context.Context, g store.Grant) (subnets, ports []string, err error)
}

// Tunnels keeps agents' tunnels in line with active grants: a grant that
// becomes active gets a hub peer and a TunnelUp command to its device; a
// grant that ends (deactivation, expiry, case closing) loses its peer, its
// sessions and gets TunnelDown. It retries unacknowledged TunnelUps and
// re-keys when a device reconnects (its agent may have restarted).
type Tunnels struct {
	hub   *Hub
	src   GrantSource
	send  Sender
	log   *slog.Logger
	onEnd func(grantID, reason string)
	kick  chan struct{}
	retry time.Duration

	mu    sync.Mutex
	state map[string]*tunnelState
}

type tunnelState struct {
	grant    store.Grant
	acked    bool
	sending  bool
	gen      int // bumped when what was sent (or is being sent) is stale
	lastSend time.Time
	cancel   context.CancelFunc // ends the in-flight send
	ready    chan struct{}      // closed when the agent acknowledged TunnelUp
}

// stale marks what the agent has (or is being sent) as out of date: the
// in-flight send is cancelled and a new TunnelUp goes out as soon as it
// returns. Sends of one grant never overlap, so the hub's peer key is
// always the one in the last TunnelUp sent: two overlapping sends could
// leave the hub with one key and the agent with the other, and no
// handshake would ever succeed. Caller holds t.mu.
func (st *tunnelState) stale() {
	st.gen++
	st.lastSend = time.Time{}
	if st.cancel != nil {
		st.cancel()
	}
	if st.acked {
		st.acked, st.ready = false, make(chan struct{})
	}
}

// NewTunnels returns a manager; onEnd is called when a grant's tunnel
// ends so its sessions close.
func NewTunnels(hub *Hub, src GrantSource, send Sender, onEnd func(grantID, reason string), logger *slog.Logger) *Tunnels {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Tunnels{hub: hub, src: src, send: send, log: logger, onEnd: onEnd, kick: make(chan struct{}, 1), retry: 2 * time.Second, state: map[string]*tunnelState{}}
}

// Kick reconciles now (after activation, deactivation, case changes).
func (t *Tunnels) Kick() {
	select {
	case t.kick <- struct{}{}:
	default:
	}
}

// DeviceOnline re-sends the tunnels of a device that (re)connected: its
// agent may have restarted and lost them.
func (t *Tunnels) DeviceOnline(deviceID string) {
	t.mu.Lock()
	for _, st := range t.state {
		if st.grant.DeviceID != deviceID {
			continue
		}
		// Whatever is in flight went to the previous connection.
		st.stale()
	}
	t.mu.Unlock()
	t.Kick()
}

// Run reconciles every second and on Kick until ctx ends.
func (t *Tunnels) Run(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		t.reconcile(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-t.kick:
		}
	}
}

func (t *Tunnels) reconcile(ctx context.Context) {
	now := time.Now() // taken before the list: see PruneEngineers
	gs, err := t.src.ListActiveGrants(ctx, now)
	if err != nil {
		if ctx.Err() == nil {
			t.log.Error("tunnels: list active grants", "err", err)
		}
		return
	}
	active := map[string]bool{}
	t.mu.Lock()
	for _, g := range gs {
		active[g.ID] = true
		st := t.state[g.ID]
		if st == nil {
			st = &tunnelState{grant: g, ready: make(chan struct{})}
			t.state[g.ID] = st
		}
		if !g.ExpiresAt.Equal(st.grant.ExpiresAt) && (st.acked || st.sending) {
			// Extended: the agent must learn the new expiry.
			st.stale()
		}
		st.grant = g
		if !st.acked && !st.sending && now.Sub(st.lastSend) >= t.retry {
			sctx, cancel := context.WithCancel(ctx)
			st.sending, st.lastSend, st.cancel = true, now, cancel
			go t.up(sctx, st, g, st.gen)
		}
	}
	var ended []store.Grant
	for id, st := range t.state {
		if !active[id] {
			ended = append(ended, st.grant)
			if st.cancel != nil {
				st.cancel()
			}
			delete(t.state, id)
		}
	}
	t.mu.Unlock()
	// SSC engineer peers go with their grant, also grants this manager
	// never saw active.
	if n := t.hub.PruneEngineers(active, now); n > 0 {
		t.log.Info("ssc engineer peers removed with their grants", "peers", n)
	}
	for _, g := range ended {
		t.hub.RemovePeer(g.ID)
		t.hub.RemoveEngineers(g.ID)
		if t.onEnd != nil {
			t.onEnd(g.ID, "the remote-access grant ended")
		}
		t.log.Info("tunnel down", "grant", g.ID, "device", g.DeviceID)
		go t.down(ctx, g)
	}
}

func (t *Tunnels) up(ctx context.Context, st *tunnelState, g store.Grant, gen int) {
	err := t.sendUp(ctx, g)
	t.mu.Lock()
	defer t.mu.Unlock()
	if cur := t.state[g.ID]; cur != st {
		if cur == nil {
			// Ended meanwhile: reconcile removed the hub peer, but this
			// send may have added it again after that.
			t.hub.RemovePeer(g.ID)
		}
		return
	}
	st.sending = false
	st.cancel()
	st.cancel = nil
	if st.gen != gen {
		t.Kick() // superseded: send again now
		return
	}
	if err != nil {
		t.log.Warn("tunnel up not acknowledged; will retry", "grant", g.ID, "device", g.DeviceID, "err", err)
		return
	}
	if !st.acked {
		st.acked = true
		close(st.ready)
	}
	t.log.Info("tunnel up", "grant", g.ID, "device", g.DeviceID)
}

func (t *Tunnels) sendUp(ctx context.Context, g store.Grant) error {
	targets, err := t.src.GrantTargets(ctx, g)
	if err != nil {
		return err
	}
	subnets, ports, err := t.src.GrantSSC(ctx, g)
	if err != nil {
		return err
	}
	if len(targets) == 0 && len(subnets) == 0 {
		return fmt.Errorf("the grant's template lists no targets and no SSC subnets")
	}
	p, err := t.hub.AddPeerSSC(g.ID, subnets, ports)
	if err != nil {
		return err
	}
	up := &gantryv1.TunnelUp{
		GrantId: g.ID, PrivateKey: p.PrivateKey[:], HubPublicKey: p.HubPublicKey[:], PresharedKey: p.PresharedKey[:],
		HubEndpoint: p.HubEndpoint, Address: p.Address.String(), HubAddress: p.HubAddress.String(),
		Targets: targets, ExpiresAt: timestamppb.New(g.ExpiresAt)}
	if len(p.SSC) > 0 {
		for _, m := range p.SSC {
			up.SscSubnets = append(up.SscSubnets, &gantryv1.SSCSubnet{Machine: m.Machine.String(), Virtual: m.Virtual.String()})
		}
		up.SscClients, up.SscPorts = p.SSCClients.String(), p.SSCPorts
	}
	cmd := &gantryv1.Command{Body: &gantryv1.Command_TunnelUp{TunnelUp: up}}
	ack, err := t.send.Send(ctx, g.DeviceID, cmd, 5*time.Second)
	if err != nil {
		return err
	}
	if !ack.Ok {
		return fmt.Errorf("the agent refused: %s", ack.Error)
	}
	return nil
}

func (t *Tunnels) down(ctx context.Context, g store.Grant) {
	cmd := &gantryv1.Command{Body: &gantryv1.Command_TunnelDown{TunnelDown: &gantryv1.TunnelDown{GrantId: g.ID}}}
	if _, err := t.send.Send(ctx, g.DeviceID, cmd, 5*time.Second); err != nil {
		// The hub dropped the peer already; the agent's tunnel is inert
		// and ends at the grant's expiry at the latest.
		t.log.Info("tunnel down not acknowledged", "grant", g.ID, "device", g.DeviceID, "err", err)
	}
}

// Wait blocks until the grant's tunnel is up (acknowledged by the agent)
// or ctx ends.
func (t *Tunnels) Wait(ctx context.Context, grantID string) error {
	for {
		t.mu.Lock()
		st := t.state[grantID]
		var ready chan struct{}
		if st != nil {
			ready = st.ready
		}
		t.mu.Unlock()
		if st == nil {
			t.Kick()
			select {
			case <-ctx.Done():
				return fmt.Errorf("the tunnel of this grant did not come up: %w", ctx.Err())
			case <-time.After(50 * time.Millisecond):
			}
			continue
		}
		select {
		case <-ready:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("the edge device did not bring its tunnel up (is it online?): %w", ctx.Err())
		}
	}
}
