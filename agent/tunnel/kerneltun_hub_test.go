package tunnel

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gantry-iot/gantry/controlplane/remote"
	"github.com/gantry-iot/gantry/pkg/wg"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
)

// TestKernelTUNThroughHub runs the product's path: an engineer peer with
// the config the control plane's hub issues → the hub (per-packet
// policy) → the agent in kernel_tun mode in its own namespace → the
// machine in the LAN namespace.
func TestKernelTUNThroughHub(t *testing.T) {
	kernelTestable(t)
	agentNS, lanNS, hostAddr := kernelNetns(t)
	run(t, "ip", "netns", "exec", agentNS, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	lan := startHelper(t, lanNS, "lan")
	if l := lan.read(); l != "ok" {
		t.Fatalf("lan helper: %s", l)
	}
	hub, err := remote.NewHub(remote.HubConfig{Logger: slog.New(slog.DiscardHandler), PublicHost: hostAddr.String()})
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	subnets, ports := []string{"192.168.77.0/24"}, []string{"tcp/7", "udp/7"}
	p, err := hub.AddPeerSSC("g1", subnets, ports)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := hub.AddEngineer(remote.SSCRequest{GrantID: "g1", UserID: "u1", Subnets: subnets, Ports: ports})
	if err != nil {
		t.Fatal(err)
	}
	up := &gantryv1.TunnelUp{GrantId: "g1", PrivateKey: p.PrivateKey[:], HubPublicKey: p.HubPublicKey[:], PresharedKey: p.PresharedKey[:],
		HubEndpoint: p.HubEndpoint, Address: p.Address.String(), HubAddress: p.HubAddress.String(), ExpiresAt: timestamppb.New(time.Now().Add(time.Hour)),
		SscClients: p.SSCClients.String(), SscPorts: p.SSCPorts}
	for _, s := range p.SSC {
		up.SscSubnets = append(up.SscSubnets, &gantryv1.SSCSubnet{Machine: s.Machine.String(), Virtual: s.Virtual.String()})
	}
	agent := startHelper(t, agentNS, "agent")
	agent.do("start")
	if r := agent.do("up " + encodeUp(t, up)); r != "ok" {
		t.Fatalf("up: %s", r)
	}
	eng, err := wg.New(wg.Config{PrivateKey: cfg.PrivateKey, Address: cfg.Address})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	ep, err := netip.ParseAddrPort(cfg.HubEndpoint)
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.SetPeer(wg.Peer{PublicKey: cfg.HubPublicKey, PresharedKey: cfg.PresharedKey, Endpoint: ep, AllowedIPs: cfg.AllowedIPs, KeepaliveSeconds: 25}); err != nil {
		t.Fatal(err)
	}
	vh := cfg.AllowedIPs[0].Addr().As4()
	vh[3] = 5
	host := netip.AddrFrom4(vh)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := eng.DialTCP(ctx, netip.AddrPortFrom(host, 7))
	if err != nil {
		t.Fatalf("tcp to %s through hub and kernel_tun agent: %v", host, err)
	}
	msg := bytes.Repeat([]byte("hub!"), 1<<16)
	go c.Write(msg)
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo: %v", err)
	}
	c.Close()
	ke := &kernelEngineer{Interface: eng}
	if !udpEchoes(ke, netip.AddrPortFrom(host, 7), 5*time.Second) {
		t.Error("no UDP echo through hub and kernel_tun agent")
	}
	if r := agent.do("down g1"); r != "ok" {
		t.Fatal(r)
	}
	if udpEchoes(ke, netip.AddrPortFrom(host, 7), time.Second) {
		t.Error("UDP echo after the agent's tunnel went down")
	}
	if s := agent.do("state"); s != "clean" {
		t.Errorf("after down: %s", s)
	}
}
