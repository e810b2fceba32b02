package broker

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/url"
	"sync"
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
		OnConnect:    func(id string) { e.events <- "up " + id },
		OnDisconnect: func(id string) { e.events <- "down " + id },
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
		SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).SetConnectRetry(false)
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
	if _, err := e.client(t, "", "anon", nil); err == nil {
		t.Errorf("connection without a client certificate accepted")
	}
	other, _ := pki.NewCA("other", time.Now())
	foreign, _ := other.IssueClient("dev-x", time.Hour)
	if _, err := e.client(t, "", "dev-x", &foreign); err == nil {
		t.Errorf("certificate of another CA accepted")
	}
	if _, err := e.client(t, "dev-c", "dev-d", nil); err == nil {
		t.Errorf("client ID different from the certificate accepted")
	}
	rev, _ := e.ca.IssueClient("dev-r", time.Hour)
	e.revoked.Store(pki.SerialString(rev.Leaf), true)
	if _, err := e.client(t, "", "dev-r", &rev); err == nil {
		t.Errorf("revoked certificate accepted")
	}
	if e.b.Stats.AuthDenied.Load() < 2 {
		t.Errorf("auth denials counted %d", e.b.Stats.AuthDenied.Load())
	}
}

// TestWillOnDrop: a device that vanishes without DISCONNECT triggers its
// will on its state topic, and the disconnect callback.
func TestWillOnDrop(t *testing.T) {
	e := start(t)
	states := make(chan string, 4)
	if err := e.b.Subscribe(topics.Wildcard(topics.State), func(topic string, p []byte) { states <- string(p) }); err != nil {
		t.Fatal(err)
	}
	var raw net.Conn
	var mu sync.Mutex
	_, err := e.client(t, "dev-w", "dev-w", nil, func(o *paho.ClientOptions) {
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
