package link_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gantry-iot/gantry/agent/link"
	"github.com/gantry-iot/gantry/controlplane/broker"
	"github.com/gantry-iot/gantry/controlplane/pki"
)

// TestReconnectResumes: a link whose broker restarts on the same address
// (new server certificate, same CA and session-ticket keys) reconnects on
// its own, soon (the short backoff cap after a recent connection), and
// resumes its TLS session instead of a full handshake.
func TestReconnectResumes(t *testing.T) {
	ca, err := pki.NewCA("test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	keys, err := pki.LoadOrCreateTicketKeys(t.TempDir(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	start := func(addr string) *broker.Broker {
		t.Helper()
		srv, err := ca.IssueServer([]string{"127.0.0.1"}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		var b *broker.Broker
		deadline := time.Now().Add(10 * time.Second)
		for { // the old listener's port may take a moment to be free
			b, err = broker.New(broker.Config{Listen: addr, Certificate: srv, ClientCAs: ca.Pool(), SessionTicketKeys: keys.Keys()}, nil)
			if err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	}
	b1 := start("127.0.0.1:0")
	addr := b1.Addr().String()
	const id = "dev-resume"
	cert, err := ca.IssueClient(id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var attempts atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	l, err := link.Dial(ctx, link.Config{DeviceID: id, BrokerURL: "tls://" + addr, Certificate: cert, RootCAs: ca.Pool(), AgentVersion: "test",
		MinBackoff: 200 * time.Millisecond, MaxBackoff: time.Minute, Jitter: 1, OnAttempt: func(int) { attempts.Add(1) }}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if b1.Stats.FullTLS.Load() != 1 {
		t.Fatalf("first connect: %d full handshakes, want 1", b1.Stats.FullTLS.Load())
	}
	b1.Close()
	time.Sleep(time.Second) // a few failed attempts while the broker is down
	downAttempts := attempts.Load()
	b2 := start(addr)
	back := time.Now()
	for b2.Stats.Connected.Load() == 0 {
		// Backoff capped at 8 × 200 ms after a recent connection.
		if time.Since(back) > 5*time.Second {
			t.Fatalf("not reconnected within 5 s of the broker's return (%d attempts)", attempts.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if b2.Stats.Resumed.Load() != 1 || b2.Stats.FullTLS.Load() != 0 {
		t.Errorf("reconnect: %d resumed, %d full handshakes; want the session resumed", b2.Stats.Resumed.Load(), b2.Stats.FullTLS.Load())
	}
	if downAttempts < 1 {
		t.Errorf("%d reconnect attempts while the broker was down, want at least 1", downAttempts)
	}
}
