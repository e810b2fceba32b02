package tunnel

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"

	"github.com/gantry-iot/gantry/pkg/wg"
)

// SSCMode selects what sits under a Secure Service Connect grant's
// WireGuard device.
type SSCMode string

// SSC layer-3 modes (agent config remote_access.ssc_l3_mode).
const (
	// SSCUserspace: the device's own gVisor stack; engineer flows become
	// ordinary sockets of the agent (no privileges). The default.
	SSCUserspace SSCMode = "userspace"
	// SSCKernelTUN: a kernel TUN interface per grant; the kernel routes,
	// NATs (nftables, 1:1 netmap + masquerade) and filters. Needs
	// CAP_NET_ADMIN, /dev/net/tun and net.ipv4.ip_forward=1.
	SSCKernelTUN SSCMode = "kernel_tun"
)

// DropIn names the systemd drop-in that grants what kernel_tun needs, for
// error messages.
const DropIn = "firmware-config/gantry-agent-ssc-l3.conf (install as /etc/systemd/system/gantry-agent.service.d/ssc-l3.conf)"

// kernelNet is the manager's kernel-TUN state: the start check's verdict
// and the slots in use.
type kernelNet struct {
	log     *slog.Logger
	procSys string // /proc/sys (tests point it elsewhere)

	mu    sync.Mutex
	err   error // why kernel_tun cannot work here; nil if it can
	slots [MaxTunnels]bool
}

// kernelCheck is the start check's input, so tests can feign a missing
// TUN device or capability.
type kernelCheck struct {
	tunPath    string // /dev/net/tun
	procStatus string // /proc/self/status
	procSys    string // /proc/sys
}

var defaultKernelCheck = kernelCheck{tunPath: "/dev/net/tun", procStatus: "/proc/self/status", procSys: "/proc/sys"}

// preflight checks that this process can run kernel_tun: the TUN device,
// CAP_NET_ADMIN, nf_tables and IPv4 forwarding. The error says what to
// change.
func (c kernelCheck) preflight() error {
	f, err := os.OpenFile(c.tunPath, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("ssc_l3_mode kernel_tun: cannot open %s (%v): the agent needs the TUN device; install the systemd drop-in %s, or set remote_access.ssc_l3_mode to \"userspace\"", c.tunPath, errors.Unwrap(err), DropIn)
	}
	f.Close()
	st, err := os.ReadFile(c.procStatus)
	if err != nil {
		return fmt.Errorf("ssc_l3_mode kernel_tun: cannot read %s: %v", c.procStatus, err)
	}
	if ok, err := hasCapNetAdmin(string(st)); err != nil {
		return fmt.Errorf("ssc_l3_mode kernel_tun: %s: %v", c.procStatus, err)
	} else if !ok {
		return fmt.Errorf("ssc_l3_mode kernel_tun: the agent lacks CAP_NET_ADMIN: install the systemd drop-in %s (AmbientCapabilities=CAP_NET_ADMIN), or set remote_access.ssc_l3_mode to \"userspace\"", DropIn)
	}
	if err := c.forwarding(); err != nil {
		return err
	}
	nc, err := nftables.New()
	if err != nil {
		return fmt.Errorf("ssc_l3_mode kernel_tun: netlink: %v", err)
	}
	if _, err := nc.ListTablesOfFamily(nftables.TableFamilyIPv4); err != nil {
		return fmt.Errorf("ssc_l3_mode kernel_tun: nf_tables is not usable (%v): the kernel needs nf_tables with nat (CONFIG_NF_TABLES, CONFIG_NFT_NAT, CONFIG_NFT_MASQ, CONFIG_NFT_CT)", err)
	}
	return nil
}

// forwarding checks IPv4 forwarding and reverse-path filtering. The agent
// never writes /proc/sys (the systemd unit keeps it read-only): the image
// sets them.
func (c kernelCheck) forwarding() error {
	if v := readSysctl(c.procSys, "net/ipv4/ip_forward"); v != "1" {
		return fmt.Errorf("ssc_l3_mode kernel_tun: IPv4 forwarding is off (net.ipv4.ip_forward = %s): put \"net.ipv4.ip_forward = 1\" into /etc/sysctl.d/90-gantry-ssc.conf and run `sysctl --system` (the agent does not change sysctls)", v)
	}
	// Engineer addresses are routed by packet mark (all grants share the
	// engineer pool), so reverse-path filtering must see the mark. New
	// interfaces take conf.default; the effective value is the larger of
	// conf.all and the interface's.
	if rp := max(readSysctl(c.procSys, "net/ipv4/conf/all/rp_filter"), readSysctl(c.procSys, "net/ipv4/conf/default/rp_filter")); rp != "0" &&
		readSysctl(c.procSys, "net/ipv4/conf/all/src_valid_mark") != "1" {
		return fmt.Errorf("ssc_l3_mode kernel_tun: reverse-path filtering is on (net.ipv4.conf.{all,default}.rp_filter = %s) but does not use packet marks, so it would drop engineer packets (routed by mark): put \"net.ipv4.conf.all.src_valid_mark = 1\" into /etc/sysctl.d/90-gantry-ssc.conf and run `sysctl --system`", rp)
	}
	return nil
}

