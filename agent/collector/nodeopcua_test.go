package collector

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gantry-iot/gantry/pkg/machinemodel"
	"github.com/gantry-iot/gantry/testbed/nodeopcua"
)

// nodeOPCUA starts the node-opcua test server (testbed/nodeopcua) and
// returns its endpoint URL.
func nodeOPCUA(t *testing.T, password string) string {
	t.Helper()
	if err := nodeopcua.Available(); err != nil {
		t.Skip(err)
	}
	srv, err := nodeopcua.Start(context.Background(), password, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv.URL
}

// logBuffer collects slog output safely across goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func secureTemplate(url, mode string) machinemodel.OPCUA {
	return machinemodel.OPCUA{EndpointURL: url, SecurityMode: mode, DataPoints: []machinemodel.DataPoint{
		{NodeID: nodeopcua.Temperature, Name: "temperature", SamplingIntervalMS: 100},
		{NodeID: nodeopcua.Counter, Name: "counter", SamplingIntervalMS: 100},
	}}
}

// TestNodeOPCUASecurity: against node-opcua, the collector reads changing
// values over Basic256Sha256 SignAndEncrypt and Sign with a username; the
// server certificate is pinned on first use; a wrong password gives a
// clear state and log line, retries with growing gaps without crashing,
// while a correctly configured collector on the same server keeps
// delivering; the password is never logged.
func TestNodeOPCUASecurity(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node-opcua server")
	}
	const password = "s3cret-Pa55word"
	url := nodeOPCUA(t, password)
	state := t.TempDir()
	id, err := LoadOrCreateIdentity(state, "urn:gantry:agent:test")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{IdentityCertFile, IdentityKeyFile} {
		if fi, err := os.Stat(filepath.Join(state, f)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v, want mode 0600", f, err)
		}
	}
	again, err := LoadOrCreateIdentity(state, "urn:gantry:agent:test")
	if err != nil || !bytes.Equal(again.CertDER, id.CertDER) || again.URI != "urn:gantry:agent:test" {
		t.Fatalf("identity not reused: %v", err)
	}
	logs := &logBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, nil))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	start := func(mode, pass string) (*Collector, *sink) {
		k := &sink{}
		c, err := New(secureTemplate(url, mode), k.add, Options{FlushInterval: 50 * time.Millisecond, Watchdog: 10 * time.Second, MaxBackoff: 4 * time.Second, Logger: logger,
			Security: Security{Identity: id, Username: "operator", Password: pass, TrustDir: filepath.Join(state, "trust")}})
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() { _ = c.Run(ctx) })
		return c, k
	}
	changing := func(k *sink) func() bool {
		return func() bool {
			k.mu.Lock()
			defer k.mu.Unlock()
			seen := map[float64]bool{}
			for _, s := range k.s {
				if s.Point == "temperature" && s.Status == 0 && !s.At.IsZero() {
					seen[s.Value] = true
				}
			}
			return len(seen) >= 3
		}
	}

	enc, kEnc := start("SignAndEncrypt", password)
	waitFor(t, 60*time.Second, "changing values over SignAndEncrypt", changing(kEnc))
	if enc.State() != "connected" {
		t.Errorf("state %q, want connected", enc.State())
	}
	pins, _ := filepath.Glob(filepath.Join(state, "trust", "opcua-server-*.der"))
	if len(pins) != 1 {
		t.Errorf("pinned server certificates: %v, want one", pins)
	}
	_, kSign := start("Sign", password)
	waitFor(t, 60*time.Second, "changing values over Sign", changing(kSign))

	// Wrong password: a clear state, retries with growing gaps, no crash;
	// the good collectors keep delivering.
	bad, _ := start("SignAndEncrypt", "wrong-password")
	waitFor(t, 60*time.Second, "a refused login", func() bool { return strings.Contains(bad.State(), "refused user operator") })
	t.Logf("wrong password → state %q; retry gaps follow", bad.State())
	if !strings.Contains(bad.State(), "password_file") {
		t.Errorf("state %q does not say what to check", bad.State())
	}
	waitFor(t, 60*time.Second, "three retries", func() bool { return strings.Count(logs.String(), "refused user operator") >= 3 })
	var gaps []time.Duration
	var last time.Time
	for line := range strings.SplitSeq(logs.String(), "\n") {
		if !strings.Contains(line, "refused user operator") {
			continue
		}
		i := strings.Index(line, `"time":"`)
		at, err := time.Parse(time.RFC3339Nano, line[i+8:i+8+strings.Index(line[i+8:], `"`)])
		if err != nil {
			t.Fatal(err)
		}
		if !last.IsZero() {
			gaps = append(gaps, at.Sub(last))
		}
		last = at
	}
	t.Logf("retry gaps %v", gaps)
	if len(gaps) < 2 || gaps[0] < 500*time.Millisecond || gaps[1] <= gaps[0] {
		t.Errorf("retry gaps %v: want backoff (≥ 0.5 s, growing), not a hot loop", gaps)
	}
	kEnc.mu.Lock()
	n := len(kEnc.s)
	kEnc.mu.Unlock()
	waitFor(t, 10*time.Second, "values still flowing on the good session", func() bool {
		kEnc.mu.Lock()
		defer kEnc.mu.Unlock()
		return len(kEnc.s) > n
	})
	if strings.Contains(logs.String(), password) || strings.Contains(logs.String(), "wrong-password") {
		t.Errorf("a password reached the log")
	}
}

