// Package tunnel runs the agent's side of remote access: one userspace
// WireGuard interface per active grant (no root), on which the agent
// accepts connection requests from the control plane's hub and forwards
// them to the machine-network targets the grant allows, through ordinary
// sockets.
//
// A tunnel lives from a verified TunnelUp command until TunnelDown, its
// expiry, or agent shutdown, whichever comes first; ending it closes every
// connection through it.
package tunnel

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gantry-iot/gantry/pkg/tunnelproto"
	"github.com/gantry-iot/gantry/pkg/wg"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
)

// Limits.
const (
	MaxTunnels        = 8
	MaxTargets        = 64
	MaxConnsPerTunnel = 64
)

// Options configure a Manager.
type Options struct {
	Logger *slog.Logger
	// Consent, if set, must return nil for each new connection (local
	// consent: a key switch or a file that reads "on").
	Consent func() error
	// ListenPort is the UDP port of tunnel interfaces (0: a free port).
	ListenPort int
	// DialTimeout bounds connecting to a target (default 5 s).
	DialTimeout time.Duration
	// Now is the clock (tests).
	Now func() time.Time
	// Dial connects to a target (default: a net.Dialer). Tests use it to
	// map a template's machine-network addresses onto loopback servers.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// UDPIdle ends an SSC UDP flow after this long without traffic
	// (default DefaultUDPIdle).
	UDPIdle time.Duration
	// OnFlow, if set, receives each ended SSC flow's summary (it must not
	// block). Userspace mode only: in kernel_tun mode the kernel forwards
	// and the agent sees no flows.
	OnFlow func(FlowSummary)
	// SSCMode is what carries SSC grants (default SSCUserspace). With
	// SSCKernelTUN, New checks the host (TUN device, CAP_NET_ADMIN,
	// nf_tables, ip_forward) and removes a crashed run's leftovers; if the
	// check fails it logs why and SSC grants are refused with that error
	// (KernelTUNErr), while grants without SSC still work.
	SSCMode SSCMode
}

// Stats are the manager's counters.
type Stats struct {
	TunnelsUp, TunnelsDown, ConnsOpened, ConnsRefused atomic.Int64
	BytesToTarget, BytesFromTarget                    atomic.Int64
	// Secure Service Connect flows (TCP connections and UDP flows routed
	// to the machine network) opened and refused.
	FlowsOpened, FlowsRefused atomic.Int64
}

// Manager owns the agent's tunnels. Safe for concurrent use.
type Manager struct {
	opts Options
	log  *slog.Logger

	mu      sync.Mutex
	tunnels map[string]*tunnel
	closed  bool
	kernel  *kernelNet // SSCKernelTUN only

	Stats Stats
}

// New returns a Manager.
func New(opts Options) *Manager {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 5 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Dial == nil {
		var d net.Dialer
		opts.Dial = d.DialContext
	}
	m := &Manager{opts: opts, log: opts.Logger, tunnels: map[string]*tunnel{}}
	if opts.SSCMode == SSCKernelTUN {
		m.kernel = newKernelNet(m.log, defaultKernelCheck)
	}
	return m
}

// KernelTUNErr is why the kernel_tun mode cannot work on this host (nil if
// it can, or in userspace mode).
func (m *Manager) KernelTUNErr() error {
	if m.kernel == nil {
		return nil
	}
	return m.kernel.err
}

type tunnel struct {
	grant   string
	targets map[string]bool
	iface   *wg.Interface
	ln      net.Listener
	timer   *time.Timer
	ssc     sscSpec
	kt      *kernelTun   // kernel_tun mode: the TUN under iface
	refused atomic.Int64 // SSC flows refused, for log rate limiting

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	flows  int // SSC flows in progress
	closed bool
	wg     sync.WaitGroup
}

// spec is a validated TunnelUp.
type spec struct {
	grant             string
	priv, hubPub, psk wg.Key
	endpoint          netip.AddrPort
	addr, hubAddr     netip.Addr
	targets           map[string]bool
	expires           time.Time
	ssc               sscSpec
}

