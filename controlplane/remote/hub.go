// Package remote brokers remote-access sessions (SPEC §4): the WireGuard
// hub that agents connect to while a grant is active, the manager that
// brings agents' tunnels up and down as grants start and end, and the
// sessions that relay a user's VNC or data-link connection from a
// WebSocket through the hub and the agent to the machine.
package remote

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/gantry-iot/gantry/controlplane/errkind"
	"github.com/gantry-iot/gantry/pkg/machinemodel"
	"github.com/gantry-iot/gantry/pkg/tunnelproto"
	"github.com/gantry-iot/gantry/pkg/wg"
)

// DefaultPrefix is the hub's tunnel network: the hub takes the first
// address, agents the others, one per active grant.
var DefaultPrefix = netip.MustParsePrefix("100.96.0.0/16")

// HubConfig configures the hub.
type HubConfig struct {
	// ListenPort is the UDP port (0: a free port).
	ListenPort int
	// PublicHost is the host agents send WireGuard packets to (the
	// control plane's address as agents see it).
	PublicHost string
	Prefix     netip.Prefix
	// SSCPrefix is the pool of engineers' SSC addresses (default
	// DefaultSSCPrefix); it must not overlap Prefix.
	SSCPrefix netip.Prefix
	// SSCPerGrant and SSCPerUser limit the SSC configs held at once
	// (defaults DefaultSSCPerGrant, DefaultSSCPerUser).
	SSCPerGrant, SSCPerUser int
	Logger                  *slog.Logger
	// Registry receives the SSC forwarding metrics (nil: not exported).
	Registry prometheus.Registerer
	// SSCAudit, when set, receives each SSC config's session summary
	// (bytes and 5-tuple flows) when its peer is removed.
	SSCAudit func(SSCSession)
}

// Hub is the control plane's userspace WireGuard interface. Each active
// grant is one peer with its own keys and a single /32 address, so the
// hub reaches an agent only through that grant's keys, and a peer can
// send only from its own address (WireGuard's cryptokey routing).
// Engineers' Secure Service Connect configs are further peers, each with
// a /32 from a separate pool and tied to a grant. mu guards peers, used,
// next, engineers, sscPool, grants and vnets, and publishes the
// forwarder's policy snapshot after each change; the wg.Interface has its
// own locking.
type Hub struct {
	cfg   HubConfig
	iface *wg.Interface
	fwd   *forwarder
	pub   wg.Key
	log   *slog.Logger

	mu    sync.Mutex
	peers map[string]*hubPeer // by grant ID
	used  map[netip.Addr]bool
	next  netip.Addr

	engineers map[wg.Key]*engineerPeer // SSC peers by public key
	sscPool   *pool
	grants    map[string]*grantNet // SSC routing state by grant ID
	vnets     vnetPool
}

type hubPeer struct {
	Peer
	key wg.Key // the agent's public key
}

// Peer is what an agent needs to join the hub for one grant.
type Peer struct {
	GrantID      string
	PrivateKey   wg.Key // the agent's, fresh per grant
	PresharedKey wg.Key
	HubPublicKey wg.Key
	HubEndpoint  string
	Address      netip.Addr
	HubAddress   netip.Addr
	// SSC routing, empty unless the grant allows SSC: machine subnets
	// mapped onto virtual subnets, the engineers' pool, the port filter.
	SSC        []SubnetMap
	SSCClients netip.Prefix
	SSCPorts   []string
}

// SubnetMap maps a machine subnet 1:1 onto a virtual subnet of the same
// size.
type SubnetMap struct {
	Machine, Virtual netip.Prefix
}

