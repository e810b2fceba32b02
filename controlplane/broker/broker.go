// Package broker is the control plane's embedded MQTT broker (mochi-mqtt):
// TLS with required client certificates, one identity per device (the
// certificate's common name), and an ACL that lets a device publish only
// under gantry/v1/dev/{its ID}/{telemetry|state|events|cmdack} and
// subscribe only to its own cmd topic. The control plane itself uses the
// in-process (inline) client: Subscribe and Publish never touch the network
// and bypass the ACL.
//
// Connection rules, checked at CONNECT (a refusal is logged at Warn with
// its reason and counted in Stats.AuthDenied):
//   - the client certificate's CN is the device ID and must be a valid
//     device ID (topics.CheckDeviceID);
//   - Config.IsRevoked(deviceID, serial) must be false (re-enrollment
//     revokes the previous certificate);
//   - the MQTT client ID must equal the device ID, so no device can take
//     over another device's session;
//   - the username, if given, must equal the device ID;
//   - a will message, if given, must go to a topic the device may publish
//     to (otherwise a device could fake another device's offline state).
//
// Denied publishes and subscriptions are counted in Stats. With MQTT 3.1.1
// a denied QoS 0 publish is dropped silently and a denied QoS 1/2 publish
// closes the connection (3.1.1 has no negative PUBACK); MQTT 5 clients get
// a "not authorized" PUBACK. A denied subscription gets SUBACK 0x80.
//
// The broker keeps no retained messages: devices' retained state and
// wills are delivered to the control plane's subscriptions like any other
// message, and the state they carry lives in the store. Nothing else
// subscribes to device topics here, the broker starts empty with every
// control-plane restart, and mochi copies its whole retained set once a
// second to look for expired messages (10,000 devices: ~8 MB a second).
package broker

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/gantry-iot/gantry/controlplane/pki"
	"github.com/gantry-iot/gantry/pkg/topics"
)

// Defaults for the zero values of Config's limits.
const (
	// DefaultMaxPendingWrites: mochi's own default (8192) reserves about
	// 64 KB per client for the outbound queue; 10k devices then need
	// 1.7–2.5 GiB and stall, while 64 holds about 700 MiB. Devices receive
	// only commands, so 64 queued packets is ample.
	DefaultMaxPendingWrites = 64
	// DefaultMaxInflight bounds the unacknowledged QoS 1/2 messages kept
	// per device session (also while the device is offline); beyond it
	// mochi drops messages (counted in InflightDropped). Commands are rare
	// and carry their own expiry, so 256 is ample.
	DefaultMaxInflight = 256
	// DefaultSessionExpiry is how long a disconnected device's persistent
	// session (subscriptions, queued commands) is kept.
	DefaultSessionExpiry = 24 * time.Hour
	// DefaultMaxPacketSize bounds one MQTT packet (telemetry batches).
	DefaultMaxPacketSize = 1 << 20
)

// Config configures a Broker.
type Config struct {
	// Listen is the TLS listen address, e.g. ":8883" or "127.0.0.1:0".
	Listen string
	// Certificate is the broker's TLS server certificate.
	Certificate tls.Certificate
	// ClientCAs verifies device certificates (the control plane's CA).
	ClientCAs *x509.CertPool
	// IsRevoked reports whether a device's certificate (serial as
	// pki.SerialString) is no longer valid, e.g. because the device was
	// re-enrolled or deleted. It is called once per CONNECT. Nil: nothing
	// is revoked.
	IsRevoked func(deviceID, serial string) bool
	// MaxPendingWrites bounds queued outbound packets per client; 0 means
	// DefaultMaxPendingWrites (see there why not mochi's default).
	MaxPendingWrites int32
	// MaxInflight bounds unacknowledged QoS 1/2 messages per device
	// session; 0 means DefaultMaxInflight.
	MaxInflight uint16
	// SessionExpiry is how long a disconnected persistent session is kept;
	// 0 means DefaultSessionExpiry.
	SessionExpiry time.Duration
	// MaxPacketSize bounds one packet in bytes; 0 means DefaultMaxPacketSize.
	MaxPacketSize uint32
	// OnConnect is called with the device ID when a device goes from no
	// connection to one, OnDisconnect when its last connection ends (a
	// session takeover by the same device calls neither). at is taken
	// under the broker's lock when the change happens: the callbacks run
	// on the connections' goroutines, outside the lock, so two of them for
	// one device may run in either order; order them by at. Keep them
	// short. Either may be nil.
	OnConnect, OnDisconnect func(deviceID string, at time.Time)
	// SessionTicketKeys, if set, are the TLS session-ticket keys (the first
	// encrypts new tickets, all decrypt; see pki.TicketKeys): with keys
	// that survive a restart, reconnecting devices resume their TLS
	// sessions instead of doing a full mTLS handshake. A resumed session
	// carries the device's verified certificate chain from its full
	// handshake, so identity, ACL and the revocation check at CONNECT are
	// the same. Nil: Go's own keys, new in every process.
	SessionTicketKeys [][32]byte
}