func parse(m *gantryv1.TunnelUp, now time.Time) (spec, error) {
	var s spec
	var err error
	if s.grant = m.GetGrantId(); s.grant == "" || len(s.grant) > 64 || strings.ContainsAny(s.grant, " \n\t") {
		return s, errors.New("tunnel_up: invalid grant_id")
	}
	if s.priv, err = wg.KeyFromBytes(m.GetPrivateKey()); err != nil {
		return s, fmt.Errorf("tunnel_up: private_key: %w", err)
	}
	if s.hubPub, err = wg.KeyFromBytes(m.GetHubPublicKey()); err != nil {
		return s, fmt.Errorf("tunnel_up: hub_public_key: %w", err)
	}
	if s.psk, err = wg.KeyFromBytes(m.GetPresharedKey()); err != nil {
		return s, fmt.Errorf("tunnel_up: preshared_key: %w", err)
	}
	ua, err := net.ResolveUDPAddr("udp", m.GetHubEndpoint())
	if err != nil {
		return s, fmt.Errorf("tunnel_up: hub_endpoint %q: %w", m.GetHubEndpoint(), err)
	}
	s.endpoint = netip.AddrPortFrom(ua.AddrPort().Addr().Unmap(), ua.AddrPort().Port())
	if s.addr, err = netip.ParseAddr(m.GetAddress()); err != nil || !s.addr.Is4() {
		return s, fmt.Errorf("tunnel_up: address %q is not an IPv4 address", m.GetAddress())
	}
	if s.hubAddr, err = netip.ParseAddr(m.GetHubAddress()); err != nil || !s.hubAddr.Is4() || s.hubAddr == s.addr {
		return s, fmt.Errorf("tunnel_up: hub_address %q is not a distinct IPv4 address", m.GetHubAddress())
	}
	if s.ssc, err = parseSSC(m); err != nil {
		return s, err
	}
	if n := len(m.GetTargets()); (n == 0 && len(s.ssc.subnets) == 0) || n > MaxTargets {
		return s, fmt.Errorf("tunnel_up: 1..%d targets needed (or SSC subnets), got %d", MaxTargets, n)
	}
	s.targets = map[string]bool{}
	for _, t := range m.GetTargets() {
		if err := tunnelproto.CheckTarget(t); err != nil {
			return s, fmt.Errorf("tunnel_up: %w", err)
		}
		s.targets[t] = true
	}
	s.expires = m.GetExpiresAt().AsTime()
	if m.GetExpiresAt() == nil || !s.expires.After(now) {
		return s, errors.New("tunnel_up: the grant has already expired")
	}
	return s, nil
}

