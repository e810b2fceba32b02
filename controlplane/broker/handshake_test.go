package broker

import (
	"crypto/tls"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gantry-iot/gantry/controlplane/pki"
)

// TestHandshakeListener: a connection that never completes its TLS
// handshake is closed after the timeout and counted, without reaching
// Accept; a good one is handed over; Close ends handshakes in progress.
func TestHandshakeListener(t *testing.T) {
	ca, err := pki.NewCA("test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.IssueServer([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var failed atomic.Int64
	l := newHandshakeListener(raw, &tls.Config{Certificates: []tls.Certificate{cert}}, 300*time.Millisecond, &failed)
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()

	// Silent client: closed after the timeout, never accepted.
	silent, err := net.Dial("tcp", raw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	start := time.Now()
	_ = silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(silent); err != nil {
		t.Fatalf("silent connection not closed by the listener: %v", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("silent connection closed after %v, want about 300ms", took)
	}
	// crypto/tls closes the connection when the handshake's context ends,
	// just before HandshakeContext returns and the failure is counted.
	for deadline := time.Now().Add(2 * time.Second); failed.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	if failed.Load() != 1 {
		t.Errorf("failed handshakes = %d, want 1", failed.Load())
	}

	// A real TLS client is handed over with its handshake done.
	client := make(chan *tls.Conn, 1)
	go func() {
		c, _ := tls.Dial("tcp", raw.Addr().String(), &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1"})
		client <- c
	}()
	defer func() {
		if c := <-client; c != nil {
			c.Close()
		}
	}()
	select {
	case c := <-accepted:
		if tc, ok := c.(*tls.Conn); !ok || !tc.ConnectionState().HandshakeComplete {
			t.Errorf("accepted %T without a completed handshake", c)
		}
		c.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("TLS client not accepted")
	}

	// Close with a handshake in progress returns promptly.
	pending, err := net.Dial("tcp", raw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer pending.Close()
	time.Sleep(50 * time.Millisecond)
	start = time.Now()
	l.Close()
	if took := time.Since(start); took > time.Second {
		t.Errorf("Close took %v with a handshake pending", took)
	}
	if _, ok := <-accepted; ok {
		t.Error("Accept returned a connection after Close")
	}
}
