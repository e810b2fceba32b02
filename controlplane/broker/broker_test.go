package broker

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"go.uber.org/goleak"

	"github.com/gantry-iot/gantry/controlplane/pki"
	"github.com/gantry-iot/gantry/pkg/topics"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/mochi-mqtt/server/v2.(*Server).loop"))
}

type env struct {
	ca      *pki.CA
	b       *Broker
	revoked sync.Map
	events  chan string
}

func start(t *testing.T) *env {
	t.Helper()
	ca, err := pki.NewCA("test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	srvCert, err := ca.IssueServer([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{ca: ca, events: make(chan string, 16)}
	b, err := New(Config{Listen: "127.0.0.1:0", Certificate: srvCert, ClientCAs: ca.Pool(),
		IsRevoked:    func(_, s string) bool { _, ok := e.revoked.Load(s); return ok },
		OnConnect:    func(id string, _ time.Time) { e.events <- "up " + id },
		OnDisconnect: func(id string, _ time.Time) { e.events <- "down " + id },
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	e.b = b
	return e
}

// client connects a paho client with a certificate for cn (or none).
func (e *env) client(t *testing.T, cn, clientID string, cert *tls.Certificate, opts ...func(*paho.ClientOptions)) (paho.Client, error) {
	t.Helper()
	tc := &tls.Config{RootCAs: e.ca.Pool(), ServerName: "127.0.0.1"}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	} else if cn != "" {
		c, err := e.ca.IssueClient(cn, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		tc.Certificates = []tls.Certificate{c}
	}
	o := paho.NewClientOptions().AddBroker("tls://" + e.b.Addr().String()).SetClientID(clientID).SetTLSConfig(tc).
		SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).SetConnectRetry(false).
		SetProtocolVersion(4) // no fallback to 3.1 after a refusal: one CONNECT per attempt
	for _, f := range opts {
		f(o)
	}
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, fmt.Errorf("connect timed out")
	}
	if tok.Error() != nil {
		return nil, tok.Error()
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return c, nil
}

func TestDeviceACL(t *testing.T) {
	e := start(t)
	got := make(chan string, 16)
	if err := e.b.Subscribe(topics.Wildcard(topics.Telemetry), func(topic string, p []byte) { got <- topic + "=" + string(p) }); err != nil {
		t.Fatal(err)
	}
	a, err := e.client(t, "dev-a", "dev-a", nil)
	if err != nil {
		t.Fatal(err)
	}
	// Own telemetry is delivered.
	if tok := a.Publish(topics.Device("dev-a", topics.Telemetry), 1, false, "1"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("publish own telemetry: %v", tok.Error())
	}
	select {
	case m := <-got:
		if m != "gantry/v1/dev/dev-a/telemetry=1" {
			t.Fatalf("got %s", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("own telemetry not delivered")
	}
	// Another device's topic is not delivered, and counted.
	a.Publish(topics.Device("dev-b", topics.Telemetry), 1, false, "spoof").WaitTimeout(5 * time.Second)
	select {
	case m := <-got:
		t.Fatalf("spoofed telemetry delivered: %s", m)
	case <-time.After(500 * time.Millisecond):
	}
	if e.b.Stats.PublishDenied.Load() == 0 {
		t.Errorf("denied publish not counted")
	}
	// MQTT 3.1.1 has no negative PUBACK: the broker drops the offending
	// connection. The device reconnects for the subscription checks.
	deadline := time.Now().Add(5 * time.Second)
	for a.IsConnectionOpen() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if a.IsConnectionOpen() {
		t.Errorf("connection stays open after a forbidden publish")
	}
	a, err = e.client(t, "dev-a", "dev-a", nil)
	if err != nil {
		t.Fatal(err)
	}
	// Subscribing to another device's commands is refused; own cmd works.
	cmds := make(chan string, 4)
	tok := a.Subscribe(topics.Device("dev-b", topics.Cmd), 1, func(_ paho.Client, m paho.Message) { cmds <- m.Topic() })
	tok.WaitTimeout(5 * time.Second)
	if st, ok := tok.(*paho.SubscribeToken); ok {
		if code := st.Result()[topics.Device("dev-b", topics.Cmd)]; code != 0x80 {
			t.Errorf("SUBACK for another device's cmd = %#x, want 0x80", code)
		}
	}
	tok = a.Subscribe(topics.Device("dev-a", topics.Cmd), 1, func(_ paho.Client, m paho.Message) { cmds <- m.Topic() })
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	if err := e.b.Publish(topics.Device("dev-b", topics.Cmd), []byte("x"), false, 1); err != nil {
		t.Fatal(err)
	}
	if err := e.b.Publish(topics.Device("dev-a", topics.Cmd), []byte("y"), false, 1); err != nil {
		t.Fatal(err)
	}
	select {
	case topic := <-cmds:
		if topic != topics.Device("dev-a", topics.Cmd) {
			t.Fatalf("device received %s", topic)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("own command not delivered")
	}
	select {
	case topic := <-cmds:
		t.Fatalf("device received another device's command on %s", topic)
	case <-time.After(300 * time.Millisecond):
	}
}

func TestConnectRefusals(t *testing.T) {
	e := start(t)
	other, err := pki.NewCA("other", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := other.IssueClient("dev-x", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	rev, err := e.ca.IssueClient("dev-r", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	e.revoked.Store(pki.SerialString(rev.Leaf), true)
	badCN, err := e.ca.IssueClient("not/a/device", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		cn, id     string
		cert       *tls.Certificate
		opt        func(*paho.ClientOptions)
		authDenied bool // refused by the hook (after TLS), so counted
	}{
		{name: "no certificate", id: "anon"},
		{name: "certificate of another CA", id: "dev-x", cert: &foreign},
		{name: "revoked certificate", id: "dev-r", cert: &rev, authDenied: true},
		{name: "client ID differs from CN", cn: "dev-c", id: "dev-d", authDenied: true},
		{name: "CN not a device ID", id: "not/a/device", cert: &badCN, authDenied: true},
		{name: "username differs from CN", cn: "dev-u", id: "dev-u", authDenied: true,
			opt: func(o *paho.ClientOptions) { o.SetUsername("dev-v") }},
		{name: "will on another device's state", cn: "dev-w", id: "dev-w", authDenied: true,
			opt: func(o *paho.ClientOptions) { o.SetWill(topics.Device("dev-z", topics.State), "offline", 1, true) }},
		{name: "will on own cmd", cn: "dev-w", id: "dev-w", authDenied: true,
			opt: func(o *paho.ClientOptions) { o.SetWill(topics.Device("dev-w", topics.Cmd), "x", 1, false) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.b.Stats.AuthDenied.Load()
			var opts []func(*paho.ClientOptions)
			if tc.opt != nil {
				opts = append(opts, tc.opt)
			}
			if _, err := e.client(t, tc.cn, tc.id, tc.cert, opts...); err == nil {
				t.Fatalf("connection accepted")
			}
			if got := e.b.Stats.AuthDenied.Load() - before; tc.authDenied && got != 1 {
				t.Errorf("AuthDenied grew by %d, want 1", got)
			}
		})
	}
	if n := e.b.Stats.Connected.Load(); n != 0 {
		t.Errorf("Connected = %d after only refusals", n)
	}
}

func TestConnectAccepted(t *testing.T) {
	e := start(t)
	// Username equal to the device ID and a will on its own state topic.
	if _, err := e.client(t, "dev-ok", "dev-ok", nil, func(o *paho.ClientOptions) {
		o.SetUsername("dev-ok")
		o.SetWill(topics.Device("dev-ok", topics.State), "offline", 1, true)
	}); err != nil {
		t.Fatalf("valid device refused: %v", err)
	}
	waitEvent(t, e.events, "up dev-ok")
	if n := e.b.Stats.Connected.Load(); n != 1 {
		t.Errorf("Connected = %d, want 1", n)
	}
}

// TestSubscribeACL checks filters a device may not use; each gets SUBACK
// 0x80 and is counted.
func TestSubscribeACL(t *testing.T) {
	e := start(t)
	a, err := e.client(t, "dev-a", "dev-a", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, filter := range []string{
		topics.Device("dev-b", topics.Cmd),
		"gantry/v1/dev/+/cmd",
		"gantry/v1/dev/dev-a/#",
		"#",
		topics.Device("dev-a", topics.Telemetry),
		topics.Device("dev-a", topics.CmdAck),
		"$SYS/#",
	} {
		t.Run(filter, func(t *testing.T) {
			before := e.b.Stats.SubDenied.Load()
			tok := a.Subscribe(filter, 1, func(paho.Client, paho.Message) {})
			if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
				t.Fatalf("subscribe: %v", tok.Error())
			}
			if code := tok.(*paho.SubscribeToken).Result()[filter]; code != 0x80 {
				t.Errorf("SUBACK = %#x, want 0x80", code)
			}
			if e.b.Stats.SubDenied.Load() == before {
				t.Errorf("denied subscription not counted")
			}
		})
	}
	tok := a.Subscribe(topics.Device("dev-a", topics.Cmd), 1, func(paho.Client, paho.Message) {})
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	if code := tok.(*paho.SubscribeToken).Result()[topics.Device("dev-a", topics.Cmd)]; code != 1 {
		t.Errorf("SUBACK for own cmd = %#x, want 1 (QoS 1 granted)", code)
	}
}

// TestPublishACL: QoS 0 publishes to topics the device may not use are
// dropped and counted; the connection stays up.
func TestPublishACL(t *testing.T) {
	e := start(t)
	got := make(chan string, 16)
	if err := e.b.Subscribe("#", func(topic string, p []byte) { got <- topic }); err != nil {
		t.Fatal(err)
	}
	a, err := e.client(t, "dev-a", "dev-a", nil)
	if err != nil {
		t.Fatal(err)
	}
	denied := []string{
		topics.Device("dev-b", topics.State),
		topics.Device("dev-a", topics.Cmd),
		"gantry/v1/dev/dev-a/other",
		"gantry/v1/dev/dev-a/telemetry/x",
		"elsewhere",
	}
	for _, topic := range denied {
		if tok := a.Publish(topic, 0, false, "x"); !tok.WaitTimeout(5 * time.Second) {
			t.Fatalf("publish to %s timed out", topic)
		}
	}
	// Messages on one connection are processed in order: once the allowed
	// one arrives, the denied ones before it have been dropped.
	for _, k := range []topics.Kind{topics.Telemetry, topics.State, topics.Events, topics.CmdAck} {
		want := topics.Device("dev-a", k)
		if tok := a.Publish(want, 0, false, "ok"); !tok.WaitTimeout(5 * time.Second) {
			t.Fatal("publish timed out")
		}
		select {
		case topic := <-got:
			if topic != want {
				t.Fatalf("delivered %s, want %s", topic, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("own %s not delivered", k)
		}
	}
	if n := e.b.Stats.PublishDenied.Load(); n != int64(len(denied)) {
		t.Errorf("PublishDenied = %d, want %d", n, len(denied))
	}
	if !a.IsConnectionOpen() {
		t.Errorf("QoS 0 denial closed the connection")
	}
}

func TestInlineAPIErrors(t *testing.T) {
	e := start(t)
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"publish wildcard +", e.b.Publish("gantry/v1/dev/+/cmd", nil, false, 1)},
		{"publish wildcard #", e.b.Publish("gantry/#", nil, false, 1)},
		{"publish empty", e.b.Publish("", nil, false, 1)},
		{"publish QoS 3", e.b.Publish("a", nil, false, 3)},
		{"subscribe bad filter", e.b.Subscribe("a/#/b", func(string, []byte) {})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !errors.Is(tc.err, ErrTopic) {
				t.Errorf("error = %v, want ErrTopic", tc.err)
			}
		})
	}
	if err := e.b.Subscribe("a", nil); err == nil {
		t.Errorf("nil handler accepted")
	}
	if err := e.b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := e.b.Publish("a", nil, false, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("Publish after Close: %v, want ErrClosed", err)
	}
}

func TestNewConfigErrors(t *testing.T) {
	if _, err := New(Config{Listen: "127.0.0.1:0"}, nil); !errors.Is(err, ErrConfig) {
		t.Errorf("no certificate: %v, want ErrConfig", err)
	}
	e := start(t)
	srv, err := e.ca.IssueServer([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Listen: e.b.Addr().String(), Certificate: srv, ClientCAs: e.ca.Pool()}, nil); !errors.Is(err, ErrConfig) {
		t.Errorf("port in use: %v, want ErrConfig", err)
	}
}

// TestTakeover: a second connection of the same device takes over the
// session; the device stays online (no disconnect event) until the last
// connection ends.
func TestTakeover(t *testing.T) {
	e := start(t)
	c1, err := e.client(t, "dev-t", "dev-t", nil)
	if err != nil {
		t.Fatal(err)
	}
	waitEvent(t, e.events, "up dev-t")
	c2, err := e.client(t, "dev-t", "dev-t", nil)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for c1.IsConnectionOpen() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if c1.IsConnectionOpen() {
		t.Fatal("first connection not taken over")
	}
	select {
	case ev := <-e.events:
		t.Fatalf("event %q during takeover, want none", ev)
	case <-time.After(300 * time.Millisecond):
	}
	c2.Disconnect(100)
	waitEvent(t, e.events, "down dev-t")
	if n := e.b.Stats.Connected.Load(); n != 0 {
		t.Errorf("Connected = %d after all disconnected", n)
	}
}

// TestWillOnDrop: a device that vanishes without DISCONNECT triggers its
// will on its state topic, and the disconnect callback.
// TestWillOnDrop: a device's will reaches subscribers when its connection
// drops; neither it nor the device's retained state is kept.
func TestWillOnDrop(t *testing.T) {
	e := start(t)
	states := make(chan string, 4)
	if err := e.b.Subscribe(topics.Wildcard(topics.State), func(topic string, p []byte) { states <- string(p) }); err != nil {
		t.Fatal(err)
	}
	var raw net.Conn
	var mu sync.Mutex
	c, err := e.client(t, "dev-w", "dev-w", nil, func(o *paho.ClientOptions) {
		o.SetWill(topics.Device("dev-w", topics.State), "offline", 1, true)
		o.SetCustomOpenConnectionFn(func(uri *url.URL, opts paho.ClientOptions) (net.Conn, error) {
			c, err := tls.Dial("tcp", uri.Host, opts.TLSConfig)
			mu.Lock()
			raw = c
			mu.Unlock()
			return c, err
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	waitEvent(t, e.events, "up dev-w")
	// A retained state reaches the subscriber but is not kept.
	if tok := c.Publish(topics.Device("dev-w", topics.State), 1, true, "online"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("retained state: %v", tok.Error())
	}
	if s := <-states; s != "online" {
		t.Fatalf("state %q, want online", s)
	}
	mu.Lock()
	raw.Close() // drop without DISCONNECT
	mu.Unlock()
	select {
	case s := <-states:
		if s != "offline" {
			t.Fatalf("state %q", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("will not published")
	}
	waitEvent(t, e.events, "down dev-w")
	// Neither the retained state nor the retained will is kept: a later
	// subscription receives nothing.
	if n := atomic.LoadInt64(&e.b.srv.Info.Retained); n != 0 {
		t.Errorf("broker keeps %d retained messages, want none", n)
	}
	late := make(chan string, 4)
	if err := e.b.Subscribe(topics.Wildcard(topics.State), func(_ string, p []byte) { late <- string(p) }); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-late:
		t.Errorf("a new subscription received the retained state %q", s)
	case <-time.After(200 * time.Millisecond):
	}
}

func waitEvent(t *testing.T, ch chan string, want string) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case ev := <-ch:
			if ev == want {
				return
			}
		case <-deadline:
			t.Fatalf("no %q event", want)
		}
	}
}

// TestInterceptWithholdsAck: a publish its Intercept handler refuses gets
// no PUBACK, reaches no subscriber, and its connection is closed (so the
// device resends it from its queue); an accepted one is acknowledged
// after the handler ran and consumed (subscribers do not get it).
func TestInterceptWithholdsAck(t *testing.T) {
	ca, err := pki.NewCA("test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	srvCert, _ := ca.IssueServer([]string{"127.0.0.1"}, time.Hour)
	b, err := New(Config{Listen: "127.0.0.1:0", Certificate: srvCert, ClientCAs: ca.Pool()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	var mu sync.Mutex
	var handled []string
	if err := b.Intercept(topics.Telemetry, func(topic string, p []byte) error {
		mu.Lock()
		defer mu.Unlock()
		handled = append(handled, string(p))
		if string(p) == "fail" {
			return errors.New("store down")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := b.Intercept(topics.Cmd, func(string, []byte) error { return nil }); err == nil {
		t.Error("intercepting a kind devices do not publish was accepted")
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	if err := b.Intercept(topics.Events, func(string, []byte) error { return nil }); err == nil {
		t.Error("Intercept after Start accepted")
	}
	delivered := make(chan string, 4)
	if err := b.Subscribe(topics.Wildcard(topics.Telemetry), func(_ string, p []byte) { delivered <- string(p) }); err != nil {
		t.Fatal(err)
	}
	e := &env{ca: ca, b: b}
	lost := make(chan error, 1)
	c, err := e.client(t, "dev-a", "dev-a", nil, func(o *paho.ClientOptions) {
		o.SetConnectionLostHandler(func(_ paho.Client, err error) { lost <- err })
	})
	if err != nil {
		t.Fatal(err)
	}
	topic := topics.Device("dev-a", topics.Telemetry)
	if tok := c.Publish(topic, 1, false, "ok"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("accepted publish: %v", tok.Error())
	}
	mu.Lock()
	if len(handled) != 1 || handled[0] != "ok" {
		t.Errorf("handled %v after the accepted publish's PUBACK; want [ok]", handled)
	}
	mu.Unlock()
	tok := c.Publish(topic, 1, false, "fail")
	select {
	case <-lost:
	case <-time.After(10 * time.Second):
		t.Fatal("connection not closed after a refused publish")
	}
	if tok.WaitTimeout(time.Second) && tok.Error() == nil {
		t.Error("refused publish completed without error (PUBACK sent?)")
	}
	select {
	case got := <-delivered:
		t.Errorf("intercepted publish delivered to a subscriber: %q", got)
	case <-time.After(200 * time.Millisecond):
	}
	mu.Lock()
	defer mu.Unlock()
	if len(handled) != 2 || b.Stats.NotAcked.Load() != 1 {
		t.Errorf("handled %v, not acked %d; want [ok fail] and 1", handled, b.Stats.NotAcked.Load())
	}
}
