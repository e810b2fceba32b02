package broker

import (
	"crypto/tls"
	"io"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/gantry-iot/gantry/controlplane/pki"
	"github.com/gantry-iot/gantry/pkg/topics"
)

// restartable is a broker that can be replaced by a new one (a control
// plane restart: new server certificate, same CA, same ticket keys).
type restartable struct {
	ca      *pki.CA
	revoked sync.Map // serial → true
}

func newRestartable(t *testing.T) *restartable {
	t.Helper()
	ca, err := pki.NewCA("test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return &restartable{ca: ca}
}

func (r *restartable) start(t *testing.T, keys [][32]byte) *Broker {
	t.Helper()
	srvCert, err := r.ca.IssueServer([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(Config{Listen: "127.0.0.1:0", Certificate: srvCert, ClientCAs: r.ca.Pool(), SessionTicketKeys: keys,
		IsRevoked: func(_, s string) bool { _, ok := r.revoked.Load(s); return ok }}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// deviceTLS is a device's client TLS config with its own session cache.
func (r *restartable) deviceTLS(t *testing.T, cn string) *tls.Config {
	t.Helper()
	c, err := r.ca.IssueClient(cn, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{RootCAs: r.ca.Pool(), ServerName: "127.0.0.1", Certificates: []tls.Certificate{c}, ClientSessionCache: tls.NewLRUClientSessionCache(4)}
}

// rawConnect does one TLS handshake and MQTT 3.1.1 CONNECT as clientID;
// it reports whether the TLS session was resumed and the CONNACK return
// code (0 accepted, 5 not authorized; 0xff: no CONNACK, connection
// closed). It reads once more after the CONNACK so the client takes in
// the server's session ticket, then closes.
func rawConnect(t *testing.T, addr string, tc *tls.Config, clientID string) (resumed bool, rc byte) {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, tc)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	vh := []byte{0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 60, byte(len(clientID) >> 8), byte(len(clientID))}
	body := append(vh, clientID...)
	if _, err := conn.Write(append([]byte{0x10, byte(len(body))}, body...)); err != nil {
		t.Fatal(err)
	}
	ack := make([]byte, 4)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(conn, ack); err != nil || ack[0] != 0x20 {
		return conn.ConnectionState().DidResume, 0xff
	}
	// A PINGREQ's PINGRESP is read after any NewSessionTicket messages.
	if ack[3] == 0 {
		if _, err := conn.Write([]byte{0xc0, 0}); err == nil {
			_, _ = io.ReadFull(conn, make([]byte, 2))
		}
	}
	return conn.ConnectionState().DidResume, ack[3]
}

func ticketKeys(t *testing.T) *pki.TicketKeys {
	t.Helper()
	k, err := pki.LoadOrCreateTicketKeys(t.TempDir(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestResumeAcrossRestart: with persistent ticket keys, a device's next
// connection to a restarted broker resumes its TLS session (no full
// handshake); with keys new in each process it does not.
func TestResumeAcrossRestart(t *testing.T) {
	r := newRestartable(t)
	keys := ticketKeys(t)
	b1 := r.start(t, keys.Keys())
	tc := r.deviceTLS(t, "dev-a")
	if res, rc := rawConnect(t, b1.Addr().String(), tc, "dev-a"); res || rc != 0 {
		t.Fatalf("first connect: resumed %v rc %d, want a full handshake, accepted", res, rc)
	}
	b1.Close()
	b2 := r.start(t, keys.Keys())
	if res, rc := rawConnect(t, b2.Addr().String(), tc, "dev-a"); !res || rc != 0 {
		t.Fatalf("after restart: resumed %v rc %d, want resumed and accepted", res, rc)
	}
	if b2.Stats.Resumed.Load() != 1 || b2.Stats.FullTLS.Load() != 0 {
		t.Errorf("stats: resumed %d full %d, want 1 and 0", b2.Stats.Resumed.Load(), b2.Stats.FullTLS.Load())
	}
	b2.Close()
	// Without persistent keys the restarted broker cannot read the ticket.
	b3 := r.start(t, nil)
	if res, rc := rawConnect(t, b3.Addr().String(), tc, "dev-a"); res || rc != 0 {
		t.Fatalf("broker with its own keys: resumed %v rc %d, want a full handshake", res, rc)
	}
	if b3.Stats.FullTLS.Load() != 1 {
		t.Errorf("full handshakes %d, want 1", b3.Stats.FullTLS.Load())
	}
}

// TestResumedRevokedRefused: a device re-enrolled after its session
// ticket was issued cannot use the ticket of its old certificate: the
// session resumes, but CONNECT is refused by the revocation check. Its
// new certificate connects.
func TestResumedRevokedRefused(t *testing.T) {
	r := newRestartable(t)
	keys := ticketKeys(t)
	b1 := r.start(t, keys.Keys())
	old := r.deviceTLS(t, "dev-a")
	if _, rc := rawConnect(t, b1.Addr().String(), old, "dev-a"); rc != 0 {
		t.Fatalf("first connect refused: %d", rc)
	}
	b1.Close()
	// Re-enrollment: the old certificate is revoked, a new one issued.
	r.revoked.Store(pki.SerialString(old.Certificates[0].Leaf), true)
	b2 := r.start(t, keys.Keys())
	res, rc := rawConnect(t, b2.Addr().String(), old, "dev-a")
	if !res {
		t.Fatal("the old certificate's session was not resumed: the test does not exercise resumption")
	}
	if rc == 0 {
		t.Fatal("resumed session of a revoked certificate accepted")
	}
	if b2.Stats.AuthDenied.Load() != 1 || b2.Stats.Connected.Load() != 0 {
		t.Errorf("auth denied %d, connected %d; want 1, 0", b2.Stats.AuthDenied.Load(), b2.Stats.Connected.Load())
	}
	if _, rc := rawConnect(t, b2.Addr().String(), r.deviceTLS(t, "dev-a"), "dev-a"); rc != 0 {
		t.Fatalf("new certificate refused: %d", rc)
	}
}

// TestResumedIdentityAndACL: on a resumed session the device is still the
// certificate's CN: another client ID is refused, its own topics are
// allowed, another device's topics are not.
func TestResumedIdentityAndACL(t *testing.T) {
	r := newRestartable(t)
	keys := ticketKeys(t)
	b1 := r.start(t, keys.Keys())
	tc := r.deviceTLS(t, "dev-a")
	if _, rc := rawConnect(t, b1.Addr().String(), tc, "dev-a"); rc != 0 {
		t.Fatalf("first connect refused: %d", rc)
	}
	b1.Close()
	b2 := r.start(t, keys.Keys())
	addr := b2.Addr().String()
	// Another device's client ID with dev-a's ticket: refused.
	if res, rc := rawConnect(t, addr, tc, "dev-b"); !res || rc == 0 {
		t.Fatalf("client ID dev-b on dev-a's resumed session: resumed %v rc %d, want resumed and refused", res, rc)
	}
	got := make(chan string, 8)
	if err := b2.Subscribe(topics.Wildcard(topics.Telemetry), func(topic string, p []byte) { got <- topic }); err != nil {
		t.Fatal(err)
	}
	resumedBefore := b2.Stats.Resumed.Load()
	c := paho.NewClient(paho.NewClientOptions().AddBroker("tls://" + addr).SetClientID("dev-a").SetTLSConfig(tc).
		SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).SetProtocolVersion(4))
	if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("resumed connect: %v", tok.Error())
	}
	defer c.Disconnect(100)
	if b2.Stats.Resumed.Load() != resumedBefore+1 {
		t.Fatal("paho's connection was not resumed")
	}
	if tok := c.Publish(topics.Device("dev-a", topics.Telemetry), 1, false, "1"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("own telemetry: %v", tok.Error())
	}
	select {
	case topic := <-got:
		if topic != topics.Device("dev-a", topics.Telemetry) {
			t.Fatalf("delivered %s", topic)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("own telemetry not delivered")
	}
	tok := c.Subscribe(topics.Device("dev-b", topics.Cmd), 1, func(paho.Client, paho.Message) {})
	tok.WaitTimeout(5 * time.Second)
	if st, ok := tok.(*paho.SubscribeToken); !ok || st.Result()[topics.Device("dev-b", topics.Cmd)] != 0x80 {
		t.Errorf("subscription to dev-b's cmd not refused")
	}
	c.Publish(topics.Device("dev-b", topics.Telemetry), 1, false, "spoof").WaitTimeout(2 * time.Second)
	select {
	case topic := <-got:
		t.Fatalf("spoofed publish delivered on %s", topic)
	case <-time.After(300 * time.Millisecond):
	}
	if b2.Stats.PublishDenied.Load() != 1 || b2.Stats.SubDenied.Load() == 0 {
		t.Errorf("publish denied %d, subscribe denied %d; want 1 and ≥ 1", b2.Stats.PublishDenied.Load(), b2.Stats.SubDenied.Load())
	}
}

// TestTicketKeyRotation: after one rotation a ticket of the previous key
// still resumes; after a second one (the key is gone) it does not.
func TestTicketKeyRotation(t *testing.T) {
	r := newRestartable(t)
	keys := ticketKeys(t)
	b := r.start(t, keys.Keys())
	addr := b.Addr().String()
	a, c := r.deviceTLS(t, "dev-a"), r.deviceTLS(t, "dev-c")
	rawConnect(t, addr, a, "dev-a")
	rawConnect(t, addr, c, "dev-c")
	now := time.Now()
	rotate := func() {
		now = now.Add(pki.DefaultTicketKeyPeriod)
		if ok, err := keys.Rotate(now, pki.DefaultTicketKeyPeriod); !ok || err != nil {
			t.Fatalf("rotate: %v %v", ok, err)
		}
		if err := b.SetSessionTicketKeys(keys.Keys()); err != nil {
			t.Fatal(err)
		}
	}
	rotate()
	if res, rc := rawConnect(t, addr, a, "dev-a"); !res || rc != 0 {
		t.Fatalf("ticket of the previous key: resumed %v rc %d, want resumed", res, rc)
	}
	rotate()
	// dev-c still holds only its ticket of the first key, now dropped.
	if res, rc := rawConnect(t, addr, c, "dev-c"); res || rc != 0 {
		t.Fatalf("ticket of a dropped key: resumed %v rc %d, want a full handshake", res, rc)
	}
	if err := b.SetSessionTicketKeys([][32]byte{{}}); err == nil {
		t.Error("an all-zero key was accepted")
	}
}
