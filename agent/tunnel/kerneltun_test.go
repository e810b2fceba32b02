package tunnel

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/nftables"
	"google.golang.org/protobuf/proto"

	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
)

func kernelSpec(t *testing.T, subnets []*gantryv1.SSCSubnet, ports []string) spec {
	t.Helper()
	r := newRig(t, Options{}, "192.168.0.5:7")
	up := proto.Clone(r.up).(*gantryv1.TunnelUp)
	up.SscSubnets, up.SscClients, up.SscPorts = subnets, "100.97.0.0/16", ports
	s, err := parse(up, r.m.opts.Now())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestKernelPlanBadInput(t *testing.T) {
	for _, tc := range []struct {
		name string
		sub  []*gantryv1.SSCSubnet
		want string
	}{
		{"virtual subnet holds the tunnel address", []*gantryv1.SSCSubnet{{Machine: "192.168.0.0/24", Virtual: "100.96.0.0/24"}}, "contains the tunnel address 100.96.0.7"},
		{"machine subnet holds the hub address", []*gantryv1.SSCSubnet{{Machine: "100.96.0.0/24", Virtual: "100.64.1.0/24"}}, "contains the tunnel address"},
		{"machine subnet overlaps the engineers", []*gantryv1.SSCSubnet{{Machine: "100.97.3.0/24", Virtual: "100.64.1.0/24"}}, "overlaps the engineer addresses"},
		{"virtual subnet overlaps the engineers", []*gantryv1.SSCSubnet{{Machine: "192.168.0.0/24", Virtual: "100.97.3.0/24"}}, "overlaps the engineer addresses"},
		{"machine subnets overlap", []*gantryv1.SSCSubnet{{Machine: "192.168.0.0/24", Virtual: "100.64.1.0/24"}, {Machine: "192.168.0.0/25", Virtual: "100.64.2.0/25"}}, "overlaps ssc_subnets[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := newKernelPlan(kernelSpec(t, tc.sub, nil), 0)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
	p, err := newKernelPlan(kernelSpec(t, []*gantryv1.SSCSubnet{{Machine: "192.168.0.0/24", Virtual: "100.64.1.0/24"}}, nil), 3)
	if err != nil {
		t.Fatal(err)
	}
	if p.name != "gantry-ssc3" || p.table != ktunRouteTable+3 || p.mark != ktunMark+3 {
		t.Errorf("plan for slot 3: %+v", p)
	}
}

func TestKernelPreflight(t *testing.T) {
	dir := t.TempDir()
	sys := func(kv map[string]string) string {
		root := t.TempDir()
		for k, v := range kv {
			os.MkdirAll(filepath.Join(root, filepath.Dir(k)), 0o755)
			os.WriteFile(filepath.Join(root, k), []byte(v+"\n"), 0o644)
		}
		return root
	}
	t.Run("missing TUN device names the drop-in", func(t *testing.T) {
		err := kernelCheck{tunPath: filepath.Join(dir, "no-tun"), procStatus: "/proc/self/status", procSys: "/proc/sys"}.preflight()
		if err == nil || !strings.Contains(err.Error(), "gantry-agent-ssc-l3.conf") || !strings.Contains(err.Error(), `"userspace"`) {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("missing CAP_NET_ADMIN names the drop-in", func(t *testing.T) {
		tunPath := filepath.Join(dir, "tun")
		os.WriteFile(tunPath, nil, 0o600)
		status := filepath.Join(dir, "status")
		os.WriteFile(status, []byte("Name:\tgantry-agent\nCapEff:\t0000000000000000\n"), 0o600)
		err := kernelCheck{tunPath: tunPath, procStatus: status, procSys: "/proc/sys"}.preflight()
		if err == nil || !strings.Contains(err.Error(), "CAP_NET_ADMIN") || !strings.Contains(err.Error(), "ssc-l3.conf") {
			t.Errorf("err = %v", err)
		}
	})
	for _, tc := range []struct {
		status string
		want   bool
		err    bool
	}{
		{"CapEff:\t0000000000001000\n", true, false},
		{"CapEff:\t000001ffffffffff\n", true, false},
		{"CapEff:\t0000000000000400\n", false, false},
		{"CapEff:\tzz\n", false, true},
		{"Name: x\n", false, true},
	} {
		got, err := hasCapNetAdmin(tc.status)
		if got != tc.want || (err != nil) != tc.err {
			t.Errorf("hasCapNetAdmin(%q) = %v, %v", tc.status, got, err)
		}
	}
	for _, tc := range []struct {
		name string
		kv   map[string]string
		want string
	}{
		{"forwarding off", map[string]string{"net/ipv4/ip_forward": "0"}, "net.ipv4.ip_forward = 1"},
		{"forwarding unreadable", map[string]string{}, "net.ipv4.ip_forward = unreadable"},
		{"strict rp_filter without marks", map[string]string{"net/ipv4/ip_forward": "1", "net/ipv4/conf/all/rp_filter": "1", "net/ipv4/conf/default/rp_filter": "0", "net/ipv4/conf/all/src_valid_mark": "0"}, "src_valid_mark = 1"},
		{"loose default rp_filter without marks", map[string]string{"net/ipv4/ip_forward": "1", "net/ipv4/conf/all/rp_filter": "0", "net/ipv4/conf/default/rp_filter": "2", "net/ipv4/conf/all/src_valid_mark": "0"}, "src_valid_mark = 1"},
		{"rp_filter with marks", map[string]string{"net/ipv4/ip_forward": "1", "net/ipv4/conf/all/rp_filter": "1", "net/ipv4/conf/default/rp_filter": "1", "net/ipv4/conf/all/src_valid_mark": "1"}, ""},
		{"no rp_filter", map[string]string{"net/ipv4/ip_forward": "1", "net/ipv4/conf/all/rp_filter": "0", "net/ipv4/conf/default/rp_filter": "0"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := kernelCheck{procSys: sys(tc.kv)}.forwarding()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestKernelTUNUnavailable: when the start check fails, the agent keeps
// running: SSC grants are refused with the reason, other grants work.
func TestKernelTUNUnavailable(t *testing.T) {
	saved := defaultKernelCheck
	defaultKernelCheck = kernelCheck{tunPath: filepath.Join(t.TempDir(), "no-tun"), procStatus: "/proc/self/status", procSys: "/proc/sys"}
	defer func() { defaultKernelCheck = saved }()
	target := echoTarget(t)
	r := newRig(t, Options{SSCMode: SSCKernelTUN}, target)
	if err := r.m.KernelTUNErr(); err == nil || !strings.Contains(err.Error(), "ssc-l3.conf") {
		t.Fatalf("KernelTUNErr = %v", err)
	}
	ssc := proto.Clone(r.up).(*gantryv1.TunnelUp)
	ssc.GrantId = "grant-ssc"
	ssc.SscSubnets = []*gantryv1.SSCSubnet{{Machine: "192.168.0.0/24", Virtual: "100.64.7.0/24"}}
	ssc.SscClients = "100.97.0.0/16"
	if err := r.m.Up(ssc); err == nil || !strings.Contains(err.Error(), "/dev/net/tun") && !strings.Contains(err.Error(), "no-tun") {
		t.Errorf("SSC grant without TUN: %v", err)
	}
	if err := r.m.Up(r.up); err != nil {
		t.Fatalf("grant without SSC: %v", err)
	}
	c, err := r.open(t, "grant-1", target)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// TestKernelRuleset installs the rule set in a scratch network namespace
// (the kernel validates it) and compares nft's rendering with what the
// design says.
func TestKernelRuleset(t *testing.T) {
	kernelTestable(t)
	nftBin, err := exec.LookPath("nft")
	if err != nil {
		t.Skip("SKIP: no nft binary to render the installed rule set")
	}
	s := kernelSpec(t, []*gantryv1.SSCSubnet{{Machine: "192.168.0.0/24", Virtual: "100.64.7.0/24"}, {Machine: "10.20.0.0/16", Virtual: "100.65.0.0/16"}},
		[]string{"tcp/102", "tcp/8000-8100", "udp/161", "icmp"})
	p, err := newKernelPlan(s, 3)
	if err != nil {
		t.Fatal(err)
	}
	ns := fmt.Sprintf("gk%dr", os.Getpid()%100000)
	run(t, "ip", "netns", "add", ns)
	defer exec.Command("ip", "netns", "del", ns).Run()
	f, err := os.Open("/run/netns/" + ns)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	nc, err := nftables.New(nftables.WithNetNSFd(int(f.Fd())))
	if err != nil {
		t.Fatal(err)
	}
	tb, chains, rules := p.ruleset()
	nc.AddTable(tb)
	for _, c := range chains {
		nc.AddChain(c)
	}
	for _, r := range rules {
		nc.AddRule(r)
	}
	_, _, gate := p.gateRule()
	nc.InsertRule(gate)
	if err := nc.Flush(); err != nil {
		t.Fatalf("the kernel refused the rule set: %v", err)
	}
	out, err := exec.Command("ip", "netns", "exec", ns, nftBin, "list", "table", "ip", "gantry-ssc3").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list: %v %s", err, out)
	}
	// nft prints the netmap (daddr & HOSTMASK) ^ MACHINE as
	// daddr & (HOSTMASK|MACHINE) | MACHINE: the same for every address.
	want := `table ip gantry-ssc3 {
	chain mark {
		type filter hook prerouting priority mangle; policy accept;
		iifname "gantry-ssc3" ct state new ct mark set 0x67610004
		ct mark 0x67610004 meta mark set 0x67610004
	}

	chain dnat {
		type nat hook prerouting priority dstnat; policy accept;
		iifname "gantry-ssc3" ip daddr 100.64.7.0/24 dnat to ip daddr & 192.168.0.255 | 192.168.0.0
		iifname "gantry-ssc3" ip daddr 100.65.0.0/16 dnat to ip daddr & 10.20.255.255 | 10.20.0.0
	}

	chain snat {
		type nat hook postrouting priority srcnat; policy accept;
		ct mark 0x67610004 oifname != "gantry-ssc3" masquerade
	}

	chain forward {
		type filter hook forward priority filter; policy accept;
		iifname "gantry-ssc3" ct state new drop
		iifname "gantry-ssc3" tcp flags syn / syn,rst tcp option maxseg size set rt mtu
		oifname "gantry-ssc3" tcp flags syn / syn,rst tcp option maxseg size set rt mtu
		iifname "gantry-ssc3" ip saddr 100.97.0.0/16 ct status dnat ip daddr 192.168.0.0/24 tcp dport 102 accept
		iifname "gantry-ssc3" ip saddr 100.97.0.0/16 ct status dnat ip daddr 192.168.0.0/24 tcp dport 8000-8100 accept
		iifname "gantry-ssc3" ip saddr 100.97.0.0/16 ct status dnat ip daddr 192.168.0.0/24 udp dport 161 accept
		iifname "gantry-ssc3" ip saddr 100.97.0.0/16 ct status dnat ip daddr 192.168.0.0/24 icmp type echo-request accept
		iifname "gantry-ssc3" ip saddr 100.97.0.0/16 ct status dnat ip daddr 10.20.0.0/16 tcp dport 102 accept
		iifname "gantry-ssc3" ip saddr 100.97.0.0/16 ct status dnat ip daddr 10.20.0.0/16 tcp dport 8000-8100 accept
		iifname "gantry-ssc3" ip saddr 100.97.0.0/16 ct status dnat ip daddr 10.20.0.0/16 udp dport 161 accept
		iifname "gantry-ssc3" ip saddr 100.97.0.0/16 ct status dnat ip daddr 10.20.0.0/16 icmp type echo-request accept
		iifname "gantry-ssc3" drop
		oifname "gantry-ssc3" ct state established,related accept
		oifname "gantry-ssc3" drop
	}

	chain input {
		type filter hook input priority filter; policy accept;
		iifname "gantry-ssc3" ct state established,related accept
		iifname "gantry-ssc3" ip saddr 100.96.0.1 tcp dport 7000 accept
		iifname "gantry-ssc3" drop
	}
}
`
	if got := string(out); got != want {
		t.Errorf("installed rule set:\n%s\nwant:\n%s", got, want)
	}
}
