package tunnel

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gantry-iot/gantry/pkg/tunnelproto"
	"github.com/gantry-iot/gantry/pkg/wg"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
)

var (
	hubAddr   = netip.MustParseAddr("100.96.0.1")
	agentAddr = netip.MustParseAddr("100.96.0.7")
)

// echoTarget is a TCP echo server on loopback, standing in for a PLC.
func echoTarget(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return ln.Addr().String()
}

type rig struct {
	hub  *wg.Interface
	m    *Manager
	up   *gantryv1.TunnelUp
	akey wg.Key
}

func newRig(t *testing.T, opts Options, targets ...string) *rig {
	t.Helper()
	hk, _ := wg.NewPrivateKey()
	ak, _ := wg.NewPrivateKey()
	psk, _ := wg.NewPresharedKey()
	hub, err := wg.New(wg.Config{PrivateKey: hk, Address: hubAddr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hub.Close)
	if err := hub.SetPeer(wg.Peer{PublicKey: ak.Public(), PresharedKey: psk, AllowedIPs: []netip.Prefix{netip.PrefixFrom(agentAddr, 32)}}); err != nil {
		t.Fatal(err)
	}
	m := New(opts)
	t.Cleanup(m.Close)
	up := &gantryv1.TunnelUp{GrantId: "grant-1", PrivateKey: ak[:], HubPublicKey: func() []byte { p := hk.Public(); return p[:] }(), PresharedKey: psk[:],
		HubEndpoint: "127.0.0.1:" + strconv.Itoa(hub.ListenPort()), Address: agentAddr.String(), HubAddress: hubAddr.String(),
		Targets: targets, ExpiresAt: timestamppb.New(time.Now().Add(time.Hour))}
	return &rig{hub: hub, m: m, up: up, akey: ak}
}

// open asks the agent for target through the tunnel.
func (r *rig) open(t *testing.T, grant, target string) (net.Conn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := r.hub.DialTCP(ctx, netip.AddrPortFrom(agentAddr, tunnelproto.Port))
	if err != nil {
		return nil, err
	}
	line, _ := tunnelproto.Request{GrantID: grant, Target: target}.Encode()
	if _, err := c.Write(line); err != nil {
		c.Close()
		return nil, err
	}
	if err := tunnelproto.ReadResponse(c); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func TestForwardAndDown(t *testing.T) {
	target := echoTarget(t)
	r := newRig(t, Options{}, target)
	if err := r.m.Up(r.up); err != nil {
		t.Fatal(err)
	}
	c, err := r.open(t, "grant-1", target)
	if err != nil {
		t.Fatal(err)
	}
	msg := bytes.Repeat([]byte{1, 2, 3, 250}, 1<<16)
	go c.Write(msg)
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo through the agent: %v", err)
	}
	// Down ends the live connection promptly.
	start := time.Now()
	if err := r.m.Down("grant-1"); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Down took %v", d)
	}
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("connection not closed by Down: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("teardown took %v", d)
	}
	if n := len(r.m.Active()); n != 0 {
		t.Errorf("%d tunnels after Down", n)
	}
}

func TestRefusals(t *testing.T) {
	target := echoTarget(t)
	consent := filepath.Join(t.TempDir(), "consent")
	os.WriteFile(consent, []byte("off\n"), 0o600)
	r := newRig(t, Options{Consent: FileConsent(consent, false)}, target)
	if err := r.m.Up(r.up); err != nil {
		t.Fatal(err)
	}
	var re *tunnelproto.RefusedError
	if _, err := r.open(t, "grant-1", "127.0.0.1:22"); !errors.As(err, &re) || !bytes.Contains([]byte(re.Reason), []byte("not allowed")) {
		t.Errorf("disallowed target: %v", err)
	}
	if _, err := r.open(t, "grant-2", target); !errors.As(err, &re) {
		t.Errorf("foreign grant: %v", err)
	}
	if _, err := r.open(t, "grant-1", target); !errors.As(err, &re) || !bytes.Contains([]byte(re.Reason), []byte("consent")) {
		t.Errorf("without consent: %v", err)
	}
	os.WriteFile(consent, []byte("on\n"), 0o600)
	c, err := r.open(t, "grant-1", target)
	if err != nil {
		t.Fatalf("with consent: %v", err)
	}
	c.Close()
	if got := r.m.Stats.ConnsRefused.Load(); got != 3 {
		t.Errorf("refused = %d, want 3", got)
	}
}

func TestBadTunnelUp(t *testing.T) {
	r := newRig(t, Options{}, "10.0.0.10:5900")
	for name, mut := range map[string]func(u *gantryv1.TunnelUp){
		"short key":     func(u *gantryv1.TunnelUp) { u.PrivateKey = u.PrivateKey[:31] },
		"no targets":    func(u *gantryv1.TunnelUp) { u.Targets = nil },
		"bad target":    func(u *gantryv1.TunnelUp) { u.Targets = []string{"10.0.0.10"} },
		"expired":       func(u *gantryv1.TunnelUp) { u.ExpiresAt = timestamppb.New(time.Now().Add(-time.Second)) },
		"bad address":   func(u *gantryv1.TunnelUp) { u.Address = "fd00::1" },
		"same address":  func(u *gantryv1.TunnelUp) { u.HubAddress = u.Address },
		"bad endpoint":  func(u *gantryv1.TunnelUp) { u.HubEndpoint = "nowhere" },
		"grant with sp": func(u *gantryv1.TunnelUp) { u.GrantId = "a b" },
	} {
		u := proto.Clone(r.up).(*gantryv1.TunnelUp)
		mut(u)
		if err := r.m.Up(u); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if n := len(r.m.Active()); n != 0 {
		t.Errorf("%d tunnels after bad commands", n)
	}
}

func TestExpiry(t *testing.T) {
	target := echoTarget(t)
	r := newRig(t, Options{}, target)
	r.up.ExpiresAt = timestamppb.New(time.Now().Add(2 * time.Second))
	if err := r.m.Up(r.up); err != nil {
		t.Fatal(err)
	}
	c, err := r.open(t, "grant-1", target)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("connection outlived the grant's expiry")
	}
	if n := len(r.m.Active()); n != 0 {
		t.Errorf("%d tunnels after expiry", n)
	}
}
