package broker

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/gantry-iot/gantry/controlplane/pki"
	"github.com/gantry-iot/gantry/pkg/topics"
)

func writePEM(t *testing.T, path string, c tls.Certificate) (certPath, keyPath string) {
	t.Helper()
	cp, kp := path+".pem", path+"-key.pem"
	if err := os.WriteFile(cp, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), 0o600); err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509MarshalKey(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kp, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cp, kp
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestMosquittoACL runs deploy/mosquitto's configuration in Debian's
// mosquitto on a free port and checks the same ACL as the embedded broker.
func TestMosquittoACL(t *testing.T) {
	bin, err := exec.LookPath("mosquitto")
	if err != nil {
		t.Skip("mosquitto not installed (apt-get install -y mosquitto; make deps does it)")
	}
	dir := t.TempDir()
	ca, err := pki.NewCA("test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _, _ := ca.MarshalPEM()
	os.WriteFile(filepath.Join(dir, "ca.pem"), caPEM, 0o600)
	crl, err := ca.CRL(nil, 1, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "crl.pem"), crl, 0o600)
	srv, _ := ca.IssueServer([]string{"127.0.0.1"}, time.Hour)
	writePEM(t, filepath.Join(dir, "server"), srv)
	port := freePort(t)
	conf, err := os.ReadFile("../../deploy/mosquitto/mosquitto.conf")
	if err != nil {
		t.Fatal(err)
	}
	c := strings.ReplaceAll(string(conf), "/etc/mosquitto/gantry", dir)
	c = strings.Replace(c, "listener 8883", fmt.Sprintf("listener %d 127.0.0.1", port), 1)
	if os.Geteuid() == 0 {
		// mosquitto started as root drops to user "mosquitto", which cannot
		// read the test's private temp dir; keep the test's own user.
		c += "\nuser root\n"
	}
	acl, _ := os.ReadFile("../../deploy/mosquitto/acl.conf")
	os.WriteFile(filepath.Join(dir, "acl.conf"), acl, 0o600)
	os.WriteFile(filepath.Join(dir, "mosquitto.conf"), []byte(c), 0o600)
	cmd := exec.Command(bin, "-c", filepath.Join(dir, "mosquitto.conf"))
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for i := 0; i < 100; i++ {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	connect := func(cn string) paho.Client {
		t.Helper()
		cert, _ := ca.IssueClient(cn, time.Hour)
		o := paho.NewClientOptions().AddBroker("tls://" + addr).SetClientID(cn).SetAutoReconnect(false).
			SetTLSConfig(&tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{cert}, ServerName: "127.0.0.1"})
		cl := paho.NewClient(o)
		if tok := cl.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			t.Fatalf("connect %s: %v\n%s", cn, tok.Error(), out.String())
		}
		t.Cleanup(func() { cl.Disconnect(100) })
		return cl
	}
	cp := connect("gantry-controlplane")
	got := make(chan string, 16)
	if tok := cp.Subscribe(topics.Wildcard(topics.Telemetry), 1, func(_ paho.Client, m paho.Message) { got <- m.Topic() + "=" + string(m.Payload()) }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	a := connect("dev-a")
	a.Publish(topics.Device("dev-a", topics.Telemetry), 1, false, "own").WaitTimeout(5 * time.Second)
	a.Publish(topics.Device("dev-b", topics.Telemetry), 1, false, "spoof").WaitTimeout(5 * time.Second)
	select {
	case m := <-got:
		if m != "gantry/v1/dev/dev-a/telemetry=own" {
			t.Fatalf("got %s", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("own telemetry not delivered")
	}
	select {
	case m := <-got:
		t.Fatalf("spoofed telemetry delivered: %s", m)
	case <-time.After(500 * time.Millisecond):
	}
	// Edge-rule events: own topic only (a spoof is published first; the
	// first delivery must be the device's own).
	if tok := cp.Subscribe(topics.Wildcard(topics.Events), 1, func(_ paho.Client, m paho.Message) { got <- m.Topic() + "=" + string(m.Payload()) }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatal(tok.Error())
	}
	a.Publish(topics.Device("dev-b", topics.Events), 1, false, "spoof").WaitTimeout(5 * time.Second)
	a.Publish(topics.Device("dev-a", topics.Events), 1, false, "own").WaitTimeout(5 * time.Second)
	select {
	case m := <-got:
		if m != "gantry/v1/dev/dev-a/events=own" {
			t.Fatalf("got %s", m)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("own events not delivered")
	}
	cmds := make(chan string, 4)
	a.Subscribe(topics.Device("dev-b", topics.Cmd), 1, func(_ paho.Client, m paho.Message) { cmds <- m.Topic() }).WaitTimeout(5 * time.Second)
	a.Subscribe(topics.Device("dev-a", topics.Cmd), 1, func(_ paho.Client, m paho.Message) { cmds <- m.Topic() }).WaitTimeout(5 * time.Second)
	cp.Publish(topics.Device("dev-b", topics.Cmd), 1, false, "x").WaitTimeout(5 * time.Second)
	cp.Publish(topics.Device("dev-a", topics.Cmd), 1, false, "y").WaitTimeout(5 * time.Second)
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
	// No certificate: refused.
	o := paho.NewClientOptions().AddBroker("tls://" + addr).SetClientID("anon").SetAutoReconnect(false).
		SetTLSConfig(&tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1"}).SetConnectTimeout(3 * time.Second)
	anon := paho.NewClient(o)
	if tok := anon.Connect(); tok.WaitTimeout(5*time.Second) && tok.Error() == nil {
		anon.Disconnect(0)
		t.Errorf("connection without a client certificate accepted")
	}
}

func x509MarshalKey(c tls.Certificate) ([]byte, error) {
	return x509.MarshalPKCS8PrivateKey(c.PrivateKey)
}
