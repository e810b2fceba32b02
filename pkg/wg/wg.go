// Package wg runs a userspace WireGuard interface (wireguard-go with the
// gVisor netstack, no root, no kernel module) for the control plane's hub
// and the agent's per-grant tunnels, and generates WireGuard keys.
package wg

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"golang.org/x/crypto/curve25519"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// MTU of the tunnel interfaces: 1420 leaves room for WireGuard's overhead
// inside a 1500-byte path.
const MTU = 1420

// Key is a Curve25519 key (private, public or preshared).
type Key [32]byte

// NewPrivateKey returns a fresh, clamped private key.
func NewPrivateKey() (Key, error) {
	var k Key
	if _, err := rand.Read(k[:]); err != nil {
		return Key{}, err
	}
	k[0] &= 248
	k[31] = (k[31] & 127) | 64
	return k, nil
}

// NewPresharedKey returns 32 random bytes.
func NewPresharedKey() (Key, error) {
	var k Key
	_, err := rand.Read(k[:])
	return k, err
}

// Public returns the public key of private key k.
func (k Key) Public() Key {
	var p Key
	pub, err := curve25519.X25519(k[:], curve25519.Basepoint)
	if err != nil {
		panic(err) // only for low-order points, impossible for a clamped key
	}
	copy(p[:], pub)
	return p
}

// Hex is the key as WireGuard's configuration protocol writes it.
func (k Key) Hex() string { return hex.EncodeToString(k[:]) }

// String is the key in base64, as wg(8) and wg-quick configs write it.
func (k Key) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// ParsePublicKey parses a public key in wg(8)'s base64 form and rejects
// keys no WireGuard handshake can succeed with: not standard base64, not
// 32 bytes, all zero, or a low-order point (whose shared secret is zero).
func ParsePublicKey(s string) (Key, error) {
	s = strings.TrimSpace(s)
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return Key{}, fmt.Errorf("not a WireGuard key: it must be standard base64 as `wg pubkey` prints it (44 characters ending in '=')")
	}
	k, err := KeyFromBytes(b)
	if err != nil {
		return Key{}, err
	}
	if k == (Key{}) {
		return Key{}, fmt.Errorf("the key is all zeros; generate one with `wg genkey | wg pubkey`")
	}
	var probe Key
	probe[0] = 1
	if _, err := curve25519.X25519(probe[:], k[:]); err != nil {
		return Key{}, fmt.Errorf("the key is a low-order point no handshake can use; generate one with `wg genkey | wg pubkey`")
	}
	return k, nil
}

// KeyFromBytes checks the length of b.
func KeyFromBytes(b []byte) (Key, error) {
	var k Key
	if len(b) != len(k) {
		return Key{}, fmt.Errorf("a WireGuard key has 32 bytes, got %d", len(b))
	}
	copy(k[:], b)
	return k, nil
}

// Interface is one userspace WireGuard interface with its own TCP/IP
// stack.
type Interface struct {
	dev  *device.Device
	st   *stackTUN
	addr netip.Addr
}

// Config is an interface's own configuration.
type Config struct {
	PrivateKey Key
	Address    netip.Addr // the interface's address inside the tunnel
	ListenPort int        // UDP; 0 picks a free port
	Logger     *slog.Logger
	// Wrap, if set, wraps the TUN device between WireGuard and the stack
	// (the hub's SSC forwarding sees every packet there).
	Wrap func(tun.Device) tun.Device
	// TUN, if set, is the device WireGuard runs on instead of the
	// interface's own gVisor stack (the agent's Secure Service Connect
	// kernel-TUN mode: a kernel TUN interface, so the kernel routes and
	// NATs). Such an interface has no stack: DialTCP, ListenTCP, DialUDP,
	// WritePacket and Stack are unavailable (callers use the kernel's
	// sockets). Close closes the device.
	TUN tun.Device
	// OnSpoofedSource, if set, is called for each decrypted packet
	// WireGuard dropped because its source address is not in the sending
	// peer's AllowedIPs (cryptokey routing).
	OnSpoofedSource func()
}

// New creates and brings up an interface.
func New(cfg Config) (*Interface, error) {
	if !cfg.Address.IsValid() {
		return nil, fmt.Errorf("wg: the interface needs an address")
	}
	var st *stackTUN
	tdev := cfg.TUN
	if tdev == nil {
		var err error
		if st, err = newStackTUN(cfg.Address, MTU); err != nil {
			return nil, err
		}
		tdev = st
	}
	if cfg.Wrap != nil {
		tdev = cfg.Wrap(tdev)
	}
	lg := cfg.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	logger := &device.Logger{
		Verbosef: func(f string, a ...any) {
			if cfg.OnSpoofedSource != nil && strings.HasPrefix(f, "IPv4 packet with disallowed source address") {
				cfg.OnSpoofedSource()
				return
			}
			if lg.Enabled(context.Background(), slog.LevelDebug) {
				lg.Debug("wireguard: " + fmt.Sprintf(f, a...))
			}
		},
		Errorf: func(f string, a ...any) { lg.Warn("wireguard: " + fmt.Sprintf(f, a...)) },
	}
	dev := device.NewDevice(tdev, conn.NewDefaultBind(), logger)
	if err := dev.IpcSet(fmt.Sprintf("private_key=%s\nlisten_port=%d\n", cfg.PrivateKey.Hex(), cfg.ListenPort)); err != nil {
		dev.Close()
		return nil, fmt.Errorf("wg: configure: %w", err)
	}
	if err := dev.Up(); err != nil {
		dev.Close()
		return nil, fmt.Errorf("wg: up: %w (is UDP port %d free?)", err, cfg.ListenPort)
	}
	return &Interface{dev: dev, st: st, addr: cfg.Address}, nil
}

