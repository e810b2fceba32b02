package remote

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gantry-iot/gantry/controlplane/errkind"
	"github.com/gantry-iot/gantry/controlplane/store"
	"github.com/gantry-iot/gantry/pkg/wg"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
)

func newTestHub(t testing.TB, cfg HubConfig) *Hub {
	t.Helper()
	h, err := NewHub(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return h
}

// parseWGQuick reads a wg-quick file into section → key → value (the
// values of repeated keys are joined with ", ").
func parseWGQuick(t testing.TB, s string) map[string]map[string]string {
	t.Helper()
	out := map[string]map[string]string{}
	var sec map[string]string
	for line := range strings.SplitSeq(s, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "[") {
			name := strings.Trim(line, "[]")
			if out[name] != nil {
				t.Fatalf("config has two [%s] sections:\n%s", name, s)
			}
			sec = map[string]string{}
			out[name] = sec
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || sec == nil {
			t.Fatalf("config line %q is not key = value inside a section", line)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		if sec[k] != "" {
			sec[k] += ", " + v
		} else {
			sec[k] = v
		}
	}
	return out
}

func mustKey(t testing.TB, s string) wg.Key {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatalf("key %q: %v", s, err)
	}
	k, err := wg.KeyFromBytes(b)
	if err != nil {
		t.Fatalf("key %q: %v", s, err)
	}
	return k
}

// TestSSCConfigIsUsable: the generated config is a wg-quick file that
// wg-quick accepts, its private key belongs to the public key the hub
// holds, and a WireGuard peer configured from exactly its values
// completes a handshake with the hub.
func TestSSCConfigIsUsable(t *testing.T) {
	hub := newTestHub(t, HubConfig{})
	cfg, err := hub.AddEngineer(SSCRequest{GrantID: "g1", UserID: "u1", Subnets: []string{"10.0.0.0/24", "192.168.5.0/24"}})
	if err != nil {
		t.Fatal(err)
	}
	text := cfg.WGQuick()
	conf := parseWGQuick(t, text)
	iface, peer := conf["Interface"], conf["Peer"]
	if len(conf) != 2 || iface == nil || peer == nil {
		t.Fatalf("want exactly [Interface] and [Peer]:\n%s", text)
	}
	if _, ok := iface["DNS"]; ok {
		t.Errorf("config sets DNS:\n%s", text)
	}
	addr, err := netip.ParsePrefix(iface["Address"])
	if err != nil || addr.Bits() != 32 || !DefaultSSCPrefix.Contains(addr.Addr()) || DefaultPrefix.Contains(addr.Addr()) {
		t.Errorf("Address %q: want a /32 from %s: %v", iface["Address"], DefaultSSCPrefix, err)
	}
	// AllowedIPs are the virtual subnets the machine subnets map onto:
	// same sizes, inside 100.64.0.0/10, apart from the hub's pools.
	var allowed []string
	for i, m := range []string{"10.0.0.0/24", "192.168.5.0/24"} {
		if cfg.Machine[i].String() != m {
			t.Errorf("machine subnet %d = %s, want %s", i, cfg.Machine[i], m)
		}
		v := cfg.AllowedIPs[i]
		if v.Bits() != 24 || !VirtualPrefix.Contains(v.Addr()) || v.Overlaps(DefaultPrefix) || v.Overlaps(DefaultSSCPrefix) {
			t.Errorf("virtual subnet %s for %s", v, m)
		}
		allowed = append(allowed, v.String())
		if !strings.Contains(text, "# machine network "+m+" is reached as "+v.String()) {
			t.Errorf("config does not say how %s maps:\n%s", m, text)
		}
	}
	if cfg.AllowedIPs[0].Overlaps(cfg.AllowedIPs[1]) {
		t.Errorf("virtual subnets overlap: %v", cfg.AllowedIPs)
	}
	if peer["AllowedIPs"] != strings.Join(allowed, ", ") || peer["PersistentKeepalive"] != "25" || peer["Endpoint"] != hub.Endpoint() {
		t.Errorf("peer section %v", peer)
	}
	if mustKey(t, peer["PublicKey"]) != hub.pub {
		t.Error("PublicKey is not the hub's")
	}
	priv := mustKey(t, iface["PrivateKey"])
	if priv.Public() != cfg.PublicKey || !hub.HasPeerKey(cfg.PublicKey) {
		t.Error("the hub does not hold the public key of the config's private key")
	}

	t.Run("wg-quick strip and wg pubkey", func(t *testing.T) {
		wgq, err1 := exec.LookPath("wg-quick")
		wgb, err2 := exec.LookPath("wg")
		if err1 != nil || err2 != nil {
			t.Skip("SKIP: wg-quick or wg not installed (Debian wireguard-tools); config not checked by the real tools")
		}
		path := filepath.Join(t.TempDir(), "gantry0.conf")
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(wgq, "strip", path).CombinedOutput()
		if err != nil {
			t.Fatalf("wg-quick strip: %v\n%s", err, out)
		}
		// wg-quick's own keys are gone, the rest is what wg(8) reads.
		for _, gone := range []string{"Address", "DNS"} {
			if bytes.Contains(out, []byte(gone+" =")) {
				t.Errorf("stripped config still has %s:\n%s", gone, out)
			}
		}
		if !bytes.Contains(out, []byte("PrivateKey = "+iface["PrivateKey"])) || !bytes.Contains(out, []byte("AllowedIPs = "+strings.Join(allowed, ", "))) {
			t.Errorf("stripped config:\n%s", out)
		}
		cmd := exec.Command(wgb, "pubkey")
		cmd.Stdin = strings.NewReader(iface["PrivateKey"] + "\n")
		pub, err := cmd.Output()
		if err != nil {
			t.Fatalf("wg pubkey rejects the private key: %v", err)
		}
		if strings.TrimSpace(string(pub)) != cfg.PublicKey.String() {
			t.Errorf("wg pubkey = %s, hub holds %s", pub, cfg.PublicKey)
		}
		for _, k := range []string{peer["PublicKey"], peer["PresharedKey"]} {
			cmd := exec.Command(wgb, "pubkey") // any valid 32-byte base64 key parses
			cmd.Stdin = strings.NewReader(k + "\n")
			if err := cmd.Run(); err != nil {
				t.Errorf("wg rejects key %s: %v", k, err)
			}
		}
	})

	t.Run("wg setconf", func(t *testing.T) {
		// A real userspace WireGuard interface (Debian wireguard-go) in a
		// network namespace of its own accepts the stripped config.
		for _, bin := range []string{"wg-quick", "wg", "wireguard-go", "unshare", "ip"} {
			if _, err := exec.LookPath(bin); err != nil {
				t.Skipf("SKIP: %s not installed; wg setconf not checked", bin)
			}
		}
		if os.Geteuid() != 0 {
			t.Skip("SKIP: needs root for a network namespace and a TUN device; wg setconf not checked")
		}
		dir := t.TempDir()
		path := filepath.Join(dir, "gantry0.conf")
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("gssc%d", os.Getpid()%100000)
		script := `set -e
ip link set lo up
wg-quick strip "$1" > "$3"
wireguard-go "$2" 2>/dev/null
trap 'ip link del "$2" 2>/dev/null || true' EXIT
wg setconf "$2" "$3"
wg show "$2" dump`
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, "unshare", "--net", "sh", "-c", script, "sh", path, name, filepath.Join(dir, "stripped.conf")).CombinedOutput()
		if err != nil {
			t.Fatalf("wg setconf in a namespace: %v\n%s", err, out)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(lines) != 2 {
			t.Fatalf("wg show dump: want the interface and one peer:\n%s", out)
		}
		ifc, pr := strings.Fields(lines[0]), strings.Fields(lines[1])
		if len(ifc) < 2 || ifc[1] != cfg.PublicKey.String() {
			t.Errorf("interface public key %v, hub holds %s", ifc, cfg.PublicKey)
		}
		if len(pr) < 8 || pr[0] != hub.pub.String() || pr[1] != cfg.PresharedKey.String() || pr[2] != hub.Endpoint() || pr[3] != strings.Join(allowed, ",") || pr[7] != "25" {
			t.Errorf("peer as wg sees it: %v", pr)
		}
	})

	t.Run("handshake", func(t *testing.T) {
		ep, err := netip.ParseAddrPort(peer["Endpoint"])
		if err != nil {
			t.Fatal(err)
		}
		var allowed []netip.Prefix
		for s := range strings.SplitSeq(peer["AllowedIPs"], ",") {
			allowed = append(allowed, netip.MustParsePrefix(strings.TrimSpace(s)))
		}
		eng, err := wg.New(wg.Config{PrivateKey: priv, Address: addr.Addr()})
		if err != nil {
			t.Fatal(err)
		}
		defer eng.Close()
		if err := eng.SetPeer(wg.Peer{PublicKey: mustKey(t, peer["PublicKey"]), PresharedKey: mustKey(t, peer["PresharedKey"]),
			Endpoint: ep, AllowedIPs: allowed, KeepaliveSeconds: 25}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for hub.PeerHandshake(cfg.PublicKey).IsZero() {
			if time.Now().After(deadline) {
				t.Fatal("no handshake between the engineer peer and the hub within 10 s")
			}
			time.Sleep(20 * time.Millisecond)
		}
		if eng.Stats()[hub.pub].LastHandshakeUnix == 0 {
			t.Error("the engineer side saw no handshake")
		}
	})
}

func TestSSCPublicKeys(t *testing.T) {
	hub := newTestHub(t, HubConfig{})
	agent, err := hub.AddPeer("g1")
	if err != nil {
		t.Fatal(err)
	}
	own, _ := wg.NewPrivateKey()
	b64 := func(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
	lowOrder := make([]byte, 32)
	lowOrder[0] = 1
	for _, tc := range []struct {
		name, key string
		kind      *errkind.Kind
		want      string
	}{
		{"not base64", "not-a-key!", errkind.Invalid, "base64"},
		{"url-safe base64", strings.NewReplacer("+", "-", "/", "_").Replace(b64(bytes.Repeat([]byte{0xfb, 0xff, 0xbf}, 11)[:32])), errkind.Invalid, "base64"},
		{"31 bytes", b64(make([]byte, 31)), errkind.Invalid, "32 bytes"},
		{"33 bytes", b64(bytes.Repeat([]byte{7}, 33)), errkind.Invalid, "32 bytes"},
		{"all zero", b64(make([]byte, 32)), errkind.Invalid, "all zeros"},
		{"low-order point", b64(lowOrder), errkind.Invalid, "low-order"},
		{"hub's key", hub.pub.String(), errkind.Invalid, "hub's own key"},
		{"agent's key", agent.PrivateKey.Public().String(), errkind.Invalid, "already in use"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := hub.AddEngineer(SSCRequest{GrantID: "g1", UserID: "u1", PublicKey: tc.key, Subnets: []string{"10.0.0.0/24"}})
			if errkind.Of(err) != tc.kind || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want %v mentioning %q", err, tc.kind, tc.want)
			}
		})
	}
	if n := len(hub.Engineers("g1")); n != 0 {
		t.Fatalf("refused keys left %d peers", n)
	}
	cfg, err := hub.AddEngineer(SSCRequest{GrantID: "g1", UserID: "u1", PublicKey: own.Public().String() + "\n", Subnets: []string{"10.0.0.0/24"}})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Generated || cfg.PublicKey != own.Public() || !hub.HasPeerKey(own.Public()) {
		t.Errorf("own key: %+v", cfg)
	}
	conf := parseWGQuick(t, cfg.WGQuick())
	if _, ok := conf["Interface"]["PrivateKey"]; ok {
		t.Error("a config for the engineer's own key carries a private key")
	}
	if _, err := hub.AddEngineer(SSCRequest{GrantID: "g1", UserID: "u2", PublicKey: own.Public().String(), Subnets: []string{"10.0.0.0/24"}}); errkind.Of(err) != errkind.Conflict {
		t.Errorf("same key twice: %v", err)
	}
}

func TestSSCPoolAndLimits(t *testing.T) {
	sub := []string{"10.0.0.0/24"}
	t.Run("pool exhausted", func(t *testing.T) {
		hub := newTestHub(t, HubConfig{SSCPrefix: netip.MustParsePrefix("100.97.0.0/30")}) // 2 usable addresses
		a, err1 := hub.AddEngineer(SSCRequest{GrantID: "g1", UserID: "u1", Subnets: sub})
		b, err2 := hub.AddEngineer(SSCRequest{GrantID: "g2", UserID: "u2", Subnets: sub})
		if err1 != nil || err2 != nil || a.Address == b.Address {
			t.Fatalf("%v %v %v %v", a.Address, b.Address, err1, err2)
		}
		_, err := hub.AddEngineer(SSCRequest{GrantID: "g3", UserID: "u3", Subnets: sub})
		if !errors.Is(err, ErrNoSSCAddress) || errkind.Of(err) != errkind.Exhausted {
			t.Fatalf("third config from a /30: %v", err)
		}
		if n := hub.RemoveEngineers("g1"); n != 1 || hub.HasPeerKey(a.PublicKey) {
			t.Fatalf("RemoveEngineers = %d, peer still there: %v", n, hub.HasPeerKey(a.PublicKey))
		}
		c, err := hub.AddEngineer(SSCRequest{GrantID: "g3", UserID: "u3", Subnets: sub})
		if err != nil || c.Address != a.Address {
			t.Errorf("freed address not reused: %v %v", c.Address, err)
		}
	})
	t.Run("per grant and per user", func(t *testing.T) {
		hub := newTestHub(t, HubConfig{SSCPerGrant: 3, SSCPerUser: 2})
		for _, u := range []string{"u1", "u1", "u2"} {
			if _, err := hub.AddEngineer(SSCRequest{GrantID: "g1", UserID: u, Subnets: sub}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := hub.AddEngineer(SSCRequest{GrantID: "g1", UserID: "u3", Subnets: sub}); errkind.Of(err) != errkind.Exhausted || !strings.Contains(err.Error(), "grant") {
			t.Errorf("4th config on a grant limited to 3: %v", err)
		}
		if _, err := hub.AddEngineer(SSCRequest{GrantID: "g2", UserID: "u1", Subnets: sub}); errkind.Of(err) != errkind.Exhausted || !strings.Contains(err.Error(), "you already hold") {
			t.Errorf("3rd config of a user limited to 2: %v", err)
		}
		if _, err := hub.AddEngineer(SSCRequest{GrantID: "g2", UserID: "u2", Subnets: sub}); err != nil {
			t.Errorf("u2's 2nd config: %v", err)
		}
	})
	t.Run("pool configuration", func(t *testing.T) {
		for _, p := range []string{"100.96.128.0/24", "100.97.0.0/31", "fd00::/64"} {
			if h, err := NewHub(HubConfig{SSCPrefix: netip.MustParsePrefix(p)}); err == nil {
				h.Close()
				t.Errorf("SSC pool %s accepted", p)
			}
		}
	})
	t.Run("bad subnets", func(t *testing.T) {
		hub := newTestHub(t, HubConfig{})
		for _, s := range [][]string{nil, {"10.0.0.0"}, {"fd00::/64"}} {
			if _, err := hub.AddEngineer(SSCRequest{GrantID: "g1", UserID: "u1", Subnets: s}); errkind.Of(err) != errkind.Precondition {
				t.Errorf("subnets %v: %v", s, err)
			}
		}
	})
}

type fakeGrants struct {
	mu sync.Mutex
	gs []store.Grant
}

func (f *fakeGrants) set(gs ...store.Grant) {
	f.mu.Lock()
	f.gs = gs
	f.mu.Unlock()
}

func (f *fakeGrants) ListActiveGrants(context.Context, time.Time) ([]store.Grant, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]store.Grant(nil), f.gs...), nil
}

func (f *fakeGrants) GrantTargets(context.Context, store.Grant) ([]string, error) {
	return []string{"10.0.0.10:5900"}, nil
}

func (f *fakeGrants) GrantSSC(context.Context, store.Grant) (subnets, ports []string, err error) {
	return []string{"10.0.0.0/24"}, nil, nil
}

type ackSender struct{}

func (ackSender) Send(context.Context, string, *gantryv1.Command, time.Duration) (*gantryv1.CommandAck, error) {
	return &gantryv1.CommandAck{Ok: true}, nil
}

// TestSSCPeersEndWithGrant: when a grant ends the tunnel manager removes
// its engineer peers from the hub within 1 s, together with the agent
// peer; other grants' engineers stay; a grant that ended before the
// manager ever saw it loses its engineers too.
func TestSSCPeersEndWithGrant(t *testing.T) {
	hub := newTestHub(t, HubConfig{})
	src := &fakeGrants{}
	exp := time.Now().Add(time.Hour)
	src.set(store.Grant{ID: "g1", DeviceID: "d1", ExpiresAt: exp}, store.Grant{ID: "g2", DeviceID: "d2", ExpiresAt: exp})
	tun := NewTunnels(hub, src, ackSender{}, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { tun.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	if err := tun.Wait(wctx, "g1"); err != nil {
		t.Fatal(err)
	}
	sub := []string{"10.0.0.0/24"}
	var g1 []wg.Key
	for range 3 {
		c, err := hub.AddEngineer(SSCRequest{GrantID: "g1", UserID: "u1", Subnets: sub})
		if err != nil {
			t.Fatal(err)
		}
		g1 = append(g1, c.PublicKey)
	}
	other, err := hub.AddEngineer(SSCRequest{GrantID: "g2", UserID: "u1", Subnets: sub})
	if err != nil {
		t.Fatal(err)
	}
	stale, err := hub.AddEngineer(SSCRequest{GrantID: "never-seen", UserID: "u2", Subnets: sub})
	if err != nil {
		t.Fatal(err)
	}

	src.set(store.Grant{ID: "g2", DeviceID: "d2", ExpiresAt: exp})
	tun.Kick()
	start := time.Now()
	for {
		left := 0
		for _, k := range append(g1, stale.PublicKey) {
			if hub.HasPeerKey(k) {
				left++
			}
		}
		if left == 0 {
			break
		}
		if time.Since(start) > time.Second {
			t.Fatalf("%d engineer peers of ended grants still on the hub after 1 s", left)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("engineer peers removed %v after the grant ended", time.Since(start).Round(time.Millisecond))
	if hub.HasPeer("g1") || len(hub.Engineers("g1")) != 0 {
		t.Error("g1's agent peer or engineer bookkeeping left")
	}
	if !hub.HasPeerKey(other.PublicKey) {
		t.Error("an active grant's engineer peer was removed")
	}
}

// stuckSender never gets an ack for its first TunnelUp of a grant (the
// agent was reconnecting and the command went to the old connection); it
// records how many sends of one grant overlapped and the last key sent.
type stuckSender struct {
	mu       sync.Mutex
	calls    int
	inflight int
	overlap  int
	lastKey  wg.Key
}

func (s *stuckSender) Send(ctx context.Context, _ string, cmd *gantryv1.Command, _ time.Duration) (*gantryv1.CommandAck, error) {
	s.mu.Lock()
	s.calls++
	first := s.calls == 1
	s.inflight++
	s.overlap = max(s.overlap, s.inflight)
	priv, err := wg.KeyFromBytes(cmd.GetTunnelUp().GetPrivateKey())
	if err == nil {
		s.lastKey = priv.Public()
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inflight--
		s.mu.Unlock()
	}()
	if first {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return &gantryv1.CommandAck{Ok: true}, nil
}

// TestTunnelUpResentOnReconnect: a device that comes online while its
// TunnelUp is still waiting for an ack gets a fresh TunnelUp at once; the
// sends never overlap, and the hub ends up with the key the agent was
// sent last (overlapping sends could leave the two sides with different
// keys, and no handshake would ever succeed).
func TestTunnelUpResentOnReconnect(t *testing.T) {
	hub := newTestHub(t, HubConfig{})
	src := &fakeGrants{}
	src.set(store.Grant{ID: "g1", DeviceID: "d1", ExpiresAt: time.Now().Add(time.Hour)})
	snd := &stuckSender{}
	tun := NewTunnels(hub, src, snd, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { tun.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	for {
		snd.mu.Lock()
		n := snd.calls
		snd.mu.Unlock()
		if n > 0 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	start := time.Now()
	tun.DeviceOnline("d1")
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	if err := tun.Wait(wctx, "g1"); err != nil {
		t.Fatal(err)
	}
	t.Logf("tunnel acknowledged %v after the device came online", time.Since(start).Round(time.Millisecond))
	if took := time.Since(start); took > time.Second {
		t.Errorf("re-send after reconnect took %v; the stale send should have been cancelled", took)
	}
	snd.mu.Lock()
	defer snd.mu.Unlock()
	if snd.overlap != 1 {
		t.Errorf("%d TunnelUps of one grant in flight at once, want 1", snd.overlap)
	}
	hub.mu.Lock()
	p := hub.peers["g1"]
	hub.mu.Unlock()
	if p == nil || p.key != snd.lastKey {
		t.Errorf("the hub's peer key is not the one last sent to the agent")
	}
}
