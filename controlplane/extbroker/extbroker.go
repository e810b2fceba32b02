// Package extbroker connects the control plane to an external MQTT broker
// (Mosquitto, see deploy/mosquitto) with paho, as the counterpart of the
// embedded broker's inline client.
//
// One "main" client (clean session) publishes commands and receives, in
// order, what must stay ordered per device: retained states and wills
// (presence) and command acks. High-volume device data is received by
// Config.IngestClients further clients sharing one subscription per
// filter ($share/<group>/<filter>): the broker spreads messages across
// them, and each runs its handlers concurrently (one goroutine per
// message, bounded by the broker's max_inflight_messages per client), so
// a single subscriber's ordered callback is not the ceiling. Ingest
// clients keep persistent sessions, so the broker queues their messages
// (up to its max_queued_messages) while the control plane is down.
//
// A shared handler returns an error to withhold the message's PUBACK (e.g.
// the store failed): the broker then delivers it again when that client
// reconnects.
//
// Subscriptions are remembered and renewed after every reconnect. Make
// them before Start: an ingest client's persistent session gets its queued
// messages as soon as it connects, and paho drops (without acknowledging)
// a message that arrives before a handler is registered for it.
package extbroker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// Defaults for zero Config fields.
const (
	DefaultIngestClients = 4
	DefaultGroup         = "gantry-ingest"
	DefaultClientID      = "gantry-controlplane"
	opTimeout            = 10 * time.Second
)

// ErrConfig: the Config cannot work.
var ErrConfig = errors.New("invalid external broker configuration")

// Config configures a Client.
type Config struct {
	// URL is the broker, tls://host:port.
	URL string
	// TLS carries the control plane's client certificate (common name
	// gantry-controlplane, from its CA) and the CA that verifies the
	// broker's server certificate.
	TLS *tls.Config
	// ClientID is the main client's ID; ingest clients append -ingest-N.
	ClientID string
	// IngestClients is the number of shared-subscription clients.
	IngestClients int
	// Group is the shared-subscription group name.
	Group string
}

type sub struct {
	filter  string
	handler func(topic string, payload []byte)
}

type sharedSub struct {
	filter  string
	handler func(topic string, payload []byte) error
}

// Client is connected to an external broker. Safe for concurrent use.
type Client struct {
	cfg    Config
	log    *slog.Logger
	main   paho.Client
	ingest []paho.Client

	mu     sync.Mutex
	subs   []sub
	shared []sharedSub

	startOnce sync.Once
}

// New builds the clients; Start connects them.
func New(cfg Config, logger *slog.Logger) (*Client, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	u, err := url.Parse(cfg.URL)
	if err != nil || u.Scheme != "tls" || u.Port() == "" {
		return nil, fmt.Errorf("extbroker.New: %w: broker URL %q: want tls://host:port (devices and the control plane use TLS with client certificates)", ErrConfig, cfg.URL)
	}
	if cfg.TLS == nil || len(cfg.TLS.Certificates) == 0 || cfg.TLS.RootCAs == nil {
		return nil, fmt.Errorf("extbroker.New: %w: a client certificate and the CA of the broker's certificate are required", ErrConfig)
	}
	if cfg.IngestClients < 0 || cfg.IngestClients > 64 {
		return nil, fmt.Errorf("extbroker.New: %w: %d ingest clients: want 1..64 (0: %d)", ErrConfig, cfg.IngestClients, DefaultIngestClients)
	}
	if cfg.IngestClients == 0 {
		cfg.IngestClients = DefaultIngestClients
	}
	if cfg.ClientID == "" {
		cfg.ClientID = DefaultClientID
	}
	if cfg.Group == "" {
		cfg.Group = DefaultGroup
	}
	if strings.ContainsAny(cfg.Group, "/+#") {
		return nil, fmt.Errorf("extbroker.New: %w: group %q must not contain / + #", ErrConfig, cfg.Group)
	}
	tc := cfg.TLS.Clone()
	if tc.ServerName == "" {
		tc.ServerName = u.Hostname()
	}
	if tc.MinVersion == 0 {
		tc.MinVersion = tls.VersionTLS12
	}
	c := &Client{cfg: cfg, log: logger}
	opts := func(id string, clean bool, onConnect paho.OnConnectHandler) *paho.ClientOptions {
		return paho.NewClientOptions().AddBroker("tls://" + u.Host).SetClientID(id).SetTLSConfig(tc).
			SetCleanSession(clean).SetOrderMatters(clean).SetAutoReconnect(true).SetConnectRetry(true).
			SetConnectRetryInterval(2 * time.Second).SetMaxReconnectInterval(30 * time.Second).SetKeepAlive(30 * time.Second).
			SetOnConnectHandler(onConnect).
			SetConnectionLostHandler(func(_ paho.Client, err error) {
				logger.Warn("external broker connection lost; reconnecting", "client_id", id, "err", err)
			})
	}
	c.main = paho.NewClient(opts(cfg.ClientID, true, c.onMainConnect))
	for n := range cfg.IngestClients {
		id := fmt.Sprintf("%s-ingest-%d", cfg.ClientID, n)
		o := opts(id, false, c.onIngestConnect).SetAutoAckDisabled(true)
		c.ingest = append(c.ingest, paho.NewClient(o))
	}
	return c, nil
}