func readSysctl(root, key string) string {
	b, err := os.ReadFile(root + "/" + key)
	if err != nil {
		return "unreadable (" + errors.Unwrap(err).Error() + ")"
	}
	return strings.TrimSpace(string(b))
}

// hasCapNetAdmin reads CapEff from /proc/<pid>/status text.
func hasCapNetAdmin(status string) (bool, error) {
	for line := range strings.SplitSeq(status, "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return false, fmt.Errorf("CapEff %q is not hexadecimal", strings.TrimSpace(v))
			}
			return caps&(1<<unix.CAP_NET_ADMIN) != 0, nil
		}
	}
	return false, errors.New("no CapEff line")
}

// newKernelNet checks the host and removes leftovers of a crashed run.
func newKernelNet(log *slog.Logger, c kernelCheck) *kernelNet {
	k := &kernelNet{log: log, procSys: c.procSys}
	if k.err = c.preflight(); k.err != nil {
		log.Error("Secure Service Connect kernel_tun mode unavailable: SSC grants will be refused until this is fixed and the agent restarted", "err", k.err)
		return k
	}
	if n, err := cleanupKernel(); err != nil {
		log.Warn("ssc kernel_tun: removing leftovers of an earlier run", "err", err)
	} else if n > 0 {
		log.Warn("ssc kernel_tun: removed leftovers of an earlier run (crash?)", "objects", n)
	}
	log.Info("Secure Service Connect uses kernel TUN interfaces", "prefix", ktunPrefix)
	return k
}

// cleanupKernel deletes every nftables table, interface and ip rule the
// kernel-TUN mode owns; it returns how many it removed.
func cleanupKernel() (int, error) {
	n := 0
	var errs []error
	nc, err := nftables.New()
	if err != nil {
		return 0, err
	}
	tables, err := nc.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		errs = append(errs, fmt.Errorf("list nftables tables: %w", err))
	}
	for _, t := range tables {
		if strings.HasPrefix(t.Name, ktunPrefix) {
			nc.DelTable(t)
			n++
		}
	}
	if err := nc.Flush(); err != nil {
		errs = append(errs, fmt.Errorf("delete nftables tables: %w", err))
	}
	links, err := netlink.LinkList()
	if err != nil {
		errs = append(errs, fmt.Errorf("list links: %w", err))
	}
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, ktunPrefix) {
			if err := netlink.LinkDel(l); err != nil {
				errs = append(errs, fmt.Errorf("delete link %s: %w", l.Attrs().Name, err))
			}
			n++
		}
	}
	rules, err := netlink.RuleList(netlink.FAMILY_V4)
	if err != nil {
		errs = append(errs, fmt.Errorf("list ip rules: %w", err))
	}
	for _, r := range rules {
		if r.Priority == ktunRulePref && r.Table >= ktunRouteTable && r.Table < ktunRouteTable+MaxTunnels {
			if err := netlink.RuleDel(&r); err != nil {
				errs = append(errs, fmt.Errorf("delete ip rule to table %d: %w", r.Table, err))
			}
			n++
		}
	}
	return n, errors.Join(errs...)
}

// kernelTun is one grant's kernel side: the TUN device WireGuard runs on
// and what was installed around it.
type kernelTun struct {
	k    *kernelNet
	plan kernelPlan
	dev  tun.Device

	once sync.Once
	stop chan struct{} // ends the consent watch
	done chan struct{} // closed when the watch has ended; nil without one
	gate bool          // the consent gate rule is installed (watch goroutine only)
}