// TestServerCertificatePin: a server presenting a different certificate
// than the pinned one is refused with the fingerprint and what to do.
func TestServerCertificatePin(t *testing.T) {
	dir := t.TempDir()
	c := &Collector{tpl: machinemodel.OPCUA{EndpointURL: "opc.tcp://plc:4840"}, opts: Options{Security: Security{TrustDir: dir}}, log: slog.New(slog.DiscardHandler)}
	if err := c.checkPin([]byte("first")); err != nil {
		t.Fatal(err)
	}
	if err := c.checkPin([]byte("first")); err != nil {
		t.Errorf("same certificate refused: %v", err)
	}
	err := c.checkPin([]byte("second"))
	if err == nil || !strings.Contains(err.Error(), "not the pinned") || !strings.Contains(err.Error(), "delete") {
		t.Errorf("changed certificate: %v", err)
	}
	if err := c.checkPin(nil); err == nil {
		t.Errorf("no certificate accepted on a secured endpoint")
	}
}

// TestNodeOPCUAServerRestart: the server is stopped for 30 s and started
// again on the same port with the same certificate; values flow again
// within 10 s and the server counts exactly one subscription, the
// collector's — none left over from before the outage.
func TestNodeOPCUAServerRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node-opcua server and waits 30 s")
	}
	if err := nodeopcua.Available(); err != nil {
		t.Skip(err)
	}
	const password = "restart-Pa55"
	pki, state := t.TempDir(), t.TempDir()
	srv, err := nodeopcua.Start(context.Background(), password, pki)
	if err != nil {
		t.Fatal(err)
	}
	id, err := LoadOrCreateIdentity(state, "urn:gantry:agent:restart")
	if err != nil {
		t.Fatal(err)
	}
	tpl := secureTemplate(srv.URL, "SignAndEncrypt")
	tpl.DataPoints = append(tpl.DataPoints, machinemodel.DataPoint{NodeID: nodeopcua.Subscriptions, Name: "subscriptions", SamplingIntervalMS: 100})
	k := &sink{}
	c, err := New(tpl, k.add, Options{FlushInterval: 50 * time.Millisecond, Watchdog: 5 * time.Second, MaxBackoff: 2 * time.Second,
		Security: Security{Identity: id, Username: nodeopcua.User, Password: password, TrustDir: filepath.Join(state, "trust")}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	latest := func(point string) (float64, time.Time, bool) {
		k.mu.Lock()
		defer k.mu.Unlock()
		for i := len(k.s) - 1; i >= 0; i-- {
			if s := k.s[i]; s.Point == point && s.Status == 0 {
				return s.Value, s.At, true
			}
		}
		return 0, time.Time{}, false
	}
	waitFor(t, 60*time.Second, "values before the outage", func() bool { _, _, ok := latest("counter"); return ok })

	srv.Close()
	stopped := time.Now()
	waitFor(t, 15*time.Second, "the collector noticing the outage", func() bool { return c.State() != "connected" })
	time.Sleep(30*time.Second - time.Since(stopped))
	srv, err = nodeopcua.StartOn(context.Background(), srv.Port, password, pki)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	restarted := time.Now()
	// The new server's Counter starts again at 0: a value with a source
	// time after the restart proves the data flows again.
	waitFor(t, 10*time.Second, "values within 10 s of the restart", func() bool {
		_, at, ok := latest("counter")
		return ok && at.After(restarted.Add(-time.Second)) && c.State() == "connected"
	})
	t.Logf("values again %v after the restart", time.Since(restarted).Round(time.Millisecond))
	time.Sleep(2 * time.Second) // let the subscription count settle and be sampled
	if n, _, ok := latest("subscriptions"); !ok || n != 1 {
		t.Errorf("the server counts %v subscriptions (ok %v), want exactly the collector's one", n, ok)
	}
}
