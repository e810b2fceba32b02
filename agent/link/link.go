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
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
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
	MaxBackoff   time.Duration // default 60s
	// MinBackoff is paho's first reconnect delay (1 s); Jitter (a fraction
	// in [0, 1]) adds a random extra delay of up to Jitter × the current
	// backoff before each reconnect attempt, so a fleet that lost its broker
	// does not come back in lockstep waves. 0: none.
	MinBackoff time.Duration
	Jitter     float64
	// OnCommand receives raw command payloads (verification happens in the
	// command handler, not here). May be nil.
	OnCommand func(payload []byte)
}

// Link is a live MQTT session. Safe for concurrent use.
type Link struct {
	cfg    Config
	client paho.Client
	log    *slog.Logger
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
	l := &Link{cfg: cfg, log: logger}
	var attempts atomic.Int64
	stateTopic := topics.Device(cfg.DeviceID, topics.State)
	opts := paho.NewClientOptions().
		AddBroker("tls://"+u.Host).
		SetClientID(cfg.DeviceID).
		SetTLSConfig(&tls.Config{Certificates: []tls.Certificate{cfg.Certificate}, RootCAs: cfg.RootCAs, ServerName: host, MinVersion: tls.VersionTLS12}).
		SetKeepAlive(cfg.KeepAlive).
		// Clean sessions: delivery guarantees live in the agent's durable
		// queue (acked only after PUBACK, rewound on reconnect), not in
		// paho's in-memory store, whose resume races with publishes made
		// right after connecting (paho v1.5.1, seen with -race).
		SetCleanSession(true).
		SetOrderMatters(false).
		SetAutoReconnect(true).
		SetMaxReconnectInterval(cfg.MaxBackoff).
		SetConnectRetry(true).
		SetConnectRetryInterval(2*time.Second).
		SetBinaryWill(stateTopic, statePayload(false, cfg.AgentVersion), 1, true).
		SetReconnectingHandler(func(paho.Client, *paho.ClientOptions) {
			if d := JitterDelay(int(attempts.Add(1)), cfg.MinBackoff, cfg.MaxBackoff, cfg.Jitter, rand.Float64()); d > 0 {
				time.Sleep(d)
			}
		}).
		SetOnConnectHandler(func(c paho.Client) {
			attempts.Store(0)
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

// JitterDelay is the random extra delay before reconnect attempt n (1, 2,
// …): r (uniform in [0, 1)) × jitter × the backoff of that attempt, which
// doubles from min up to max.
func JitterDelay(n int, min, max time.Duration, jitter, r float64) time.Duration {
	if jitter <= 0 || n < 1 {
		return 0
	}
	backoff := min
	for i := 1; i < n && backoff < max; i++ {
		backoff *= 2
	}
	backoff = minDuration(backoff, max)
	return time.Duration(r * jitter * float64(backoff))
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
