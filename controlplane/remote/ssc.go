package remote

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/gantry-iot/gantry/controlplane/errkind"
	"github.com/gantry-iot/gantry/pkg/wg"
)

// DefaultSSCPrefix is the pool engineers' Secure Service Connect peers get
// their /32 addresses from, apart from the agents' tunnel network.
var DefaultSSCPrefix = netip.MustParsePrefix("100.97.0.0/16")

// Default limits on SSC configs (engineer peers) held at once.
const (
	DefaultSSCPerGrant = 16
	DefaultSSCPerUser  = 8
)

// SSCKeepalive is the PersistentKeepalive of issued configs: engineers sit
// behind NAT and must keep the mapping open and start the handshake.
const SSCKeepalive = 25

// ErrNoSSCAddress is returned when the engineer address pool is exhausted.
var ErrNoSSCAddress = errkind.New(errkind.Exhausted, "", "no free engineer address for Secure Service Connect; try again when other sessions have ended")

// SSCRequest asks the hub for an engineer peer on a grant.
type SSCRequest struct {
	GrantID string
	UserID  string
	// CaseID and TenantID (the case's tenant) address the session's
	// audit record.
	CaseID, TenantID string
	// PublicKey is the engineer's own key, in base64; empty: the hub
	// generates a key pair and the config carries the private key.
	PublicKey string
	// Subnets are the template's machine subnets; the config routes the
	// virtual subnets they map onto (AllowedIPs).
	Subnets []string
	// Ports is the template's SSC port filter (empty: all).
	Ports []string
}

// SSCConfig is an issued engineer peer and its wg-quick file.
type SSCConfig struct {
	GrantID      string
	Address      netip.Addr
	PublicKey    wg.Key // the engineer's
	PrivateKey   wg.Key // zero unless generated
	Generated    bool
	HubPublicKey wg.Key
	PresharedKey wg.Key
	HubEndpoint  string
	AllowedIPs   []netip.Prefix // the virtual subnets
	// Machine are the machine subnets AllowedIPs map onto (same index).
	Machine []netip.Prefix
}

// WGQuick renders the config as a wg-quick(8) file: no DNS, no routes
// beyond the machine subnets, keepalive for engineers behind NAT.
func (c SSCConfig) WGQuick() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Gantry Secure Service Connect, grant %s\n", c.GrantID)
	for i := range c.AllowedIPs {
		if i < len(c.Machine) {
			fmt.Fprintf(&b, "# machine network %s is reached as %s (same host numbers)\n", c.Machine[i], c.AllowedIPs[i])
		}
	}
	b.WriteString("[Interface]\n")
	if c.Generated {
		fmt.Fprintf(&b, "PrivateKey = %s\n", c.PrivateKey)
	} else {
		fmt.Fprintf(&b, "# PrivateKey = <your private key for %s>\n", c.PublicKey)
	}
	fmt.Fprintf(&b, "Address = %s\n\n", netip.PrefixFrom(c.Address, 32))
	b.WriteString("[Peer]\n")
	fmt.Fprintf(&b, "PublicKey = %s\n", c.HubPublicKey)
	fmt.Fprintf(&b, "PresharedKey = %s\n", c.PresharedKey)
	fmt.Fprintf(&b, "Endpoint = %s\n", c.HubEndpoint)
	as := make([]string, len(c.AllowedIPs))
	for i, a := range c.AllowedIPs {
		as[i] = a.String()
	}
	fmt.Fprintf(&b, "AllowedIPs = %s\n", strings.Join(as, ", "))
	fmt.Fprintf(&b, "PersistentKeepalive = %d\n", SSCKeepalive)
	return b.String()
}

// engineerPeer is one issued SSC config on the hub.
type engineerPeer struct {
	grantID, userID  string
	caseID, tenantID string
	key              wg.Key
	addr             netip.Addr
	issued           time.Time
}

