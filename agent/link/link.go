// Package link keeps the agent's MQTT session with the control plane: it
// connects with the device certificate (mTLS), leaves a will that marks
// the device offline, publishes its retained online state after every
// (re)connect, reconnects with backoff and jitter, and hands incoming
// commands to a handler.
package link

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gantry-iot/gantry/pkg/topics"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
)

// Config configures a Link.
type Config struct {
	DeviceID     string
	BrokerURL    string // tls://host:port
	Certificate  tls.Certificate
	RootCAs      *x509.CertPool
	AgentVersion string
	KeepAlive    time.Duration // default 30s
	// ConnectTimeout bounds one connection attempt, TLS handshake
	// included (default 10s: a busy broker after a restart answers late).
	ConnectTimeout time.Duration
	// Reconnect schedule (see Backoff): attempt n after a lost connection
	// waits a random time in [(1−Jitter)·b, b] with b = MinBackoff·2^(n−1)
	// capped at MaxBackoff, and capped at RecentCap(MinBackoff, MaxBackoff)
	// during the first RecentWindow after losing a connection that was up.
	// Defaults: MinBackoff 1 s, MaxBackoff 60 s; Jitter is a fraction in
	// [0, 1] (1: full jitter; 0: none).
	MinBackoff time.Duration
	MaxBackoff time.Duration
	Jitter     float64
	// OnAttempt, if set, is called right before each reconnect attempt
	// (after its wait) with the attempt's number since the connection was
	// lost (for load tests). Keep it short.
	OnAttempt func(attempt int)
	// OnCommand receives raw command payloads (verification happens in the
	// command handler, not here). May be nil.
	OnCommand func(payload []byte)
}

// Link is a live MQTT session. Safe for concurrent use.
type Link struct {
	cfg       Config
	client    paho.Client
	log       *slog.Logger
	closing   chan struct{} // closed by Close: ends a reconnect wait
	closeOnce sync.Once
}

func statePayload(online bool, version string) []byte {
	b, _ := proto.Marshal(&gantryv1.DeviceState{Online: online, AgentVersion: version, At: timestamppb.Now()})
	return b
}