// NewHub starts the hub.
func NewHub(cfg HubConfig) (*Hub, error) {
	if !cfg.Prefix.IsValid() {
		cfg.Prefix = DefaultPrefix
	}
	if !cfg.Prefix.Addr().Is4() || cfg.Prefix.Bits() > 28 {
		return nil, fmt.Errorf("hub: tunnel network %s must be IPv4 and at least a /28", cfg.Prefix)
	}
	if !cfg.SSCPrefix.IsValid() {
		cfg.SSCPrefix = DefaultSSCPrefix
	}
	if !cfg.SSCPrefix.Addr().Is4() || cfg.SSCPrefix.Bits() > 30 {
		return nil, fmt.Errorf("hub: SSC address pool %s must be IPv4 and at least a /30", cfg.SSCPrefix)
	}
	if cfg.SSCPrefix.Overlaps(cfg.Prefix) {
		return nil, fmt.Errorf("hub: SSC address pool %s overlaps the tunnel network %s", cfg.SSCPrefix, cfg.Prefix)
	}
	if cfg.SSCPerGrant <= 0 {
		cfg.SSCPerGrant = DefaultSSCPerGrant
	}
	if cfg.SSCPerUser <= 0 {
		cfg.SSCPerUser = DefaultSSCPerUser
	}
	if cfg.PublicHost == "" {
		cfg.PublicHost = "127.0.0.1"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	key, err := wg.NewPrivateKey()
	if err != nil {
		return nil, err
	}
	addr := cfg.Prefix.Masked().Addr().Next()
	var fwd *forwarder
	iface, err := wg.New(wg.Config{PrivateKey: key, Address: addr, ListenPort: cfg.ListenPort, Logger: cfg.Logger,
		Wrap: func(d tun.Device) tun.Device {
			fwd = newForwarder(d, cfg.SSCPrefix, cfg.Registry, cfg.Logger)
			return fwd
		},
		OnSpoofedSource: func() { fwd.drop(DropSpoofed, nil) }})
	if err != nil {
		return nil, fmt.Errorf("hub: %w", err)
	}
	h := &Hub{cfg: cfg, iface: iface, fwd: fwd, pub: key.Public(), log: cfg.Logger, peers: map[string]*hubPeer{}, used: map[netip.Addr]bool{addr: true}, next: addr.Next(),
		engineers: map[wg.Key]*engineerPeer{}, sscPool: newPool(cfg.SSCPrefix, ErrNoSSCAddress), grants: map[string]*grantNet{},
		vnets: vnetPool{reserved: []netip.Prefix{cfg.Prefix.Masked(), cfg.SSCPrefix.Masked()}}}
	h.log.Info("wireguard hub listening", "udp_port", iface.ListenPort(), "network", cfg.Prefix, "address", addr)
	return h, nil
}

// Endpoint is host:port agents connect to.
func (h *Hub) Endpoint() string {
	return net.JoinHostPort(h.cfg.PublicHost, strconv.Itoa(h.iface.ListenPort()))
}

// ErrNoAddress is returned when the tunnel network is exhausted.
var ErrNoAddress = errors.New("hub: no free tunnel address; too many active grants for the tunnel network")

func (h *Hub) allocLocked() (netip.Addr, error) {
	p := h.cfg.Prefix.Masked()
	for range 1 << (32 - p.Bits()) {
		a := h.next
		if h.next = a.Next(); !p.Contains(h.next) {
			h.next = p.Addr().Next()
		}
		// Skip the network address, the broadcast address and used ones.
		if !p.Contains(a) || a == p.Addr() || !p.Contains(a.Next()) || h.used[a] {
			continue
		}
		h.used[a] = true
		return a, nil
	}
	return netip.Addr{}, ErrNoAddress
}

// AddPeer creates (or re-keys) the peer of a grant without SSC.
func (h *Hub) AddPeer(grantID string) (Peer, error) { return h.AddPeerSSC(grantID, nil, nil) }

// AddPeerSSC creates (or re-keys) the peer of a grant: fresh keys, the
// same tunnel address if the grant already had one. With subnets (the
// template's machine subnets, SSC) the grant's virtual subnets join the
// peer's AllowedIPs, so the hub routes engineers' packets to this agent.
func (h *Hub) AddPeerSSC(grantID string, subnets, ports []string) (Peer, error) {
	priv, err := wg.NewPrivateKey()
	if err != nil {
		return Peer{}, err
	}
	psk, err := wg.NewPresharedKey()
	if err != nil {
		return Peer{}, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var gn *grantNet
	if len(subnets) > 0 {
		if gn, err = h.grantNetLocked(grantID, subnets, ports); err != nil {
			return Peer{}, err
		}
	}
	var addr netip.Addr
	if old := h.peers[grantID]; old != nil {
		addr = old.Address
		if err := h.iface.RemovePeer(old.key); err != nil {
			return Peer{}, err
		}
	} else if addr, err = h.allocLocked(); err != nil {
		return Peer{}, err
	}
	p := &hubPeer{Peer: Peer{GrantID: grantID, PrivateKey: priv, PresharedKey: psk, HubPublicKey: h.pub, HubEndpoint: h.Endpoint(),
		Address: addr, HubAddress: h.iface.Address()}, key: priv.Public()}
	allowed := []netip.Prefix{netip.PrefixFrom(addr, 32)}
	if gn != nil {
		for i := range gn.machine {
			p.SSC = append(p.SSC, SubnetMap{Machine: gn.machine[i], Virtual: gn.virtual[i]})
		}
		p.SSCClients, p.SSCPorts = h.cfg.SSCPrefix.Masked(), slices.Clone(ports)
		allowed = append(allowed, gn.virtual...)
	}
	if err := h.iface.SetPeer(wg.Peer{PublicKey: p.key, PresharedKey: psk, AllowedIPs: allowed}); err != nil {
		delete(h.used, addr)
		delete(h.peers, grantID)
		h.gcGrantNetLocked(grantID)
		h.publishLocked()
		return Peer{}, err
	}
	h.peers[grantID] = p
	h.publishLocked()
	return p.Peer, nil
}

// grantNetLocked returns the grant's SSC routing state, creating it (with
// fresh virtual subnets) or updating it when the template changed.
func (h *Hub) grantNetLocked(grantID string, subnets, ports []string) (*grantNet, error) {
	var machine []netip.Prefix
	for _, s := range subnets {
		p, err := netip.ParsePrefix(s)
		if err != nil || !p.Addr().Is4() || p.Bits() < machinemodel.MinSubnetBits {
			return nil, errkind.New(errkind.Precondition, "case_id", "the machine model's SSC subnet %q is not an IPv4 CIDR of at most /%d; fix the template", s, machinemodel.MinSubnetBits)
		}
		machine = append(machine, p.Masked())
	}
	rules, err := machinemodel.ParsePortRules(ports)
	if err != nil {
		return nil, errkind.New(errkind.Precondition, "case_id", "the machine model's SSC ports: %v; fix the template", err)
	}
	old := h.grants[grantID]
	if old != nil && slices.Equal(old.machine, machine) {
		if !slices.Equal(old.ports, rules) {
			g := *old
			g.ports = rules
			h.grants[grantID] = &g
			return &g, nil
		}
		return old, nil
	}
	g := &grantNet{id: grantID, machine: machine, ports: rules}
	for _, m := range machine {
		v, err := h.vnets.alloc(m.Bits())
		if err != nil {
			for _, u := range g.virtual {
				h.vnets.free(u)
			}
			return nil, err
		}
		g.virtual = append(g.virtual, v)
	}
	if old != nil {
		for _, u := range old.virtual {
			h.vnets.free(u)
		}
	}
	h.grants[grantID] = g
	h.log.Info("ssc virtual subnets", "grant", grantID, "machine", machine, "virtual", g.virtual)
	return g, nil
}

// gcGrantNetLocked frees a grant's SSC routing state once neither its
// agent peer nor any engineer peer is left.
func (h *Hub) gcGrantNetLocked(grantID string) {
	g := h.grants[grantID]
	if g == nil || h.peers[grantID] != nil {
		return
	}
	for _, e := range h.engineers {
		if e.grantID == grantID {
			return
		}
	}
	for _, v := range g.virtual {
		h.vnets.free(v)
	}
	delete(h.grants, grantID)
}

// publishLocked gives the forwarder a new policy snapshot.
func (h *Hub) publishLocked() {
	pol := &fwdPolicy{engineers: map[netip.Addr]*grantNet{}}
	snap := map[string]*grantNet{}
	for id, g := range h.grants {
		c := *g
		c.agentUp = h.peers[id] != nil
		snap[id] = &c
	}
	for _, e := range h.engineers {
		if g := snap[e.grantID]; g != nil {
			pol.engineers[e.addr] = g
		}
	}
	h.fwd.policy.Store(pol)
}

// SSCDropped returns how many SSC packets the hub dropped for a reason
// (one of the Drop* constants).
func (h *Hub) SSCDropped(reason string) int64 { return h.fwd.droppedCount(reason) }

// RemovePeer removes a grant's peer: from then on no packet of that
// grant's keys is accepted.
func (h *Hub) RemovePeer(grantID string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.peers[grantID]
	if p == nil {
		return
	}
	if err := h.iface.RemovePeer(p.key); err != nil {
		h.log.Error("hub: remove peer", "grant", grantID, "err", err)
	}
	delete(h.peers, grantID)
	delete(h.used, p.Address)
	h.gcGrantNetLocked(grantID)
	h.publishLocked()
}

// HasPeer reports whether a grant has a peer.
func (h *Hub) HasPeer(grantID string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.peers[grantID] != nil
}

// Handshake returns the time of the grant's peer's last handshake (zero:
// none yet).
func (h *Hub) Handshake(grantID string) time.Time {
	h.mu.Lock()
	p := h.peers[grantID]
	h.mu.Unlock()
	if p == nil {
		return time.Time{}
	}
	if s, ok := h.iface.Stats()[p.key]; ok && s.LastHandshakeUnix > 0 {
		return time.Unix(s.LastHandshakeUnix, 0)
	}
	return time.Time{}
}

// Dial opens a connection to target through the grant's agent.
func (h *Hub) Dial(ctx context.Context, grantID, target string) (net.Conn, error) {
	h.mu.Lock()
	p := h.peers[grantID]
	h.mu.Unlock()
	if p == nil {
		return nil, fmt.Errorf("the tunnel of grant %s is not up (the edge device may be offline)", grantID)
	}
	line, err := tunnelproto.Request{GrantID: grantID, Target: target}.Encode()
	if err != nil {
		return nil, err
	}
	c, err := h.iface.DialTCP(ctx, netip.AddrPortFrom(p.Address, tunnelproto.Port))
	if err != nil {
		return nil, fmt.Errorf("the edge device is not reachable through its tunnel: %w", err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if _, err := c.Write(line); err != nil {
		c.Close()
		return nil, err
	}
	if err := tunnelproto.ReadResponse(c); err != nil {
		c.Close()
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// Close stops the hub.
func (h *Hub) Close() { h.iface.Close() }