// AddEngineer issues an SSC config: it allocates the engineer a /32 from
// the SSC pool and adds the engineer as a hub peer that may send only
// from that address. The peer lives until RemoveEngineers or
// PruneEngineers drops its grant. Errors carry an errkind for the API.
func (h *Hub) AddEngineer(r SSCRequest) (SSCConfig, error) {
	if r.GrantID == "" || r.UserID == "" {
		return SSCConfig{}, errors.New("hub: SSC request without grant or user")
	}
	if len(r.Subnets) == 0 {
		return SSCConfig{}, errkind.New(errkind.Precondition, "case_id", "the machine model's template lists no machine subnets for SSC")
	}
	var cfg SSCConfig
	if r.PublicKey != "" {
		k, err := wg.ParsePublicKey(r.PublicKey)
		if err != nil {
			return SSCConfig{}, errkind.Invalidf("public_key", "%v", err)
		}
		cfg.PublicKey = k
	} else {
		priv, err := wg.NewPrivateKey()
		if err != nil {
			return SSCConfig{}, err
		}
		cfg.PrivateKey, cfg.PublicKey, cfg.Generated = priv, priv.Public(), true
	}
	psk, err := wg.NewPresharedKey()
	if err != nil {
		return SSCConfig{}, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if cfg.PublicKey == h.pub {
		return SSCConfig{}, errkind.Invalidf("public_key", "that is the hub's own key; give your client's public key")
	}
	for _, p := range h.peers {
		if p.key == cfg.PublicKey {
			return SSCConfig{}, errkind.Invalidf("public_key", "the key is already in use; generate a new one with `wg genkey | wg pubkey`")
		}
	}
	perGrant, perUser := 0, 0
	for k, e := range h.engineers {
		if k == cfg.PublicKey {
			return SSCConfig{}, errkind.New(errkind.Conflict, "public_key", "a config with this public key is already active; use it, or give a new key")
		}
		if e.grantID == r.GrantID {
			perGrant++
		}
		if e.userID == r.UserID {
			perUser++
		}
	}
	if perGrant >= h.cfg.SSCPerGrant {
		return SSCConfig{}, errkind.New(errkind.Exhausted, "case_id", "this grant already has %d SSC configs, the maximum; reuse one or deactivate and activate remote access again", perGrant)
	}
	if perUser >= h.cfg.SSCPerUser {
		return SSCConfig{}, errkind.New(errkind.Exhausted, "", "you already hold %d SSC configs, the maximum; reuse one (configs end with their grant)", perUser)
	}
	gn, err := h.grantNetLocked(r.GrantID, r.Subnets, r.Ports)
	if err != nil {
		return SSCConfig{}, err
	}
	if old := h.peers[r.GrantID]; old != nil && !slices.Equal(old.sscVirtual(), gn.virtual) {
		// The template changed since the agent got its tunnel; the agent's
		// next TunnelUp (re-key) carries the new mapping.
		h.log.Warn("ssc subnets changed since the tunnel came up; engineers reach the machine after the next tunnel re-key", "grant", r.GrantID)
	}
	addr, err := h.sscPool.alloc()
	if err != nil {
		h.gcGrantNetLocked(r.GrantID)
		return SSCConfig{}, err
	}
	if err := h.iface.SetPeer(wg.Peer{PublicKey: cfg.PublicKey, PresharedKey: psk, AllowedIPs: []netip.Prefix{netip.PrefixFrom(addr, 32)}}); err != nil {
		h.sscPool.free(addr)
		h.gcGrantNetLocked(r.GrantID)
		return SSCConfig{}, err
	}
	h.engineers[cfg.PublicKey] = &engineerPeer{grantID: r.GrantID, userID: r.UserID, caseID: r.CaseID, tenantID: r.TenantID, key: cfg.PublicKey, addr: addr, issued: time.Now()}
	h.publishLocked()
	cfg.GrantID, cfg.Address, cfg.HubPublicKey, cfg.PresharedKey, cfg.HubEndpoint = r.GrantID, addr, h.pub, psk, h.Endpoint()
	cfg.AllowedIPs, cfg.Machine = slices.Clone(gn.virtual), slices.Clone(gn.machine)
	h.log.Info("ssc engineer peer added", "grant", r.GrantID, "user", r.UserID, "address", addr, "key_generated", cfg.Generated)
	return cfg, nil
}

// RemoveEngineers removes every engineer peer of a grant and returns how
// many there were.
func (h *Hub) RemoveEngineers(grantID string) int {
	return h.pruneEngineers(func(e *engineerPeer) bool { return e.grantID == grantID })
}

// PruneEngineers removes the engineer peers of every grant not in active,
// so a config never outlives its grant even if the grant ended before the
// tunnel manager saw it. active is the list of grants active at asOf;
// peers issued after asOf are kept (their grant may be newer than the
// list).
func (h *Hub) PruneEngineers(active map[string]bool, asOf time.Time) int {
	return h.pruneEngineers(func(e *engineerPeer) bool { return !active[e.grantID] && e.issued.Before(asOf) })
}

func (h *Hub) pruneEngineers(drop func(*engineerPeer) bool) int {
	var ended []SSCSession
	defer func() {
		// Audit outside the hub's lock: it writes to the store.
		for _, s := range ended {
			if h.cfg.SSCAudit != nil {
				h.cfg.SSCAudit(s)
			}
		}
	}()
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	var stats map[wg.Key]wg.PeerStats
	for k, e := range h.engineers {
		if !drop(e) {
			continue
		}
		if stats == nil {
			stats = h.iface.Stats()
		}
		// The session's totals as the hub saw them (flows are summarised
		// by the agent, which terminates them).
		h.log.Info("ssc engineer peer removed", "grant", e.grantID, "user", e.userID, "address", e.addr,
			"bytes_from_engineer", stats[k].RxBytes, "bytes_to_engineer", stats[k].TxBytes, "issued", e.issued.UTC().Format(time.RFC3339))
		if err := h.iface.RemovePeer(k); err != nil {
			h.log.Error("hub: remove engineer peer", "grant", e.grantID, "err", err)
			continue
		}
		delete(h.engineers, k)
		s := SSCSession{GrantID: e.grantID, UserID: e.userID, CaseID: e.caseID, TenantID: e.tenantID, Address: e.addr, Issued: e.issued, Ended: time.Now()}
		s.Flows, s.Other, s.OtherFlows = h.fwd.flows.take(e.addr)
		ended = append(ended, s)
		h.sscPool.free(e.addr)
		h.gcGrantNetLocked(e.grantID)
		n++
	}
	if n > 0 {
		h.publishLocked()
	}
	return n
}

func (p *hubPeer) sscVirtual() []netip.Prefix {
	var out []netip.Prefix
	for _, m := range p.SSC {
		out = append(out, m.Virtual)
	}
	return out
}

// Engineers returns the public keys of a grant's engineer peers.
func (h *Hub) Engineers(grantID string) []wg.Key {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []wg.Key
	for k, e := range h.engineers {
		if e.grantID == grantID {
			out = append(out, k)
		}
	}
	return out
}

// HasPeerKey reports whether the hub's WireGuard device has a peer with
// this public key (what decides whether its packets are accepted).
func (h *Hub) HasPeerKey(k wg.Key) bool {
	_, ok := h.iface.Stats()[k]
	return ok
}

// PeerHandshake returns the last handshake of the peer with this public
// key (zero: none, or no such peer).
func (h *Hub) PeerHandshake(k wg.Key) time.Time {
	if s, ok := h.iface.Stats()[k]; ok && s.LastHandshakeUnix > 0 {
		return time.Unix(s.LastHandshakeUnix, 0)
	}
	return time.Time{}
}

// pool hands out single addresses of a prefix, never its network or
// broadcast address. Not safe for concurrent use (the hub's lock guards it).
type pool struct {
	prefix netip.Prefix
	used   map[netip.Addr]bool
	next   netip.Addr
	err    error // returned when exhausted
}

func newPool(p netip.Prefix, exhausted error) *pool {
	p = p.Masked()
	return &pool{prefix: p, used: map[netip.Addr]bool{}, next: p.Addr().Next(), err: exhausted}
}

func (p *pool) alloc() (netip.Addr, error) {
	for range 1 << (32 - p.prefix.Bits()) {
		a := p.next
		if p.next = a.Next(); !p.prefix.Contains(p.next) {
			p.next = p.prefix.Addr().Next()
		}
		if !p.prefix.Contains(a) || a == p.prefix.Addr() || !p.prefix.Contains(a.Next()) || p.used[a] {
			continue
		}
		p.used[a] = true
		return a, nil
	}
	return netip.Addr{}, p.err
}

func (p *pool) free(a netip.Addr) { delete(p.used, a) }