// Start connects the clients in the background, retrying until the broker
// answers, so the control plane can start before its broker; use
// WaitConnected to wait. Subscribe and SubscribeShared before Start (see
// the package comment). Later calls do nothing.
func (c *Client) Start() {
	c.startOnce.Do(func() {
		for _, cl := range c.all() {
			cl.Connect()
		}
	})
}

func (c *Client) all() []paho.Client { return append([]paho.Client{c.main}, c.ingest...) }

// WaitConnected waits until every client is connected or ctx ends.
func (c *Client) WaitConnected(ctx context.Context) error {
	for {
		n := 0
		for _, cl := range c.all() {
			if cl.IsConnectionOpen() {
				n++
			}
		}
		if n == len(c.ingest)+1 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("extbroker: %d of %d clients connected to %s: %w", n, len(c.ingest)+1, c.cfg.URL, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (c *Client) onMainConnect(cl paho.Client) {
	c.log.Info("connected to external broker", "url", c.cfg.URL, "client_id", c.cfg.ClientID)
	c.mu.Lock()
	subs := append([]sub(nil), c.subs...)
	c.mu.Unlock()
	for _, s := range subs {
		go c.subscribeMain(cl, s)
	}
}

func (c *Client) onIngestConnect(cl paho.Client) {
	c.mu.Lock()
	shared := append([]sharedSub(nil), c.shared...)
	c.mu.Unlock()
	for _, s := range shared {
		go c.subscribeShared(cl, s)
	}
}

// subscribeMain subscribes on the main client; paho calls handlers in
// arrival order there.
func (c *Client) subscribeMain(cl paho.Client, s sub) error {
	return c.wait("subscribe "+s.filter, cl.Subscribe(s.filter, 1, s.route()))
}

func (s sub) route() paho.MessageHandler {
	return func(_ paho.Client, m paho.Message) { s.handler(m.Topic(), m.Payload()) }
}

func (c *Client) sharedFilter(s sharedSub) string { return "$share/" + c.cfg.Group + "/" + s.filter }

func (c *Client) subscribeShared(cl paho.Client, s sharedSub) error {
	f := c.sharedFilter(s)
	return c.wait("subscribe "+f, cl.Subscribe(f, 1, s.route()))
}

func (s sharedSub) route() paho.MessageHandler {
	return func(_ paho.Client, m paho.Message) {
		if err := s.handler(m.Topic(), m.Payload()); err != nil {
			return // no PUBACK: redelivered after this client reconnects
		}
		m.Ack()
	}
}

func (c *Client) wait(op string, tok paho.Token) error {
	if !tok.WaitTimeout(opTimeout) {
		return fmt.Errorf("extbroker: %s: no answer from %s within %v", op, c.cfg.URL, opTimeout)
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("extbroker: %s: %w", op, err)
	}
	if st, ok := tok.(*paho.SubscribeToken); ok {
		for _, code := range st.Result() {
			if code == 0x80 {
				return fmt.Errorf("extbroker: %s: refused by the broker (check the control plane's ACL entry in acl.conf)", op)
			}
		}
	}
	return nil
}

// Subscribe receives filter on the main client, handlers called in
// arrival order (presence, command acks). If the main client is not yet
// connected, the subscription is made when it connects.
func (c *Client) Subscribe(filter string, handler func(topic string, payload []byte)) error {
	if handler == nil || filter == "" {
		return errors.New("extbroker.Subscribe: a filter and a handler are required")
	}
	s := sub{filter, handler}
	c.mu.Lock()
	c.subs = append(c.subs, s)
	c.mu.Unlock()
	c.main.AddRoute(filter, s.route())
	if c.main.IsConnectionOpen() {
		return c.subscribeMain(c.main, s)
	}
	return nil
}

// SubscribeShared receives filter on the ingest clients through one shared
// subscription; handlers run concurrently. A handler error withholds the
// PUBACK.
func (c *Client) SubscribeShared(filter string, handler func(topic string, payload []byte) error) error {
	if handler == nil || filter == "" {
		return errors.New("extbroker.SubscribeShared: a filter and a handler are required")
	}
	s := sharedSub{filter, handler}
	c.mu.Lock()
	c.shared = append(c.shared, s)
	c.mu.Unlock()
	for _, cl := range c.ingest {
		// Before any message can arrive; paho keys a shared subscription's
		// route by the filter without $share/<group>/ (as Subscribe does).
		cl.AddRoute(s.filter, s.route())
	}
	for _, cl := range c.ingest {
		if cl.IsConnectionOpen() {
			if err := c.subscribeShared(cl, s); err != nil {
				return err
			}
		}
	}
	return nil
}

// Publish sends a message from the main client and waits for the broker
// to take it (PUBACK for QoS 1).
func (c *Client) Publish(topic string, payload []byte, retain bool, qos byte) error {
	if qos > 2 || topic == "" || strings.ContainsAny(topic, "+#") {
		return fmt.Errorf("extbroker.Publish: invalid topic %q or QoS %d", topic, qos)
	}
	if !c.main.IsConnectionOpen() {
		return fmt.Errorf("extbroker.Publish(%q): not connected to %s", topic, c.cfg.URL)
	}
	return c.wait("publish "+topic, c.main.Publish(topic, qos, retain, payload))
}

// Connected is the number of clients connected now.
func (c *Client) Connected() int {
	n := 0
	for _, cl := range c.all() {
		if cl.IsConnectionOpen() {
			n++
		}
	}
	return n
}

// Close disconnects every client. Safe to call more than once.
func (c *Client) Close() error {
	for _, cl := range c.all() {
		cl.Disconnect(250)
	}
	return nil
}
