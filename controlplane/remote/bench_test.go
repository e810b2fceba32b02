package remote

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"

	"github.com/gantry-iot/gantry/pkg/wg"
)

// BenchmarkDataLink measures one-way throughput (64 KiB writes) on three
// paths in the same run, so the ratios hold on a noisy machine:
//   - raw: two wireguard-go netstack interfaces, TCP between them
//     (the baseline the issue names);
//   - hub_agent: the hub dials through the agent's tunnel manager to a
//     loopback TCP target (the agent's forwarding added);
//   - full: a WebSocket client → session relay → hub → agent → target
//     (what gantryctl tunnel and noVNC use).
func BenchmarkDataLink(b *testing.B) {
	buf := make([]byte, 64<<10)
	run := func(b *testing.B, c net.Conn) {
		b.SetBytes(int64(len(buf)))
		b.ResetTimer()
		for range b.N {
			if _, err := c.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
	}
	b.Run("raw", func(b *testing.B) {
		hk, _ := wg.NewPrivateKey()
		ak, _ := wg.NewPrivateKey()
		psk, _ := wg.NewPresharedKey()
		ha, aa := netip.MustParseAddr("100.96.0.1"), netip.MustParseAddr("100.96.0.2")
		h, _ := wg.New(wg.Config{PrivateKey: hk, Address: ha})
		defer h.Close()
		a, _ := wg.New(wg.Config{PrivateKey: ak, Address: aa})
		defer a.Close()
		h.SetPeer(wg.Peer{PublicKey: ak.Public(), PresharedKey: psk, AllowedIPs: []netip.Prefix{netip.PrefixFrom(aa, 32)}})
		a.SetPeer(wg.Peer{PublicKey: hk.Public(), PresharedKey: psk, Endpoint: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(h.ListenPort())),
			AllowedIPs: []netip.Prefix{netip.PrefixFrom(ha, 32)}, KeepaliveSeconds: 25})
		ln, err := a.ListenTCP(7001)
		if err != nil {
			b.Fatal(err)
		}
		go func() {
			c, err := ln.Accept()
			if err == nil {
				io.Copy(io.Discard, c)
			}
		}()
		c, err := h.DialTCP(context.Background(), netip.AddrPortFrom(aa, 7001))
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		run(b, c)
	})
	sink := func(b *testing.B) string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { l.Close() })
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go io.Copy(io.Discard, c)
			}
		}()
		return l.Addr().String()
	}
	b.Run("hub_agent", func(b *testing.B) {
		r := newRigTarget(b, sink(b))
		c, err := r.hub.Dial(context.Background(), "g1", r.target)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		run(b, c)
	})
	b.Run("full", func(b *testing.B) {
		r := newRigTarget(b, sink(b))
		c := r.open(b)
		defer c.Close()
		run(b, c)
	})
}