// Stats counts broker decisions; export them as Prometheus counters
// (Connected is a gauge). All fields are safe for concurrent reads.
type Stats struct {
	Connected     atomic.Int64 // device connections now open
	NotAcked      atomic.Int64 // publishes refused by an Intercept handler (no PUBACK, connection closed)
	AuthDenied    atomic.Int64 // refused CONNECTs (see package doc)
	PublishDenied atomic.Int64 // publishes refused by the ACL
	SubDenied     atomic.Int64 // subscriptions (and deliveries) refused by the ACL
	Resumed       atomic.Int64 // CONNECTs on a resumed TLS session (no full handshake)
	FullTLS       atomic.Int64 // CONNECTs on a full TLS handshake
	// HandshakeFailed counts TLS handshakes that failed or timed out
	// (HandshakeTimeout), e.g. a certificate not from the CA.
	HandshakeFailed atomic.Int64
}

// Broker is an embedded broker. Safe for concurrent use.
type Broker struct {
	srv   *mqtt.Server
	ln    *listeners.Net
	raw   *handshakeListener // the TLS listener under ln
	tls   *tls.Config
	addr  net.Addr
	log   *slog.Logger
	Stats Stats

	nextSubID atomic.Int64
	closeOnce sync.Once
	closed    atomic.Bool
	started   atomic.Bool

	mu      sync.Mutex
	devices map[string]*deviceConns // by device ID

	intercepts map[topics.Kind]func(topic string, payload []byte) error // set before Start, then read-only
}

// New builds a broker and binds its listener; call Start to serve. A nil
// logger discards logs; mochi's own logs go to the same logger (component
// "mqtt"), its warnings rate-limited to one per message per 10 s.
func New(cfg Config, logger *slog.Logger) (*Broker, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ClientCAs == nil || len(cfg.Certificate.Certificate) == 0 {
		return nil, fmt.Errorf("broker.New: %w: a server certificate and a client CA pool are required (devices authenticate with certificates)", ErrConfig)
	}
	if cfg.MaxPendingWrites < 0 {
		return nil, fmt.Errorf("broker.New: %w: MaxPendingWrites %d is negative", ErrConfig, cfg.MaxPendingWrites)
	}
	if cfg.SessionExpiry < 0 || cfg.SessionExpiry/time.Second > 1<<32-1 {
		return nil, fmt.Errorf("broker.New: %w: SessionExpiry %v out of range (0 for the default, at most ~136 years)", ErrConfig, cfg.SessionExpiry)
	}
	if cfg.MaxPendingWrites == 0 {
		cfg.MaxPendingWrites = DefaultMaxPendingWrites
	}
	if cfg.MaxInflight == 0 {
		cfg.MaxInflight = DefaultMaxInflight
	}
	if cfg.SessionExpiry == 0 {
		cfg.SessionExpiry = DefaultSessionExpiry
	}
	if cfg.MaxPacketSize == 0 {
		cfg.MaxPacketSize = DefaultMaxPacketSize
	}
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumClientWritesPending = cfg.MaxPendingWrites
	caps.MaximumInflight = cfg.MaxInflight
	caps.MaximumSessionExpiryInterval = uint32(cfg.SessionExpiry / time.Second)
	caps.MaximumPacketSize = cfg.MaxPacketSize
	mochiLog := slog.New(newLimitedHandler(logger.Handler(), 10*time.Second, time.Now)).With("component", "mqtt")
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Capabilities: caps, Logger: mochiLog})
	b := &Broker{srv: srv, log: logger, devices: map[string]*deviceConns{}, intercepts: map[topics.Kind]func(string, []byte) error{}}
	if err := srv.AddHook(&authHook{b: b, cfg: cfg}, nil); err != nil {
		return nil, fmt.Errorf("broker.New: %w", err)
	}
	b.tls = &tls.Config{
		Certificates: []tls.Certificate{cfg.Certificate},
		ClientCAs:    cfg.ClientCAs,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	}
	if err := b.SetSessionTicketKeys(cfg.SessionTicketKeys); err != nil {
		return nil, err
	}
	// Our own listening socket, so that Close can stop accepting before
	// mochi disconnects the clients (its listener closes the socket only
	// after that, which with 10,000 devices takes seconds: reconnecting
	// devices' connections then wait in the backlog, unanswered, instead
	// of being refused at once).
	raw, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("broker.New: %w: listen on %s: %w (is another broker using the port? choose another MQTT listen address)", ErrConfig, cfg.Listen, err)
	}
	b.raw = newHandshakeListener(raw, b.tls, HandshakeTimeout, &b.Stats.HandshakeFailed)
	b.ln = listeners.NewNet("tls", b.raw)
	if err := srv.AddListener(b.ln); err != nil {
		b.raw.Close()
		return nil, fmt.Errorf("broker.New: %w", err)
	}
	b.addr = raw.Addr().(*net.TCPAddr)
	return b, nil
}