// Up brings up (or replaces) the tunnel of a grant.
func (m *Manager) Up(msg *gantryv1.TunnelUp) error {
	s, err := parse(msg, m.opts.Now())
	if err != nil {
		return err
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return errors.New("the agent is shutting down")
	}
	old := m.tunnels[s.grant]
	delete(m.tunnels, s.grant)
	if old == nil && len(m.tunnels) >= MaxTunnels {
		m.mu.Unlock()
		return fmt.Errorf("at most %d tunnels at once", MaxTunnels)
	}
	m.mu.Unlock()
	if old != nil {
		old.close()
	}
	// What sits under the WireGuard device: its own gVisor stack, or for
	// SSC grants in kernel_tun mode a kernel TUN interface.
	wcfg := wg.Config{PrivateKey: s.priv, Address: s.addr, ListenPort: m.opts.ListenPort, Logger: m.log.With("grant", s.grant)}
	var kt *kernelTun
	if m.kernel != nil && len(s.ssc.subnets) > 0 {
		if kt, err = m.kernel.up(s, m.opts.Consent); err != nil {
			return err
		}
		wcfg.TUN = kt.dev
	}
	iface, err := wg.New(wcfg)
	if err != nil {
		if kt != nil {
			kt.close()
		}
		return err
	}
	// The listener and the router's handlers are in place before the hub
	// is a peer: gVisor's handler table must not change while packets
	// flow.
	var ln net.Listener
	if kt != nil {
		ln, err = kt.listen(tunnelproto.Port)
	} else {
		ln, err = iface.ListenTCP(tunnelproto.Port)
	}
	if err != nil {
		iface.Close()
		if kt != nil {
			kt.close()
		}
		return fmt.Errorf("tunnel: listen: %w", err)
	}
	t := &tunnel{grant: s.grant, targets: s.targets, iface: iface, ln: ln, ssc: s.ssc, kt: kt, conns: map[net.Conn]struct{}{}}
	if len(s.ssc.subnets) > 0 && kt == nil {
		if err := m.startRouter(t); err != nil {
			t.close()
			return err
		}
	}
	allowed := []netip.Prefix{netip.PrefixFrom(s.hubAddr, 32)}
	if len(s.ssc.subnets) > 0 {
		allowed = append(allowed, s.ssc.clients) // engineers' packets come through the hub
	}
	if err := iface.SetPeer(wg.Peer{PublicKey: s.hubPub, PresharedKey: s.psk, Endpoint: s.endpoint,
		AllowedIPs: allowed, KeepaliveSeconds: 25}); err != nil {
		t.close()
		return err
	}
	m.mu.Lock()
	if m.closed || m.tunnels[s.grant] != nil {
		m.mu.Unlock()
		t.close()
		return errors.New("tunnel: concurrent change; retry")
	}
	m.tunnels[s.grant] = t
	m.mu.Unlock()
	t.mu.Lock()
	t.timer = time.AfterFunc(s.expires.Sub(m.opts.Now()), func() {
		m.log.Info("tunnel expired", "grant", s.grant)
		m.remove(s.grant, t)
	})
	t.mu.Unlock()
	t.wg.Add(1)
	go m.accept(t)
	m.Stats.TunnelsUp.Add(1)
	mode := SSCUserspace
	if kt != nil {
		mode = SSCKernelTUN
	}
	m.log.Info("tunnel up", "grant", s.grant, "address", s.addr, "hub", s.endpoint, "targets", len(s.targets), "ssc_subnets", len(s.ssc.subnets), "ssc_mode", mode, "expires", s.expires)
	return nil
}

// Down ends a grant's tunnel. Unknown grants are not an error (the
// tunnel may have expired already).
func (m *Manager) Down(grantID string) error {
	m.mu.Lock()
	t := m.tunnels[grantID]
	m.mu.Unlock()
	if t != nil {
		m.remove(grantID, t)
	}
	return nil
}

func (m *Manager) remove(grant string, t *tunnel) {
	m.mu.Lock()
	if m.tunnels[grant] == t {
		delete(m.tunnels, grant)
	}
	m.mu.Unlock()
	if t.close() {
		m.Stats.TunnelsDown.Add(1)
		m.log.Info("tunnel down", "grant", grant)
	}
}

// Active lists the grants with a tunnel.
func (m *Manager) Active() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.tunnels))
	for g := range m.tunnels {
		out = append(out, g)
	}
	return out
}

// Close ends every tunnel.
func (m *Manager) Close() {
	m.mu.Lock()
	m.closed = true
	ts := m.tunnels
	m.tunnels = map[string]*tunnel{}
	m.mu.Unlock()
	for g, t := range ts {
		m.remove(g, t)
	}
}

// close ends the tunnel and waits for its goroutines; it reports whether
// this call closed it.
func (t *tunnel) close() bool {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return false
	}
	t.closed = true
	live := len(t.conns)
	for c := range t.conns {
		c.Close()
	}
	if t.timer != nil {
		t.timer.Stop()
	}
	t.mu.Unlock()
	t.ln.Close()
	if live > 0 {
		// Let the FINs of the closed connections reach the hub before the
		// interface goes away, so the other side learns at once.
		time.Sleep(50 * time.Millisecond)
	}
	t.iface.Close()
	if t.kt != nil {
		t.kt.close()
	}
	t.wg.Wait()
	return true
}

