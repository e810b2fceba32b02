package tunnel

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gantry-iot/gantry/pkg/wg"
)

// TestKernelTUNBench compares the SSC data path under the agent's
// WireGuard device — userspace (gVisor router + sockets) against
// kernel_tun (TUN + nftables NAT) — in the same namespaces and the same
// run, alternating: engineer netstack peer (this process) → agent (its
// own namespace) → machine (LAN namespace, TCP echo and discard).
//
//	GANTRY_BENCH=1 go test -count=1 -run TestKernelTUNBench -v ./agent/tunnel
func TestKernelTUNBench(t *testing.T) {
	if os.Getenv("GANTRY_BENCH") == "" {
		t.Skip("SKIP: set GANTRY_BENCH=1 to run the kernel_tun vs userspace benchmark")
	}
	kernelTestable(t)
	agentNS, lanNS, hostAddr := kernelNetns(t)
	run(t, "ip", "netns", "exec", agentNS, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	lan := startHelper(t, lanNS, "lan")
	if l := lan.read(); l != "ok" {
		t.Fatalf("lan helper: %s", l)
	}
	const size = 64 << 20
	host := netip.AddrFrom4([4]byte{100, 64, 7, 5})
	type result struct {
		mbps float64
		p50  time.Duration
		p99  time.Duration
	}
	measure := func(mode string) result {
		ak, _ := wg.NewPrivateKey()
		psk, _ := wg.NewPresharedKey()
		eng := newKernelEngineer(t, ak, psk)
		defer eng.Close()
		up := kernelTunnelUp(ak, eng.key, psk, netip.AddrPortFrom(hostAddr, uint16(eng.ListenPort())), []string{"tcp/7", "tcp/9"})
		up.ExpiresAt = timestamppb.New(time.Now().Add(time.Hour))
		agent := startHelper(t, agentNS, "agent")
		defer agent.stop()
		start := "start"
		if mode == "userspace" {
			start = "startuser"
		}
		agent.do(start)
		if r := agent.do("up " + encodeUp(t, up)); r != "ok" {
			t.Fatalf("%s up: %s", mode, r)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		// Throughput: size bytes to the discard service, which answers with
		// the count once the engineer half-closes.
		c, err := eng.DialTCP(ctx, netip.AddrPortFrom(host, 9))
		if err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		buf := make([]byte, 64<<10)
		t0 := time.Now()
		for sent := 0; sent < size; sent += len(buf) {
			if _, err := c.Write(buf); err != nil {
				t.Fatalf("%s write: %v", mode, err)
			}
		}
		c.(interface{ CloseWrite() error }).CloseWrite()
		line, err := bufio.NewReader(c).ReadString('\n')
		el := time.Since(t0)
		c.Close()
		if err != nil || strings.TrimSpace(line) != fmt.Sprint(size) {
			t.Fatalf("%s: discard counted %q (%v)", mode, line, err)
		}
		// Round trips: 64 bytes, 2000 times, one connection.
		e, err := eng.DialTCP(ctx, netip.AddrPortFrom(host, 7))
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		msg := make([]byte, 64)
		var rtts []time.Duration
		for range 2000 {
			t1 := time.Now()
			e.Write(msg)
			if _, err := io.ReadFull(e, msg); err != nil {
				t.Fatal(err)
			}
			rtts = append(rtts, time.Since(t1))
		}
		slices.Sort(rtts)
		return result{mbps: float64(size) / el.Seconds() / 1e6, p50: rtts[len(rtts)/2], p99: rtts[len(rtts)*99/100]}
	}
	var user, kern []result
	for round := range 3 {
		u := measure("userspace")
		k := measure("kernel_tun")
		user, kern = append(user, u), append(kern, k)
		t.Logf("round %d: userspace %.1f MB/s p50 %v p99 %v | kernel_tun %.1f MB/s p50 %v p99 %v | ratio %.2f",
			round+1, u.mbps, u.p50, u.p99, k.mbps, k.p50, k.p99, k.mbps/u.mbps)
	}
	med := func(rs []result, f func(result) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	mb := func(r result) float64 { return r.mbps }
	p50 := func(r result) float64 { return float64(r.p50.Microseconds()) }
	load, _ := os.ReadFile("/proc/loadavg")
	t.Logf("medians: userspace %.1f MB/s, rtt p50 %.0f µs; kernel_tun %.1f MB/s, rtt p50 %.0f µs; throughput ratio kernel/userspace %.2f; loadavg %s",
		med(user, mb), med(user, p50), med(kern, mb), med(kern, p50), med(kern, mb)/med(user, mb), strings.TrimSpace(string(load)))
}
