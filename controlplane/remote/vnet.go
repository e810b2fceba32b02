package remote

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/gantry-iot/gantry/controlplane/errkind"
	"github.com/gantry-iot/gantry/pkg/machinemodel"
)

// VirtualPrefix is where grants' virtual machine subnets come from
// (shared address space, RFC 6598); the hub's tunnel network and the SSC
// engineer pool inside it are skipped.
var VirtualPrefix = netip.MustParsePrefix("100.64.0.0/10")

// ErrNoVirtualSubnet is returned when VirtualPrefix has no free block.
var ErrNoVirtualSubnet = errkind.New(errkind.Exhausted, "", "no free virtual subnet for Secure Service Connect; try again when other sessions have ended")

// vnetPool hands out blocks of VirtualPrefix, each aligned to its size,
// never overlapping each other or the reserved prefixes. Not safe for
// concurrent use (the hub's lock guards it).
type vnetPool struct {
	reserved []netip.Prefix
	used     []netip.Prefix
}

func (v *vnetPool) alloc(bits int) (netip.Prefix, error) {
	if bits < machinemodel.MinSubnetBits || bits > 32 {
		return netip.Prefix{}, fmt.Errorf("virtual subnet size /%d out of range", bits)
	}
	base := VirtualPrefix.Masked().Addr().As4()
	start := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	step := uint64(1) << (32 - bits)
	end := uint64(start) + uint64(1)<<(32-VirtualPrefix.Bits())
	for a := uint64(start); a+step <= end; a += step {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)}), bits)
		if slices.ContainsFunc(v.reserved, p.Overlaps) || slices.ContainsFunc(v.used, p.Overlaps) {
			continue
		}
		v.used = append(v.used, p)
		return p, nil
	}
	return netip.Prefix{}, ErrNoVirtualSubnet
}

func (v *vnetPool) free(p netip.Prefix) {
	v.used = slices.DeleteFunc(v.used, func(q netip.Prefix) bool { return q == p })
}
