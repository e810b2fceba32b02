package remote

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gantry-iot/gantry/agent/tunnel"
	"github.com/gantry-iot/gantry/controlplane/cases"
	"github.com/gantry-iot/gantry/pkg/wsconn"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
)

// rig is a hub, an agent tunnel manager (in process, no MQTT: the test
// hands the TunnelUp over directly), a TCP echo target and the session
// broker behind an httptest server.
type rig struct {
	hub      *Hub
	agent    *tunnel.Manager
	sessions *Sessions
	srv      *httptest.Server
	target   string
	deny     atomic.Value // error returned by Recheck
	audits   atomic.Int64
}

func echo(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				io.Copy(c, c)
				c.Close()
			}()
		}
	}()
	return l.Addr().String()
}

func newRig(t testing.TB) *rig { return newRigTarget(t, echo(t)) }

func newRigTarget(t testing.TB, target string) *rig {
	t.Helper()
	hub, err := NewHub(HubConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hub.Close)
	r := &rig{hub: hub, agent: tunnel.New(tunnel.Options{}), target: target}
	t.Cleanup(r.agent.Close)
	r.deny.Store(errors.New(""))
	r.sessions = NewSessions(SessionsConfig{Hub: hub, RecheckEvery: 50 * time.Millisecond,
		Recheck: func(context.Context, cases.Use) error {
			if err := r.deny.Load().(error); err.Error() != "" {
				return err
			}
			return nil
		},
		Audit: func(context.Context, cases.Use, string, string) { r.audits.Add(1) }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.sessions.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	r.srv = httptest.NewServer(r.sessions)
	t.Cleanup(r.srv.Close)
	p, err := hub.AddPeer("g1")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.agent.Up(&gantryv1.TunnelUp{GrantId: "g1", PrivateKey: p.PrivateKey[:], HubPublicKey: p.HubPublicKey[:], PresharedKey: p.PresharedKey[:],
		HubEndpoint: p.HubEndpoint, Address: p.Address.String(), HubAddress: p.HubAddress.String(), Targets: []string{r.target},
		ExpiresAt: timestamppb.New(time.Now().Add(time.Hour))}); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *rig) use() cases.Use {
	return cases.Use{UserID: "u1", CaseID: "c1", GrantID: "g1", ConnectionType: "data_link", Target: r.target, GrantExpires: time.Now().Add(time.Hour)}
}

func (r *rig) dial(t testing.TB, token string) (*wsconn.Conn, error) {
	return wsconn.Dial(context.Background(), "ws"+strings.TrimPrefix(r.srv.URL, "http")+WebSocketPath+"?token="+token, nil)
}

func (r *rig) open(t testing.TB) *wsconn.Conn {
	t.Helper()
	_, tok, _ := r.sessions.Issue(r.use())
	c, err := r.dial(t, tok)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestSessionRelayAndHalfClose(t *testing.T) {
	r := newRig(t)
	c := r.open(t)
	msg := bytes.Repeat([]byte("plc"), 200000)
	go func() {
		c.Write(msg)
		c.CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo through the session: %d bytes, %v", len(got), err)
	}
	c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for r.sessions.Live() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if r.audits.Load() != 1 {
		t.Errorf("%d audit records, want 1 for the ended session", r.audits.Load())
	}
}

func TestTokens(t *testing.T) {
	r := newRig(t)
	_, tok, _ := r.sessions.Issue(r.use())
	c, err := r.dial(t, tok)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	for name, tok := range map[string]string{"reused": tok, "bogus": strings.Repeat("a", 48), "short": "abc", "empty": ""} {
		if _, err := r.dial(t, tok); err == nil || !strings.Contains(err.Error(), "token") {
			t.Errorf("%s token: %v", name, err)
		}
	}
}

func TestRecheckEndsSession(t *testing.T) {
	r := newRig(t)
	c := r.open(t)
	start := time.Now()
	r.deny.Store(errors.New("role removed"))
	_, err := io.ReadAll(c)
	var cr *wsconn.CloseReason
	if !errors.As(err, &cr) || !strings.Contains(cr.Text, "role removed") {
		t.Fatalf("close reason: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("session ended %v after the permission went away", d)
	}
	// A denied user cannot open a new one either.
	_, tok, _ := r.sessions.Issue(r.use())
	if _, err := r.dial(t, tok); err == nil {
		t.Error("session opened while denied")
	}
}

func TestEndGrant(t *testing.T) {
	r := newRig(t)
	c := r.open(t)
	r.sessions.EndGrant("g1", "the remote-access grant ended")
	_, err := io.ReadAll(c)
	var cr *wsconn.CloseReason
	if !errors.As(err, &cr) || !strings.Contains(cr.Text, "grant ended") {
		t.Fatalf("close reason: %v", err)
	}
	// Removing the hub peer makes the tunnel unusable at once.
	r.hub.RemovePeer("g1")
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := r.hub.Dial(ctx, "g1", r.target); err == nil {
		t.Error("dial after RemovePeer succeeded")
	}
}

func TestMalformedFrames(t *testing.T) {
	r := newRig(t)
	_, tok, _ := r.sessions.Issue(r.use())
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(r.srv.URL, "http")+WebSocketPath+"?token="+tok, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if err := ws.WriteMessage(websocket.TextMessage, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	_, _, err = ws.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || !strings.Contains(ce.Text, "protocol error") {
		t.Fatalf("text frame: %v", err)
	}
	// Other sessions are unaffected.
	c := r.open(t)
	c.Write([]byte("ok"))
	buf := make([]byte, 2)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ok" {
		t.Fatalf("second session: %q %v", buf, err)
	}
}

func TestHubAddresses(t *testing.T) {
	hub, err := NewHub(HubConfig{Prefix: netip.MustParsePrefix("100.100.0.0/28")})
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	seen := map[string]bool{}
	// A /28 has 14 host addresses; the hub takes one.
	for i := range 13 {
		p, err := hub.AddPeer(string(rune('a' + i)))
		if err != nil {
			t.Fatalf("peer %d: %v", i, err)
		}
		if seen[p.Address.String()] || p.Address == p.HubAddress {
			t.Fatalf("address %s reused", p.Address)
		}
		seen[p.Address.String()] = true
	}
	if _, err := hub.AddPeer("overflow"); !errors.Is(err, ErrNoAddress) {
		t.Fatalf("15th address: %v", err)
	}
	hub.RemovePeer("a")
	if _, err := hub.AddPeer("again"); err != nil {
		t.Fatalf("freed address not reused: %v", err)
	}
}