// Intercept makes handler the receiver of devices' publishes of kind k
// (e.g. topics.Telemetry), called on the publishing device's connection
// after the ACL check and before the broker acknowledges the message: if
// it returns nil the message is acknowledged and consumed (not delivered
// to subscribers: the handler is its only receiver); if it returns an error the message is neither acknowledged
// nor delivered, and the connection is closed, so the device keeps the
// message and sends it again after reconnecting (MQTT 3.1.1 has no
// negative PUBACK). Counted in Stats.NotAcked. Call before Start; one
// handler per kind.
func (b *Broker) Intercept(k topics.Kind, handler func(topic string, payload []byte) error) error {
	if handler == nil || !k.FromDevice() {
		return fmt.Errorf("broker.Intercept(%q): %w: a handler for a kind devices publish is required", k, ErrTopic)
	}
	if b.started.Load() {
		return fmt.Errorf("broker.Intercept(%q): the broker has started; intercept before Start", k)
	}
	if _, dup := b.intercepts[k]; dup {
		return fmt.Errorf("broker.Intercept(%q): already intercepted", k)
	}
	b.intercepts[k] = handler
	return nil
}

// SetSessionTicketKeys replaces the TLS session-ticket keys (e.g. after a
// rotation): keys[0] encrypts new tickets, every key decrypts. Nil or
// empty keeps the current keys. Safe while serving.
func (b *Broker) SetSessionTicketKeys(keys [][32]byte) error {
	if len(keys) == 0 {
		return nil
	}
	for i, k := range keys {
		if k == ([32]byte{}) {
			return fmt.Errorf("broker: %w: session ticket key %d is all zeros (load the keys with pki.LoadOrCreateTicketKeys)", ErrConfig, i)
		}
	}
	b.tls.SetSessionTicketKeys(keys)
	return nil
}

// Start serves in the background until Close.
func (b *Broker) Start() error {
	b.started.Store(true)
	if b.closed.Load() {
		return fmt.Errorf("broker.Start: %w", ErrClosed)
	}
	if err := b.srv.Serve(); err != nil {
		return fmt.Errorf("broker.Start: %w", err)
	}
	return nil
}

// Addr is the listening address (with the real port when Listen had 0).
func (b *Broker) Addr() net.Addr { return b.addr }

// Close stops the broker and disconnects every client; devices' wills are
// published as their connections end. Safe to call more than once.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		b.closed.Store(true)
		_ = b.raw.Close() // refuse new connections first (see New)
		b.srv.Close()
	})
	return nil
}

// InflightDropped is the number of QoS 1/2 messages mochi dropped because
// a client's inflight store was full (Config.MaxInflight).
func (b *Broker) InflightDropped() int64 { return atomic.LoadInt64(&b.srv.Info.InflightDropped) }

// Subscribe registers an in-process handler for a topic filter (wildcards
// allowed). Retained messages matching the filter are delivered at once.
// The handler runs synchronously on the publishing client's goroutine, so
// it must be quick (hand work to a queue if not) and must not modify
// payload. There is no unsubscribe: subscriptions live as long as the
// broker.
func (b *Broker) Subscribe(filter string, handler func(topic string, payload []byte)) error {
	if handler == nil {
		return fmt.Errorf("broker.Subscribe(%q): nil handler", filter)
	}
	if !mqtt.IsValidFilter(filter, false) {
		return fmt.Errorf("broker.Subscribe: %w: %q is not a valid topic filter", ErrTopic, filter)
	}
	id := int(b.nextSubID.Add(1))
	err := b.srv.Subscribe(filter, id, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		handler(pk.TopicName, pk.Payload)
	})
	if err != nil {
		return fmt.Errorf("broker.Subscribe(%q): %w", filter, err)
	}
	return nil
}

