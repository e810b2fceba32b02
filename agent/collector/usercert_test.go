package collector

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gantry-iot/gantry/testbed/nodeopcua"
)

// writeUserCert creates a self-signed RSA user certificate for cn in dir
// (PEM cert, key in PKCS#1 or PKCS#8, mode 0600) and returns the paths.
func writeUserCert(t *testing.T, dir, cn string, pkcs8 bool) (certFile, keyFile string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tpl := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()),
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"Gantry test"}},
		NotBefore:    now.Add(-time.Hour), NotAfter: now.AddDate(1, 0, 0),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment | x509.KeyUsageKeyEncipherment | x509.KeyUsageDataEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, cn+".pem"), filepath.Join(dir, cn+".key")
	kb := &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}
	if pkcs8 {
		b, _ := x509.MarshalPKCS8PrivateKey(key)
		kb = &pem.Block{Type: "PRIVATE KEY", Bytes: b}
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(kb), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// TestLoadUserCertificate: PKCS#1 and PKCS#8 keys load; a key of another
// certificate, a world-readable key, a non-certificate, a non-RSA key and
// missing files are refused with what to do.
func TestLoadUserCertificate(t *testing.T) {
	dir := t.TempDir()
	c1, k1 := writeUserCert(t, dir, "alice", false)
	c2, k2 := writeUserCert(t, dir, "bob", true)
	for _, p := range [][2]string{{c1, k1}, {c2, k2}} {
		u, err := LoadUserCertificate(p[0], p[1])
		if err != nil {
			t.Fatalf("%s: %v", p[0], err)
		}
		if !strings.Contains(u.Subject, "CN=") || len(u.Fingerprint()) != 64 {
			t.Errorf("subject %q fingerprint %q", u.Subject, u.Fingerprint())
		}
	}
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalPKCS8PrivateKey(ecKey)
	ecFile := filepath.Join(dir, "ec.key")
	os.WriteFile(ecFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecDER}), 0o600)
	open := filepath.Join(dir, "open.key")
	b, _ := os.ReadFile(k1)
	os.WriteFile(open, b, 0o644)
	os.Chmod(open, 0o644)
	for _, tc := range []struct{ name, cert, key, want string }{
		{"other key", c1, k2, "does not belong"},
		{"world-readable key", c1, open, "chmod 600"},
		{"key as certificate", k1, k1, "want CERTIFICATE"},
		{"EC key", c1, ecFile, "want RSA"},
		{"missing cert", filepath.Join(dir, "none.pem"), k1, "cert_file"},
		{"missing key", c1, filepath.Join(dir, "none.key"), "key_file"},
	} {
		if _, err := LoadUserCertificate(tc.cert, tc.key); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.want)
		}
	}
	u, _ := LoadUserCertificate(c1, k1)
	tpl := secureTemplate("opc.tcp://127.0.0.1:4840", "None")
	if _, err := New(tpl, func([]Sample) {}, Options{Security: Security{UserCert: u}}); err == nil || !strings.Contains(err.Error(), "Sign or SignAndEncrypt") {
		t.Errorf("certificate login over security mode None: %v", err)
	}
}

// TestNodeOPCUAUserCertificate: node-opcua accepts the X.509 user
// identity token of the certificate in its user trust list (values flow
// over SignAndEncrypt) and rejects an untrusted one; the collector's state
// then names the certificate and what to do, and it retries without
// crashing.
func TestNodeOPCUAUserCertificate(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node-opcua server")
	}
	if err := nodeopcua.Available(); err != nil {
		t.Skip(err)
	}
	dir := t.TempDir()
	goodCert, goodKey := writeUserCert(t, dir, "gantry-user", false)
	badCert, badKey := writeUserCert(t, dir, "stranger", true)
	srv, err := nodeopcua.StartWith(context.Background(), 0, "unused-Pa55", t.TempDir(), nodeopcua.Options{TrustedUserCert: goodCert})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	state := t.TempDir()
	id, err := LoadOrCreateIdentity(state, "urn:gantry:agent:usercert")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	start := func(certFile, keyFile string) (*Collector, *sink) {
		u, err := LoadUserCertificate(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		k := &sink{}
		c, err := New(secureTemplate(srv.URL, "SignAndEncrypt"), k.add, Options{FlushInterval: 50 * time.Millisecond, Watchdog: 10 * time.Second, MaxBackoff: 4 * time.Second,
			Security: Security{Identity: id, UserCert: u, TrustDir: filepath.Join(state, "trust")}})
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() { _ = c.Run(ctx) })
		return c, k
	}
	good, kGood := start(goodCert, goodKey)
	waitFor(t, 60*time.Second, "values with the trusted user certificate", func() bool {
		return kGood.find("counter", func(s Sample) bool { return s.Status == 0 && s.Value > 0 })
	})
	if good.State() != "connected" {
		t.Errorf("state %q, want connected", good.State())
	}
	bad, _ := start(badCert, badKey)
	waitFor(t, 60*time.Second, "the untrusted user certificate refused", func() bool { return strings.Contains(bad.State(), "refused user certificate") })
	st := bad.State()
	t.Logf("untrusted user certificate → state %q", st)
	u, _ := LoadUserCertificate(badCert, badKey)
	for _, want := range []string{"CN=stranger", u.Fingerprint(), badCert, "trusted user certificates"} {
		if !strings.Contains(st, want) {
			t.Errorf("state %q does not contain %q", st, want)
		}
	}
	for _, p := range bad.Statuses() {
		if p.Status == "ok" {
			t.Errorf("point %s ok without a session", p.Point)
		}
	}
}