// Peer is a WireGuard peer.
type Peer struct {
	PublicKey    Key
	PresharedKey Key
	// Endpoint is the peer's UDP address; empty lets the peer's first
	// handshake set it (the hub never knows agents' addresses in advance).
	Endpoint   netip.AddrPort
	AllowedIPs []netip.Prefix
	// KeepaliveSeconds > 0 sends keepalives, so the side behind NAT
	// initiates the handshake at once and keeps the mapping open.
	KeepaliveSeconds int
}

// SetPeer adds a peer or replaces an existing one with the same key.
func (i *Interface) SetPeer(p Peer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "public_key=%s\nreplace_allowed_ips=true\npreshared_key=%s\n", p.PublicKey.Hex(), p.PresharedKey.Hex())
	if p.Endpoint.IsValid() {
		fmt.Fprintf(&b, "endpoint=%s\n", p.Endpoint)
	}
	for _, a := range p.AllowedIPs {
		fmt.Fprintf(&b, "allowed_ip=%s\n", a)
	}
	if p.KeepaliveSeconds > 0 {
		fmt.Fprintf(&b, "persistent_keepalive_interval=%d\n", p.KeepaliveSeconds)
	}
	if err := i.dev.IpcSet(b.String()); err != nil {
		return fmt.Errorf("wg: set peer: %w", err)
	}
	return nil
}

// RemovePeer removes a peer; its packets are dropped from then on.
func (i *Interface) RemovePeer(pub Key) error {
	if err := i.dev.IpcSet(fmt.Sprintf("public_key=%s\nremove=true\n", pub.Hex())); err != nil {
		return fmt.Errorf("wg: remove peer: %w", err)
	}
	return nil
}

// ListenPort is the UDP port the interface listens on.
func (i *Interface) ListenPort() int {
	s, err := i.dev.IpcGet()
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(s, "\n") {
		if v, ok := strings.CutPrefix(line, "listen_port="); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return 0
}

// PeerStats are a peer's counters.
type PeerStats struct {
	RxBytes, TxBytes  int64
	LastHandshakeUnix int64
}

// Stats returns per-peer counters keyed by public key.
func (i *Interface) Stats() map[Key]PeerStats {
	s, err := i.dev.IpcGet()
	out := map[Key]PeerStats{}
	if err != nil {
		return out
	}
	var cur *PeerStats
	var key Key
	flush := func() {
		if cur != nil {
			out[key] = *cur
		}
	}
	for line := range strings.SplitSeq(s, "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		switch k {
		case "public_key":
			flush()
			b, _ := hex.DecodeString(v)
			key, _ = KeyFromBytes(b)
			cur = &PeerStats{}
		case "rx_bytes":
			if cur != nil {
				cur.RxBytes, _ = strconv.ParseInt(v, 10, 64)
			}
		case "tx_bytes":
			if cur != nil {
				cur.TxBytes, _ = strconv.ParseInt(v, 10, 64)
			}
		case "last_handshake_time_sec":
			if cur != nil {
				cur.LastHandshakeUnix, _ = strconv.ParseInt(v, 10, 64)
			}
		}
	}
	flush()
	return out
}

// Address is the interface's address inside the tunnel.
func (i *Interface) Address() netip.Addr { return i.addr }

// errNoStack is returned by the stack's methods on an interface that runs
// on a device of the caller's (Config.TUN).
var errNoStack = errors.New("wg: the interface runs on a kernel TUN device and has no stack of its own; use the kernel's sockets")

// DialTCP connects through the tunnel.
func (i *Interface) DialTCP(ctx context.Context, to netip.AddrPort) (net.Conn, error) {
	if i.st == nil {
		return nil, errNoStack
	}
	return i.st.dialTCP(ctx, to)
}

// ListenTCP listens on the interface's address.
func (i *Interface) ListenTCP(port int) (net.Listener, error) {
	if i.st == nil {
		return nil, errNoStack
	}
	return i.st.listenTCP(netip.AddrPortFrom(i.addr, uint16(port)))
}

// DialUDP opens a UDP socket from the interface's address (port 0: any)
// connected to to.
func (i *Interface) DialUDP(to netip.AddrPort) (net.Conn, error) {
	if i.st == nil {
		return nil, errNoStack
	}
	return i.st.dialUDP(netip.AddrPortFrom(i.addr, 0), to)
}

// WritePacket sends a raw IPv4 packet through the tunnel as if the
// interface's stack had sent it (the agent's ICMP echo replies from
// addresses it routes).
func (i *Interface) WritePacket(p []byte) error {
	if len(p) < 20 || p[0]>>4 != 4 || len(p) > MTU {
		return fmt.Errorf("wg: not an IPv4 packet of at most %d bytes", MTU)
	}
	if i.st == nil {
		return errNoStack
	}
	return i.st.writeOut(p)
}

// Stack is the interface's gVisor TCP/IP stack (one NIC, ID NIC), for
// callers that attach forwarders (the agent's SSC subnet router); nil on
// an interface that runs on a device of the caller's (Config.TUN).
func (i *Interface) Stack() *stack.Stack {
	if i.st == nil {
		return nil
	}
	return i.st.stack
}

// Close tears the interface down: its UDP socket closes and every
// connection through it fails.
func (i *Interface) Close() {
	i.dev.Close() // closes the TUN device, and with it the stack
	if i.st != nil {
		i.st.Close()
	}
}