// Publish sends a message from the control plane to topic (no wildcards)
// with QoS 0, 1 or 2 towards subscribers; retain keeps it for later
// subscribers. The ACL does not apply to the control plane.
func (b *Broker) Publish(topic string, payload []byte, retain bool, qos byte) error {
	if topic == "" || !mqtt.IsValidFilter(topic, true) {
		return fmt.Errorf("broker.Publish: %w: %q is not a valid topic name (no wildcards, no $SYS)", ErrTopic, topic)
	}
	if qos > 2 {
		return fmt.Errorf("broker.Publish(%q): %w: QoS %d (use 0, 1 or 2)", topic, ErrTopic, qos)
	}
	if b.closed.Load() {
		return fmt.Errorf("broker.Publish(%q): %w", topic, ErrClosed)
	}
	if err := b.srv.Publish(topic, payload, retain, qos); err != nil {
		return fmt.Errorf("broker.Publish(%q): %w", topic, err)
	}
	return nil
}

// devicePublishAllowed reports whether device id may publish to topic.
func devicePublishAllowed(id, topic string) bool {
	dev, kind, err := topics.Parse(topic)
	return err == nil && dev == id && kind.FromDevice()
}

// deviceSubscribeAllowed reports whether device id may subscribe to (and
// receive from) filter: only its own cmd topic, no wildcards.
func deviceSubscribeAllowed(id, filter string) bool {
	dev, kind, err := topics.Parse(filter)
	return err == nil && dev == id && kind == topics.Cmd
}

// authHook authenticates devices by certificate and enforces the ACL.
type authHook struct {
	mqtt.HookBase
	b   *Broker
	cfg Config
}

func (h *authHook) ID() string { return "gantry-device-auth" }

func (h *authHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnSessionEstablish, mqtt.OnSessionEstablished, mqtt.OnDisconnect, mqtt.OnPublish, mqtt.OnWill:
		return true
	}
	return false
}

// peerCert returns the verified client certificate of a connection. The
// TLS handshake has completed by the time CONNECT was read from it.
func peerCert(cl *mqtt.Client) *x509.Certificate {
	tc, ok := cl.Net.Conn.(*tls.Conn)
	if !ok {
		return nil
	}
	st := tc.ConnectionState()
	if !st.HandshakeComplete || len(st.PeerCertificates) == 0 {
		return nil
	}
	return st.PeerCertificates[0]
}

// deviceID is the identity of a client: its certificate's CN.
func deviceID(cl *mqtt.Client) string {
	if c := peerCert(cl); c != nil {
		return c.Subject.CommonName
	}
	return ""
}

func (h *authHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	cert := peerCert(cl)
	id := ""
	if cert != nil {
		id = cert.Subject.CommonName
	}
	deny := func(reason string) bool {
		h.b.Stats.AuthDenied.Add(1)
		h.b.log.Warn("mqtt connection refused", "remote", cl.Net.Remote, "device", id, "client_id", cl.ID, "tls_resumed", resumed(cl), "reason", reason)
		return false
	}
	switch {
	case cert == nil:
		return deny("no verified client certificate")
	case topics.CheckDeviceID(id) != nil:
		return deny(fmt.Sprintf("certificate common name is not a device ID: %v", topics.CheckDeviceID(id)))
	case h.cfg.IsRevoked != nil && h.cfg.IsRevoked(id, pki.SerialString(cert)):
		return deny("certificate revoked (the device was re-enrolled or deleted; enroll it again)")
	case cl.ID != id:
		return deny("client ID must equal the device ID (the certificate's common name)")
	case len(pk.Connect.Username) > 0 && string(pk.Connect.Username) != id:
		return deny("username must be empty or equal the device ID")
	case pk.Connect.WillFlag && !devicePublishAllowed(id, pk.Connect.WillTopic):
		return deny(fmt.Sprintf("will topic %q is not one of the device's own topics", pk.Connect.WillTopic))
	}
	if resumed(cl) {
		h.b.Stats.Resumed.Add(1)
	} else {
		h.b.Stats.FullTLS.Add(1)
	}
	return true
}

// resumed reports whether the client's TLS session was resumed from a
// session ticket.
func resumed(cl *mqtt.Client) bool {
	tc, ok := cl.Net.Conn.(*tls.Conn)
	return ok && tc.ConnectionState().DidResume
}