func (t *tunnel) track(c net.Conn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || len(t.conns) >= MaxConnsPerTunnel {
		return false
	}
	t.conns[c] = struct{}{}
	return true
}

func (t *tunnel) untrack(c net.Conn) {
	t.mu.Lock()
	delete(t.conns, c)
	t.mu.Unlock()
	c.Close()
}

func (m *Manager) accept(t *tunnel) {
	defer t.wg.Done()
	for {
		c, err := t.ln.Accept()
		if err != nil {
			return
		}
		if !t.track(c) {
			_ = tunnelproto.WriteErr(c, "too many connections through this tunnel")
			c.Close()
			m.Stats.ConnsRefused.Add(1)
			continue
		}
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			defer t.untrack(c)
			m.serve(t, c)
		}()
	}
}

func (m *Manager) serve(t *tunnel, c net.Conn) {
	_ = c.SetDeadline(m.opts.Now().Add(10 * time.Second))
	req, err := tunnelproto.ReadRequest(c)
	if err != nil {
		m.Stats.ConnsRefused.Add(1)
		m.log.Warn("tunnel request refused", "grant", t.grant, "err", err)
		_ = tunnelproto.WriteErr(c, err.Error())
		return
	}
	refuse := func(reason string) {
		m.Stats.ConnsRefused.Add(1)
		m.log.Warn("tunnel connection refused", "grant", t.grant, "target", req.Target, "reason", reason)
		_ = tunnelproto.WriteErr(c, reason)
	}
	if req.GrantID != t.grant {
		refuse("the request names another grant")
		return
	}
	if !t.targets[req.Target] {
		refuse(fmt.Sprintf("target %s is not allowed by the grant", req.Target))
		return
	}
	if m.opts.Consent != nil {
		if err := m.opts.Consent(); err != nil {
			refuse("local consent missing: " + err.Error())
			return
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), m.opts.DialTimeout)
	tc, err := m.opts.Dial(ctx, "tcp", req.Target)
	cancel()
	if err != nil {
		refuse(fmt.Sprintf("cannot reach %s: %v", req.Target, errors.Unwrap(err)))
		return
	}
	if !t.track(tc) {
		tc.Close()
		return
	}
	defer t.untrack(tc)
	if err := tunnelproto.WriteOK(c); err != nil {
		return
	}
	_ = c.SetDeadline(time.Time{})
	m.Stats.ConnsOpened.Add(1)
	m.log.Info("tunnel connection opened", "grant", t.grant, "target", req.Target)
	up, down := Splice(c, tc)
	m.Stats.BytesToTarget.Add(up)
	m.Stats.BytesFromTarget.Add(down)
	m.log.Info("tunnel connection closed", "grant", t.grant, "target", req.Target, "bytes_to_target", up, "bytes_from_target", down)
}

// Splice copies a→b and b→a until both directions end, then closes
// both. When one side finishes sending, the other side's write half is
// closed (TCP half-close), so answers still flow back; an error in either
// direction closes everything. It returns the bytes copied each way.
func Splice(a, b net.Conn) (aToB, bToA int64) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		bToA = pipe(a, b)
	}()
	aToB = pipe(b, a)
	wg.Wait()
	a.Close()
	b.Close()
	return aToB, bToA
}

// pipe copies src to dst; at src's EOF it half-closes dst, on an error it
// closes both.
func pipe(dst, src net.Conn) int64 {
	n, err := io.Copy(dst, src)
	cw, ok := dst.(interface{ CloseWrite() error })
	if err == nil && ok && cw.CloseWrite() == nil {
		return n
	}
	dst.Close()
	src.Close()
	return n
}

// FileConsent returns a Consent check that requires the file at path to
// read "on" (GPIO value files may also read "1").
func FileConsent(path string, gpio bool) func() error {
	return func() error {
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("cannot read consent input %s: %v", path, errors.Unwrap(err))
		}
		v := strings.TrimSpace(string(b))
		if v == "on" || (gpio && v == "1") {
			return nil
		}
		return fmt.Errorf("consent input %s reads %q, not \"on\"", path, truncate(v, 16))
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