// up creates the grant's interface, routing and nftables table. On error
// nothing is left behind.
func (k *kernelNet) up(s spec, consent func() error) (_ *kernelTun, err error) {
	k.mu.Lock()
	if k.err != nil {
		k.mu.Unlock()
		return nil, k.err
	}
	slot := -1
	for i, used := range k.slots {
		if !used {
			slot = i
			break
		}
	}
	if slot < 0 {
		k.mu.Unlock()
		return nil, fmt.Errorf("at most %d kernel TUN interfaces at once", MaxTunnels)
	}
	k.slots[slot] = true
	k.mu.Unlock()
	plan, err := newKernelPlan(s, slot)
	if err != nil {
		k.release(slot)
		return nil, err
	}
	// ip_forward may have been turned off since the start.
	if err := (kernelCheck{procSys: k.procSys}).forwarding(); err != nil {
		k.release(slot)
		return nil, err
	}
	kt := &kernelTun{k: k, plan: plan, stop: make(chan struct{})}
	defer func() {
		if err != nil {
			kt.close()
		}
	}()
	for i, sn := range plan.subnets {
		if err := checkRoute(sn.machine); err != nil {
			return nil, fmt.Errorf("tunnel_up: ssc_subnets[%d]: %w", i, err)
		}
	}
	if kt.dev, err = tun.CreateTUN(plan.name, wg.MTU); err != nil {
		return nil, fmt.Errorf("ssc kernel_tun: create TUN %s: %w (does the agent have CAP_NET_ADMIN and /dev/net/tun? see %s)", plan.name, err, DropIn)
	}
	link, err := netlink.LinkByName(plan.name)
	if err != nil {
		return nil, fmt.Errorf("ssc kernel_tun: %s: %w", plan.name, err)
	}
	if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: ipNet(netip.PrefixFrom(plan.addr, 32))}); err != nil {
		return nil, fmt.Errorf("ssc kernel_tun: address %s on %s: %w (is it already used by another interface?)", plan.addr, plan.name, err)
	}
	// IPv4 only: no IPv6 link-local address, so the kernel sends no
	// router or neighbour solicitations into the tunnel (a kernel without
	// IPv6 refuses this, which is fine).
	_ = netlink.LinkSetIP6AddrGenMode(link, 1) // IN6_ADDR_GEN_MODE_NONE
	if err := netlink.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("ssc kernel_tun: set %s up: %w", plan.name, err)
	}
	// The grant's routing table holds only what lies behind the tunnel
	// (engineers, the hub), so the grant's marked packets towards the
	// machines fall through to the main table.
	for _, dst := range []netip.Prefix{plan.clients, netip.PrefixFrom(plan.hub, 32)} {
		if err := netlink.RouteReplace(&netlink.Route{LinkIndex: link.Attrs().Index, Table: plan.table, Scope: netlink.SCOPE_LINK, Dst: ipNet(dst)}); err != nil {
			return nil, fmt.Errorf("ssc kernel_tun: route %s in table %d: %w", dst, plan.table, err)
		}
	}
	for _, r := range plan.ipRules() {
		if err := netlink.RuleAdd(r); err != nil {
			return nil, fmt.Errorf("ssc kernel_tun: ip rule to table %d: %w", plan.table, err)
		}
	}
	nc, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("ssc kernel_tun: nftables: %w", err)
	}
	t, chains, rules := plan.ruleset()
	nc.DelTable(t) // a leftover with this name (AddTable alone would merge into it)
	_ = nc.Flush()
	nc.AddTable(t)
	for _, c := range chains {
		nc.AddChain(c)
	}
	for _, r := range rules {
		nc.AddRule(r)
	}
	if err := nc.Flush(); err != nil {
		return nil, fmt.Errorf("ssc kernel_tun: install nftables table %s: %w", plan.name, err)
	}
	if consent == nil {
		return kt, nil
	}
	// Local consent: the kernel forwards without asking the agent, so a
	// gate rule drops new engineer flows while consent is missing (as the
	// userspace router refuses them); flows already running continue.
	if err := kt.setGate(consent() != nil); err != nil {
		return nil, err
	}
	kt.done = make(chan struct{})
	go kt.watchConsent(consent)
	return kt, nil
}

// consentPoll is how often kernel_tun re-reads the local consent input.
const consentPoll = 250 * time.Millisecond

func (kt *kernelTun) watchConsent(consent func() error) {
	defer close(kt.done)
	tk := time.NewTicker(consentPoll)
	defer tk.Stop()
	for {
		select {
		case <-kt.stop:
			return
		case <-tk.C:
		}
		err := consent()
		if closed := err != nil; closed != kt.gate {
			if gerr := kt.setGate(closed); gerr != nil {
				kt.k.log.Error("ssc kernel_tun: cannot follow local consent", "interface", kt.plan.name, "err", gerr)
				continue
			}
			kt.k.log.Info("ssc kernel_tun: local consent changed", "interface", kt.plan.name, "new_flows_allowed", !closed, "reason", err)
		}
	}
}

