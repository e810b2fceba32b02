package extbroker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/gantry-iot/gantry/controlplane/pki"
	"github.com/gantry-iot/gantry/pkg/topics"
)

type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// mosquitto starts Debian's mosquitto with deploy/mosquitto's files on a
// free loopback port and returns its address.
func mosquitto(t *testing.T, ca *pki.CA) (string, *syncBuf) {
	t.Helper()
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		t.Skip("mosquitto not installed (apt-get install -y mosquitto; make deps does it)")
	}
	dir := t.TempDir()
	write := func(name string, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	caPEM, _, _ := ca.MarshalPEM()
	write("ca.pem", caPEM)
	srv, err := ca.IssueServer([]string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := x509.MarshalPKCS8PrivateKey(srv.PrivateKey)
	write("server.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate[0]}))
	write("server-key.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}))
	crl, err := ca.CRL(nil, 1, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	write("crl.pem", crl)
	acl, err := os.ReadFile("../../deploy/mosquitto/acl.conf")
	if err != nil {
		t.Fatal(err)
	}
	write("acl.conf", acl)
	conf, err := os.ReadFile("../../deploy/mosquitto/mosquitto.conf")
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, port, _ := net.SplitHostPort(addr)
	c := strings.ReplaceAll(string(conf), "/etc/mosquitto/gantry", dir)
	c = strings.Replace(c, "listener 8883", "listener "+port+" 127.0.0.1", 1)
	if os.Geteuid() == 0 {
		c += "\nuser root\n"
	}
	write("mosquitto.conf", []byte(c))
	log := &syncBuf{}
	cmd := exec.Command(bin, "-c", filepath.Join(dir, "mosquitto.conf"))
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	for i := 0; ; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr, log
		}
		if i == 100 {
			t.Fatalf("mosquitto not listening:\n%s", log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tlsFor(t *testing.T, ca *pki.CA, cn string) *tls.Config {
	t.Helper()
	cert, err := ca.IssueClient(cn, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: ca.Pool(), ServerName: "127.0.0.1"}
}

// TestSharedIngestAndRedelivery, against Mosquitto with deploy/mosquitto's
// configuration: telemetry reaches exactly one of the shared ingest
// clients; a message whose handler fails is not acknowledged and comes
// back after the clients reconnect; messages published while the control
// plane is away are queued for its persistent ingest sessions.
func TestSharedIngestAndRedelivery(t *testing.T) {
	ca, err := pki.NewCA("test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	addr, log := mosquitto(t, ca)
	cfg := Config{URL: "tls://" + addr, TLS: tlsFor(t, ca, DefaultClientID), IngestClients: 2}
	got := make(chan string, 100)
	failOnce := sync.Once{}
	c1, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c1.SubscribeShared(topics.Wildcard(topics.Telemetry), func(_ string, p []byte) error {
		if string(p) == "fail" {
			var first bool
			failOnce.Do(func() { first = true })
			if first {
				got <- "refused:fail"
				return errors.New("store down")
			}
		}
		got <- string(p)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	c1.Start()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c1.WaitConnected(ctx); err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	o := paho.NewClientOptions().AddBroker("tls://" + addr).SetClientID("dev-a").SetTLSConfig(tlsFor(t, ca, "dev-a")).SetAutoReconnect(false)
	dev := paho.NewClient(o)
	if tok := dev.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("device connect: %v", tok.Error())
	}
	defer dev.Disconnect(100)
	pub := func(p string) {
		t.Helper()
		if tok := dev.Publish(topics.Device("dev-a", topics.Telemetry), 1, false, p); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("publish %s: %v", p, tok.Error())
		}
	}
	want := map[string]int{}
	for i := range 20 {
		pub(fmt.Sprint("m", i))
		want[fmt.Sprint("m", i)] = 1
	}
	pub("fail")
	want["refused:fail"] = 1
	seen := map[string]int{}
	collect := func(n int) {
		t.Helper()
		for range n {
			select {
			case p := <-got:
				seen[p]++
			case <-time.After(10 * time.Second):
				t.Fatalf("only %v received\n%s", seen, log)
			}
		}
	}
	collect(len(want))
	select {
	case p := <-got:
		t.Fatalf("extra delivery %q (shared subscription delivered twice, or an unacked message early)", p)
	case <-time.After(500 * time.Millisecond):
	}
	c1.Close()
	// While the control plane is away.
	pub("while-down")
	c2, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if err := c2.SubscribeShared(topics.Wildcard(topics.Telemetry), func(_ string, p []byte) error { got <- string(p); return nil }); err != nil {
		t.Fatal(err)
	}
	c2.Start()
	want["fail"], want["while-down"] = 1, 1
	collect(2)
	for p, n := range want {
		if seen[p] != n {
			t.Errorf("%q received %d times, want %d (all: %v)", p, seen[p], n, seen)
		}
	}
}

// TestConfigErrors: unusable configurations are refused up front.
func TestConfigErrors(t *testing.T) {
	ca, _ := pki.NewCA("test", time.Now())
	good := tlsFor(t, ca, DefaultClientID)
	for _, c := range []Config{
		{URL: "tcp://127.0.0.1:1883", TLS: good},
		{URL: "tls://127.0.0.1", TLS: good},
		{URL: "tls://127.0.0.1:8883"},
		{URL: "tls://127.0.0.1:8883", TLS: &tls.Config{RootCAs: ca.Pool()}},
		{URL: "tls://127.0.0.1:8883", TLS: good, IngestClients: 65},
		{URL: "tls://127.0.0.1:8883", TLS: good, Group: "a/b"},
	} {
		if _, err := New(c, nil); !errors.Is(err, ErrConfig) {
			t.Errorf("New(%+v) = %v, want ErrConfig", c, err)
		}
	}
}
