package wg

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"
)

// pair brings up a hub-like interface (no peer endpoint) and an
// agent-like one that initiates towards the hub, as in production.
func pair(t testing.TB) (hub, agent *Interface, agentKey Key) {
	t.Helper()
	hk, _ := NewPrivateKey()
	ak, _ := NewPrivateKey()
	psk, _ := NewPresharedKey()
	hubAddr, agentAddr := netip.MustParseAddr("100.96.0.1"), netip.MustParseAddr("100.96.0.2")
	var err error
	if hub, err = New(Config{PrivateKey: hk, Address: hubAddr}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hub.Close)
	if err := hub.SetPeer(Peer{PublicKey: ak.Public(), PresharedKey: psk, AllowedIPs: []netip.Prefix{netip.PrefixFrom(agentAddr, 32)}}); err != nil {
		t.Fatal(err)
	}
	if agent, err = New(Config{PrivateKey: ak, Address: agentAddr}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(agent.Close)
	ep := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(hub.ListenPort()))
	if err := agent.SetPeer(Peer{PublicKey: hk.Public(), PresharedKey: psk, Endpoint: ep, AllowedIPs: []netip.Prefix{netip.PrefixFrom(hubAddr, 32)}, KeepaliveSeconds: 25}); err != nil {
		t.Fatal(err)
	}
	return hub, agent, ak
}

func TestHubDialsAgent(t *testing.T) {
	hub, agent, ak := pair(t)
	ln, err := agent.ListenTCP(7000)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	c, err := hub.DialTCP(ctx, netip.AddrPortFrom(agent.Address(), 7000))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first dial through a fresh tunnel: %v", time.Since(start))
	msg := bytes.Repeat([]byte("gantry"), 10000)
	go c.Write(msg)
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo through the tunnel: %v", err)
	}
	c.Close()
	st := hub.Stats()[ak.Public()]
	if st.RxBytes == 0 || st.LastHandshakeUnix == 0 {
		t.Errorf("hub stats for the agent peer: %+v", st)
	}
	// Removing the peer cuts the tunnel: a new dial fails.
	if err := hub.RemovePeer(ak.Public()); err != nil {
		t.Fatal(err)
	}
	dctx, dcancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer dcancel()
	if c, err := hub.DialTCP(dctx, netip.AddrPortFrom(agent.Address(), 7000)); err == nil {
		c.Close()
		t.Fatal("dial succeeded after the peer was removed")
	}
}

func TestKeys(t *testing.T) {
	k, err := NewPrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	if k[0]&7 != 0 || k[31]&128 != 0 || k[31]&64 == 0 {
		t.Errorf("private key not clamped: %x", k)
	}
	if k.Public() == (Key{}) || k.Public() == k {
		t.Error("bad public key")
	}
	if _, err := KeyFromBytes(make([]byte, 31)); err == nil {
		t.Error("31-byte key accepted")
	}
}

// BenchmarkNetstackThroughput is the raw baseline for the data-link ratio:
// two wireguard-go netstack interfaces in one process.
func BenchmarkNetstackThroughput(b *testing.B) {
	hub, agent, _ := pair(b)
	ln, err := agent.ListenTCP(7000)
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		io.Copy(io.Discard, c)
		c.Close()
	}()
	c, err := hub.DialTCP(context.Background(), netip.AddrPortFrom(agent.Address(), 7000))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 64<<10)
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	_ = net.ErrClosed
}

func TestParsePublicKey(t *testing.T) {
	k, _ := NewPrivateKey()
	if got, err := ParsePublicKey(" " + k.Public().String() + "\n"); err != nil || got != k.Public() {
		t.Fatalf("valid key: %v %v", got, err)
	}
	lowOrder := Key{1}
	for _, bad := range []string{"", "!!!", Key{}.String(), lowOrder.String(), k.Public().String()[:40] + "==", "AAAA"} {
		if _, err := ParsePublicKey(bad); err == nil {
			t.Errorf("ParsePublicKey(%q) accepted", bad)
		}
	}
}

func FuzzParsePublicKey(f *testing.F) {
	k, _ := NewPrivateKey()
	f.Add(k.Public().String())
	f.Add("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
	f.Add("not base64")
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParsePublicKey(s)
		if err != nil {
			return
		}
		if got == (Key{}) {
			t.Fatal("all-zero key accepted")
		}
		if again, err := ParsePublicKey(got.String()); err != nil || again != got {
			t.Fatalf("round trip: %v %v", again, err)
		}
	})
}