// setGate installs (closed) or removes the rule that drops new engineer
// flows.
func (kt *kernelTun) setGate(closed bool) error {
	nc, err := nftables.New()
	if err != nil {
		return err
	}
	t, chain, rule := kt.plan.gateRule()
	if closed {
		nc.InsertRule(rule)
	} else {
		rules, err := nc.GetRules(t, chain)
		if err != nil {
			return fmt.Errorf("list rules of %s: %w", kt.plan.name, err)
		}
		for _, r := range rules {
			if string(r.UserData) == gateTag {
				if err := nc.DelRule(r); err != nil {
					return err
				}
			}
		}
	}
	if err := nc.Flush(); err != nil {
		return fmt.Errorf("consent gate in %s: %w", kt.plan.name, err)
	}
	kt.gate = closed
	return nil
}

// ipRules route the grant's replies into its interface: flows marked in
// nftables (engineer flows), and packets from the tunnel address (the
// GANTRY-TUNNEL/1 listener's answers to the hub).
func (p kernelPlan) ipRules() []*netlink.Rule {
	byMark := netlink.NewRule()
	byMark.Family, byMark.Priority, byMark.Table, byMark.Mark = unix.AF_INET, ktunRulePref, p.table, p.mark
	mask := ^uint32(0)
	byMark.Mask = &mask
	bySrc := netlink.NewRule()
	bySrc.Family, bySrc.Priority, bySrc.Table, bySrc.Src = unix.AF_INET, ktunRulePref, p.table, ipNet(netip.PrefixFrom(p.addr, 32))
	return []*netlink.Rule{byMark, bySrc}
}

// checkRoute makes sure the machine subnet is reachable from the agent,
// and not through a kernel-TUN interface (a loop).
func checkRoute(machine netip.Prefix) error {
	probe := machine.Addr()
	if machine.Bits() < 32 {
		probe = probe.Next() // the first host
	}
	routes, err := netlink.RouteGet(probe.AsSlice())
	if err != nil || len(routes) == 0 {
		return fmt.Errorf("machine subnet %s has no route on this device: connect the agent to the machine network or fix the template's subnet", machine)
	}
	if l, err := netlink.LinkByIndex(routes[0].LinkIndex); err == nil && strings.HasPrefix(l.Attrs().Name, ktunPrefix) {
		return fmt.Errorf("machine subnet %s is routed into %s, another grant's tunnel: it overlaps that grant's engineer or tunnel addresses", machine, l.Attrs().Name)
	}
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}
}

// close removes the grant's table, ip rules, interface and conntrack
// entries; idempotent. The WireGuard device (which owns the TUN) is
// closed first by the caller, so no packet enters while the rules go.
func (kt *kernelTun) close() {
	kt.once.Do(func() {
		close(kt.stop)
		if kt.done != nil {
			<-kt.done
		}
		p := kt.plan
		var errs []error
		if kt.dev != nil {
			kt.dev.Close() // also closed by the WireGuard device; a second close is harmless
		}
		if l, err := netlink.LinkByName(p.name); err == nil {
			if err := netlink.LinkDel(l); err != nil {
				errs = append(errs, fmt.Errorf("delete %s: %w", p.name, err))
			}
		}
		for _, r := range p.ipRules() {
			if err := netlink.RuleDel(r); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("delete ip rule: %w", err))
			}
		}
		if nc, err := nftables.New(); err == nil {
			nc.DelTable(p.nftTable())
			if err := nc.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("delete nftables table %s: %w", p.name, err))
			}
		}
		// Flows NATed for this grant: their conntrack entries would keep
		// translating stray packets.
		if _, err := netlink.ConntrackDeleteFilters(netlink.ConntrackTable, unix.AF_INET, markFilter(p.mark)); err != nil {
			errs = append(errs, fmt.Errorf("delete conntrack entries: %w", err))
		}
		if err := errors.Join(errs...); err != nil {
			kt.k.log.Warn("ssc kernel_tun: teardown incomplete; the next agent start removes the rest", "interface", p.name, "err", err)
		}
		kt.k.release(p.slot)
	})
}

func (k *kernelNet) release(slot int) {
	k.mu.Lock()
	k.slots[slot] = false
	k.mu.Unlock()
}

type markFilter uint32

func (m markFilter) MatchConntrackFlow(f *netlink.ConntrackFlow) bool { return f.Mark == uint32(m) }

// listen opens the GANTRY-TUNNEL/1 listener on the tunnel address (a
// kernel socket: the interface has no stack of its own).
func (kt *kernelTun) listen(port int) (net.Listener, error) {
	return net.Listen("tcp4", net.JoinHostPort(kt.plan.addr.String(), strconv.Itoa(port)))
}