// Dial connects (retrying until ctx ends) and returns the Link.
func Dial(ctx context.Context, cfg Config, logger *slog.Logger) (*Link, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if !topics.ValidDeviceID(cfg.DeviceID) {
		return nil, fmt.Errorf("link: invalid device ID %q", cfg.DeviceID)
	}
	u, err := url.Parse(cfg.BrokerURL)
	if err != nil || u.Scheme != "tls" || u.Host == "" {
		return nil, fmt.Errorf("link: broker URL %q: want tls://host:port", cfg.BrokerURL)
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	if cfg.KeepAlive == 0 {
		cfg.KeepAlive = 30 * time.Second
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 60 * time.Second
	}
	host := u.Hostname()
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = time.Second
	}
	if cfg.Jitter < 0 || cfg.Jitter > 1 {
		return nil, fmt.Errorf("link: jitter %v: want a fraction in [0, 1]", cfg.Jitter)
	}
	if cfg.MinBackoff > cfg.MaxBackoff {
		return nil, fmt.Errorf("link: min backoff %v is longer than max backoff %v: lower the minimum or raise the maximum", cfg.MinBackoff, cfg.MaxBackoff)
	}
	l := &Link{cfg: cfg, log: logger, closing: make(chan struct{})}
	bo := &Backoff{Min: cfg.MinBackoff, Max: cfg.MaxBackoff, Jitter: cfg.Jitter, Rand: rand.Float64}
	stateTopic := topics.Device(cfg.DeviceID, topics.State)
	opts := paho.NewClientOptions().
		AddBroker("tls://"+u.Host).
		SetClientID(cfg.DeviceID).
		// A session cache of this link's own (never shared between
		// devices: a ticket stands for the certificate it was issued to)
		// lets a reconnect resume the TLS session instead of a full mTLS
		// handshake; the broker still checks the certificate for
		// revocation at CONNECT.
		SetTLSConfig(&tls.Config{Certificates: []tls.Certificate{cfg.Certificate}, RootCAs: cfg.RootCAs, ServerName: host, MinVersion: tls.VersionTLS12,
			ClientSessionCache: &sessionCache{}}).
		SetKeepAlive(cfg.KeepAlive).
		SetConnectTimeout(cfg.ConnectTimeout).
		// A broker that answers a ping late is busy, not gone: dropping
		// the connection after paho's 10 s would add a handshake to its
		// load (seen with 10,000 agents after a control-plane restart).
		SetPingTimeout(cfg.KeepAlive).
		// Clean sessions: delivery guarantees live in the agent's durable
		// queue (acked only after PUBACK, rewound on reconnect), not in
		// paho's in-memory store.
		SetCleanSession(true).
		// paho still resends its in-flight publishes after a reconnect,
		// setting Dup on the stored packets while its writer may be
		// sending the same packets (a data race, paho v1.5.1,
		// eclipse-paho/paho.mqtt.golang#703): the store hands out copies.
		SetStore(newCopyingStore()).
		SetOrderMatters(false).
		SetAutoReconnect(true).
		// paho's own reconnect backoff (1 s doubling, no jitter) is reduced
		// to a few milliseconds; the reconnecting handler waits instead.
		SetMaxReconnectInterval(pahoBackoff).
		SetConnectRetry(true).
		SetConnectRetryInterval(2*time.Second).
		SetBinaryWill(stateTopic, statePayload(false, cfg.AgentVersion), 1, true).
		SetReconnectingHandler(func(paho.Client, *paho.ClientOptions) {
			n, d := bo.Next(time.Now())
			if d > 0 {
				t := time.NewTimer(d)
				select {
				case <-t.C:
				case <-l.closing: // Close: paho's Disconnect waits for this attempt
					t.Stop()
				}
			}
			if cfg.OnAttempt != nil {
				cfg.OnAttempt(n)
			}
		}).
		SetOnConnectHandler(func(c paho.Client) {
			bo.Connected(time.Now())
			logger.Info("connected to broker", "broker", u.Host)
			// Subscribe before announcing "online": the control plane
			// sends pending commands (e.g. tunnels) when it sees it.
			st := c.Subscribe(topics.Device(cfg.DeviceID, topics.Cmd), 1, func(_ paho.Client, m paho.Message) {
				if cfg.OnCommand != nil {
					cfg.OnCommand(m.Payload())
				}
			})
			if !st.WaitTimeout(10*time.Second) || st.Error() != nil {
				logger.Warn("command subscription not confirmed", "err", st.Error())
			}
			c.Publish(stateTopic, 1, true, statePayload(true, cfg.AgentVersion))
		}).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			logger.Warn("broker connection lost; reconnecting with backoff", "err", err)
		})
	l.client = paho.NewClient(opts)
	tok := l.client.Connect()
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			return nil, fmt.Errorf("link: connect: %w", err)
		}
	case <-ctx.Done():
		l.client.Disconnect(0)
		return nil, ctx.Err()
	}
	// With connect retry, Done fires on the first attempt's outcome only
	// when it succeeds; wait for the session.
	for !l.client.IsConnected() {
		select {
		case <-ctx.Done():
			l.client.Disconnect(0)
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return l, nil
}

// sessionCache holds the link's TLS session (one broker). Go's TLS client
// drops a session whenever a resumed handshake fails, also for a timeout
// or a reset from an overloaded broker, which turns the next attempt into
// a full handshake just when the broker is busiest; this cache keeps the
// session through two such failures and drops it at the third in a row
// (so a session the broker really refuses is gone after three attempts).
type sessionCache struct {
	mu    sync.Mutex
	key   string
	cs    *tls.ClientSessionState
	drops int
}

func (c *sessionCache) Get(key string) (*tls.ClientSessionState, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cs == nil || key != c.key {
		return nil, false
	}
	return c.cs, true
}

func (c *sessionCache) Put(key string, cs *tls.ClientSessionState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cs == nil {
		if key != c.key {
			return
		}
		if c.drops++; c.drops >= 3 {
			c.cs, c.drops = nil, 0
		}
		return
	}
	c.key, c.cs, c.drops = key, cs, 0
}

const (
	pahoBackoff = 5 * time.Millisecond
	// RecentWindow is how long after losing a connection that was up the
	// reconnect backoff stays capped at RecentCap: a control plane that
	// restarts is usually back within seconds, and its devices should find
	// it soon after.
	RecentWindow = 2 * time.Minute
	// StableAfter is how long a connection must have lasted for the next
	// outage to start the backoff from MinBackoff again; a connection
	// that drops sooner (a flapping broker) keeps doubling.
	StableAfter = 10 * time.Second
)

// RecentCap is the longest backoff during RecentWindow after losing a
// connection that was up: 8 × min, at most max (8 s by default).
func RecentCap(min, max time.Duration) time.Duration { return minDuration(8*min, max) }

// Backoff is the link's reconnect schedule (capped exponential backoff
// with jitter). Next and Connected may be called from different
// goroutines.
type Backoff struct {
	Min, Max time.Duration
	Jitter   float64        // fraction of each wait that is random, [0, 1]
	Rand     func() float64 // uniform in [0, 1)

	mu          sync.Mutex
	attempt     int       // attempts in this outage (and flapping ones before it)
	connectedAt time.Time // last successful connect; zero: never connected
	lostAt      time.Time // start of the current outage; zero while connected
}

// Connected records a successful connect at now.
func (b *Backoff) Connected(now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.connectedAt, b.lostAt = now, time.Time{}
}

// Next returns the number of the next reconnect attempt and how long to
// wait before it.
func (b *Backoff) Next(now time.Time) (int, time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.lostAt.IsZero() { // first attempt of an outage
		b.lostAt = now
		if b.connectedAt.IsZero() || now.Sub(b.connectedAt) >= StableAfter {
			b.attempt = 0
		}
	}
	b.attempt++
	limit := b.Max
	if !b.connectedAt.IsZero() && now.Sub(b.lostAt) < RecentWindow {
		limit = RecentCap(b.Min, b.Max)
	}
	return b.attempt, Wait(b.attempt, b.Min, limit, b.Jitter, b.Rand())
}

// Wait is the wait before reconnect attempt n (1, 2, …): the backoff
// b = min·2^(n−1), capped at max, minus its random part: b × (1 − jitter
// × r) for r uniform in [0, 1). jitter 1 is "full jitter" (uniform in
// [0, b]), 0 a fixed b.
func Wait(n int, min, max time.Duration, jitter, r float64) time.Duration {
	if n < 1 {
		return 0
	}
	backoff := min
	for i := 1; i < n && backoff < max; i++ {
		backoff *= 2
	}
	backoff = minDuration(backoff, max)
	return time.Duration((1 - jitter*r) * float64(backoff))
}

func minDuration(a, b time.Duration) time.Duration {
	if a < b {
		return a
	}
	return b
}

// Publish sends payload on the device's topic of kind k with QoS 1 and
// waits for the broker's acknowledgement.
func (l *Link) Publish(ctx context.Context, k topics.Kind, payload []byte) error {
	tok := l.client.Publish(topics.Device(l.cfg.DeviceID, k), 1, false, payload)
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Connected reports whether the session is up.
func (l *Link) Connected() bool { return l.client.IsConnectionOpen() }

// Close publishes the offline state and disconnects cleanly.
func (l *Link) Close() error {
	l.closeOnce.Do(func() { close(l.closing) })
	tok := l.client.Publish(topics.Device(l.cfg.DeviceID, topics.State), 1, true, statePayload(false, l.cfg.AgentVersion))
	tok.WaitTimeout(2 * time.Second)
	l.client.Disconnect(500)
	return nil
}

// PublishAsync starts a QoS 1 publish of a queued record (a
// gantryv1.QueuedRecord): samples as a TelemetryBatch on the device's
// telemetry topic, events as an EventBatch on its events topic, stamped
// with the queue sequence seq (so the control plane can recognise
// redeliveries); done gets nil after the broker's PUBACK, or the error.
func (l *Link) PublishAsync(seq uint64, payload []byte, done func(error)) {
	kind, out, err := Message(seq, payload)
	if err != nil {
		done(err)
		return
	}
	tok := l.client.Publish(topics.Device(l.cfg.DeviceID, kind), 1, false, out)
	go func() {
		if !tok.WaitTimeout(30 * time.Second) {
			done(errors.New("no PUBACK within 30s"))
			return
		}
		done(tok.Error())
	}()
}

// Message turns the queue record seq into the message to publish and its
// topic kind. A record that is not a QueuedRecord, or holds both samples
// and events, gives a permanent error (see forward.Permanent).
func Message(seq uint64, payload []byte) (topics.Kind, []byte, error) {
	if out, ok := telemetryFast(seq, payload); ok {
		return topics.Telemetry, out, nil
	}
	return messageDecoded(seq, payload)
}

// messageDecoded is Message by decoding the record and encoding the batch.
func messageDecoded(seq uint64, payload []byte) (topics.Kind, []byte, error) {
	var r gantryv1.QueuedRecord
	if err := proto.Unmarshal(payload, &r); err != nil {
		return "", nil, badRecord{fmt.Errorf("queued record %d is not a queue record: %w", seq, err)}
	}
	var (
		kind topics.Kind
		msg  proto.Message
	)
	switch {
	case len(r.Events) > 0 && len(r.Samples) > 0:
		return "", nil, badRecord{fmt.Errorf("queued record %d holds both samples and events", seq)}
	case len(r.Events) > 0:
		kind, msg = topics.Events, &gantryv1.EventBatch{Seq: seq, Events: r.Events}
	default:
		kind, msg = topics.Telemetry, &gantryv1.TelemetryBatch{Seq: seq, Samples: r.Samples}
	}
	out, err := proto.Marshal(msg)
	if err != nil {
		return "", nil, err
	}
	return kind, out, nil
}

// telemetryFast builds the TelemetryBatch of a record that holds only
// samples without decoding them: QueuedRecord's samples are field 2 like
// TelemetryBatch's, so the batch is its seq (field 1) followed by the
// record's bytes — what proto.Marshal writes for the decoded record. It
// declines (ok false) records with other fields (events, a bare
// TelemetryBatch's seq from before events existed, unknown fields) or
// broken framing; Message decodes those.
func telemetryFast(seq uint64, payload []byte) ([]byte, bool) {
	b := payload
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || num != 2 || typ != protowire.BytesType {
			return nil, false
		}
		b = b[n:]
		if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
			return nil, false
		}
		b = b[n:]
	}
	out := make([]byte, 0, 1+protowire.SizeVarint(seq)+len(payload))
	if seq != 0 {
		out = protowire.AppendTag(out, 1, protowire.VarintType)
		out = protowire.AppendVarint(out, seq)
	}
	return append(out, payload...), true
}

// badRecord is a permanent publish failure (see forward.Permanent).
type badRecord struct{ error }

func (badRecord) Permanent() bool { return true }

func (b badRecord) Unwrap() error { return b.error }

// copyingStore is paho's MemoryStore whose Get returns a copy of a stored
// PUBLISH, so that paho's resume, which marks the packets it gets as
// duplicates, never writes to a packet its writer goroutine is encoding.
type copyingStore struct{ *paho.MemoryStore }

func newCopyingStore() copyingStore { return copyingStore{paho.NewMemoryStore()} }

// Get returns the stored packet, a PUBLISH as a shallow copy (the payload
// is shared and never modified).
func (s copyingStore) Get(key string) packets.ControlPacket {
	p := s.MemoryStore.Get(key)
	if pub, ok := p.(*packets.PublishPacket); ok {
		c := *pub
		return &c
	}
	return p
}