// OnPublish runs Intercept handlers; mochi calls it after the ACL check
// and before it writes the PUBACK. An intercepted message is consumed:
// acknowledged, but not delivered to subscribers (CodeSuccessIgnore), so
// the broker does not search its topic tree for every telemetry batch.
// A device's retained flag is dropped (see the package doc).
func (h *authHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if cl.Net.Inline {
		return pk, nil
	}
	pk.FixedHeader.Retain = false
	if len(h.b.intercepts) == 0 {
		return pk, nil
	}
	_, kind, err := topics.Parse(pk.TopicName)
	if err != nil {
		return pk, nil
	}
	handle := h.b.intercepts[kind]
	if handle == nil {
		return pk, nil
	}
	if err := handle(pk.TopicName, pk.Payload); err != nil {
		h.b.Stats.NotAcked.Add(1)
		h.b.log.Warn("publish not acknowledged; closing the connection so the device sends it again", "device", deviceID(cl), "topic", pk.TopicName, "err", err)
		_ = h.b.srv.DisconnectClient(cl, packets.ErrServerUnavailable)
		return pk, packets.ErrRejectPacket
	}
	return pk, packets.CodeSuccessIgnore
}

// OnWill publishes a device's will without keeping it retained (see the
// package doc); its subscribers still receive it.
func (h *authHook) OnWill(_ *mqtt.Client, will mqtt.Will) (mqtt.Will, error) {
	will.Retain = false
	return will, nil
}

func (h *authHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if cl.Net.Inline {
		return true
	}
	// mochi checks the ACL only for clients whose CONNECT was accepted,
	// and OnConnectAuthenticate accepts only a client ID equal to the
	// certificate's common name: the ID is the device ID, without the
	// cost of reading the TLS state on every publish.
	id := cl.ID
	if write {
		if devicePublishAllowed(id, topic) {
			return true
		}
		h.b.Stats.PublishDenied.Add(1)
	} else {
		if deviceSubscribeAllowed(id, topic) {
			return true
		}
		h.b.Stats.SubDenied.Add(1)
	}
	h.b.log.Debug("mqtt acl denied", "device", id, "topic", topic, "publish", write)
	return false
}

// Online tracking. A device's connections are registered in
// OnSessionEstablish, which mochi calls before it takes over (and
// disconnects) an older connection with the same client ID; registering
// later would let the old connection's OnDisconnect see zero connections
// and report the device offline in the middle of a takeover. A connection
// that dies between OnSessionEstablish and OnSessionEstablished gets no
// OnDisconnect from mochi; such closed entries are pruned whenever another
// connection of the device ends.

func (h *authHook) OnSessionEstablish(cl *mqtt.Client, _ packets.Packet) {
	if cl.Net.Inline {
		return
	}
	id := deviceID(cl)
	h.b.mu.Lock()
	defer h.b.mu.Unlock()
	d := h.b.devices[id]
	if d == nil {
		d = &deviceConns{conns: map[*mqtt.Client]bool{}}
		h.b.devices[id] = d
	}
	d.conns[cl] = false
}

func (h *authHook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	if cl.Net.Inline {
		return
	}
	id := deviceID(cl)
	h.b.mu.Lock()
	d := h.b.devices[id]
	if d == nil { // not registered: mochi skipped OnSessionEstablish
		d = &deviceConns{conns: map[*mqtt.Client]bool{}}
		h.b.devices[id] = d
	}
	d.conns[cl] = true
	up := !d.online
	d.online = true
	at := time.Now()
	h.b.mu.Unlock()
	h.b.Stats.Connected.Add(1)
	if up && h.cfg.OnConnect != nil {
		h.cfg.OnConnect(id, at)
	}
}

// OnDisconnect may be called twice for one client (when its connection
// ends and again at shutdown); only the first call counts.
func (h *authHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	if cl.Net.Inline {
		return
	}
	id := deviceID(cl)
	var closed int64
	h.b.mu.Lock()
	d := h.b.devices[id]
	if d == nil {
		h.b.mu.Unlock()
		return
	}
	if est, ok := d.conns[cl]; ok {
		delete(d.conns, cl)
		if est {
			closed++
		}
	}
	for c, est := range d.conns {
		if c.Closed() {
			delete(d.conns, c)
			if est {
				closed++
			}
		}
	}
	down := len(d.conns) == 0 && d.online
	if len(d.conns) == 0 {
		delete(h.b.devices, id)
	}
	at := time.Now()
	h.b.mu.Unlock()
	h.b.Stats.Connected.Add(-closed)
	if down && h.cfg.OnDisconnect != nil {
		h.cfg.OnDisconnect(id, at)
	}
}

// deviceConns is one device's open connections (value: the session was
// established) and whether OnConnect was reported. Guarded by Broker.mu.
type deviceConns struct {
	conns  map[*mqtt.Client]bool
	online bool
}
