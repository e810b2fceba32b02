package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// keys are generated once: RSA generation is slow under -race.
var keys = sync.OnceValue(func() map[string]crypto.Signer {
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	rsa1024, _ := rsa.GenerateKey(rand.Reader, 1024)
	rsa2048, _ := rsa.GenerateKey(rand.Reader, 2048)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	return map[string]crypto.Signer{"p256": p256, "p224": p224, "rsa1024": rsa1024, "rsa2048": rsa2048, "ed25519": ed}
})

func newCA(t testing.TB) *CA {
	t.Helper()
	ca, err := NewCA("test CA", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func csr(t testing.TB, key crypto.Signer, cn string) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:  pkix.Name{CommonName: cn},
		DNSNames: []string{"evil.example"},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestSignCSR(t *testing.T) {
	ca := newCA(t)
	k := keys()
	tampered := csr(t, k["p256"], "x")
	tampered[len(tampered)-3] ^= 0xff // break the signature
	for _, tc := range []struct {
		name     string
		der      []byte
		deviceID string
		ttl      time.Duration
		errHas   string // "" = success
	}{
		{name: "P-256", der: csr(t, k["p256"], "attacker-chosen"), deviceID: "dev-1", ttl: time.Hour},
		{name: "RSA 2048", der: csr(t, k["rsa2048"], "dev-1"), deviceID: "dev-1", ttl: time.Hour},
		{name: "Ed25519", der: csr(t, k["ed25519"], ""), deviceID: "dev-1", ttl: time.Hour},
		{name: "garbage", der: []byte("hello"), deviceID: "dev-1", ttl: time.Hour, errHas: "not a DER PKCS#10"},
		{name: "empty", der: nil, deviceID: "dev-1", ttl: time.Hour, errHas: "not a DER PKCS#10"},
		{name: "truncated", der: csr(t, k["p256"], "x")[:40], deviceID: "dev-1", ttl: time.Hour, errHas: "not a DER PKCS#10"},
		{name: "wrong signature", der: tampered, deviceID: "dev-1", ttl: time.Hour, errHas: "signature does not verify"},
		{name: "weak RSA", der: csr(t, k["rsa1024"], "x"), deviceID: "dev-1", ttl: time.Hour, errHas: "1024 bits is too weak"},
		{name: "weak ECDSA", der: csr(t, k["p224"], "x"), deviceID: "dev-1", ttl: time.Hour, errHas: "P-224 is too weak"},
		{name: "wildcard device ID", der: csr(t, k["p256"], "x"), deviceID: "+", ttl: time.Hour, errHas: "invalid device ID"},
		{name: "zero lifetime", der: csr(t, k["p256"], "x"), deviceID: "dev-1", ttl: 0, errHas: "must be positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cert, err := ca.SignCSR(tc.der, tc.deviceID, tc.ttl)
			if tc.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errHas) {
					t.Fatalf("SignCSR error = %v, want one saying %q", err, tc.errHas)
				}
				if tc.ttl > 0 && !errors.Is(err, ErrBadCSR) {
					t.Errorf("error %v does not wrap ErrBadCSR", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			type facts struct {
				CN       string
				DNSNames []string
				EKU      []x509.ExtKeyUsage
				IsCA     bool
			}
			want := facts{CN: tc.deviceID, EKU: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
			got := facts{CN: cert.Subject.CommonName, DNSNames: cert.DNSNames, EKU: cert.ExtKeyUsage, IsCA: cert.IsCA}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("issued certificate (-want +got):\n%s", diff)
			}
			if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
				t.Errorf("issued cert does not verify as a client cert: %v", err)
			}
			if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
				t.Errorf("device certificate is also valid as a server certificate")
			}
			if got := cert.NotAfter.Sub(cert.NotBefore); got > tc.ttl+10*time.Minute {
				t.Errorf("lifetime %v, want about %v", got, tc.ttl)
			}
		})
	}
}

func TestSignCSRSerialsDiffer(t *testing.T) {
	ca := newCA(t)
	der := csr(t, keys()["p256"], "dev")
	a, err := ca.SignCSR(der, "dev", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ca.SignCSR(der, "dev", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if SerialString(a) == SerialString(b) || SerialString(a) == "" {
		t.Errorf("serials %q and %q: want distinct, non-empty", SerialString(a), SerialString(b))
	}
}

func TestLifetimeClampedToCA(t *testing.T) {
	ca := newCA(t)
	c, err := ca.IssueClient("x", 100*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if c.Leaf.NotAfter.After(ca.Cert.NotAfter) {
		t.Errorf("leaf outlives the CA: %v > %v", c.Leaf.NotAfter, ca.Cert.NotAfter)
	}
}

func TestPEMRoundTrip(t *testing.T) {
	ca := newCA(t)
	certPEM, keyPEM, err := ca.MarshalPEM()
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseCA(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if !back.Cert.Equal(ca.Cert) {
		t.Fatal("certificate changed in the round trip")
	}
	// The parsed CA signs certificates that verify against the original.
	c, err := back.IssueClient("dev", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("certificate from the parsed CA: %v", err)
	}

	other := newCA(t)
	_, otherKey, _ := other.MarshalPEM()
	leaf, _ := ca.IssueClient("leaf", time.Hour)
	leafCA := &CA{Cert: leaf.Leaf, key: leaf.PrivateKey.(crypto.Signer)}
	leafCert, leafKey, _ := leafCA.MarshalPEM()
	for _, tc := range []struct {
		name         string
		cert, key    []byte
		errHas       string
		wantErrBadCA bool
	}{
		{name: "garbage cert", cert: []byte("x"), key: keyPEM, errHas: "no PEM CERTIFICATE"},
		{name: "garbage key", cert: certPEM, key: []byte("x"), errHas: "no PEM PRIVATE KEY"},
		{name: "swapped", cert: keyPEM, key: certPEM, errHas: "no PEM CERTIFICATE"},
		{name: "key of another CA", cert: certPEM, key: otherKey, errHas: "does not belong"},
		{name: "not a CA", cert: leafCert, key: leafKey, errHas: "not a CA certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseCA(tc.cert, tc.key)
			if !errors.Is(err, ErrBadCA) || !strings.Contains(err.Error(), tc.errHas) {
				t.Errorf("ParseCA error = %v, want ErrBadCA saying %q", err, tc.errHas)
			}
		})
	}
}

func TestLoadOrCreateCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	ca1, err := LoadOrCreateCA(dir, "c")
	if err != nil {
		t.Fatal(err)
	}
	ca2, err := LoadOrCreateCA(dir, "c")
	if err != nil {
		t.Fatal(err)
	}
	if !ca1.Cert.Equal(ca2.Cert) {
		t.Errorf("reload gave another CA")
	}
	for _, f := range []string{"ca.pem", "ca-key.pem"} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", f, fi.Mode().Perm())
		}
	}
	if err := os.Remove(filepath.Join(dir, "ca.pem")); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateCA(dir, "c"); !errors.Is(err, ErrBadCA) || !strings.Contains(err.Error(), "both exist or both be absent") {
		t.Errorf("key without certificate: %v, want ErrBadCA", err)
	}
}

func TestIssueServerTLS(t *testing.T) {
	ca := newCA(t)
	srv, err := ca.IssueServer([]string{"127.0.0.1", "localhost", "::1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var ips []string
	for _, ip := range srv.Leaf.IPAddresses {
		ips = append(ips, ip.String())
	}
	if diff := cmp.Diff([]string{"127.0.0.1", "::1"}, ips); diff != "" {
		t.Errorf("IP SANs (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"localhost"}, srv.Leaf.DNSNames); diff != "" {
		t.Errorf("DNS SANs (-want +got):\n%s", diff)
	}
	if _, err := ca.IssueServer(nil, time.Hour); err == nil {
		t.Errorf("server certificate without hosts issued")
	}
	cli, err := ca.IssueClient("dev-9", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{srv}, ClientCAs: ca.Pool(), ClientAuth: tls.RequireAndVerifyClientCert})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- err.Error()
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		if err := tc.Handshake(); err != nil {
			got <- err.Error()
			return
		}
		got <- tc.ConnectionState().PeerCertificates[0].Subject.CommonName
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{cli}, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	// Read to complete the server's handshake under TLS 1.3.
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	c.Read(make([]byte, 1))
	c.Close()
	if cn := <-got; cn != "dev-9" {
		t.Errorf("server saw %q, want dev-9", cn)
	}
}

func FuzzSignCSR(f *testing.F) {
	ca := newCA(f)
	for _, name := range []string{"p256", "ed25519", "p224"} {
		f.Add(csr(f, keys()[name], "x"))
	}
	f.Add([]byte{0x30, 0x03, 0x02, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		cert, err := ca.SignCSR(b, "dev", time.Minute)
		if err != nil {
			if !errors.Is(err, ErrBadCSR) {
				t.Fatalf("error %v does not wrap ErrBadCSR", err)
			}
			return
		}
		if cert.Subject.CommonName != "dev" || len(cert.DNSNames) > 0 || cert.IsCA {
			t.Fatalf("issued CN %q, DNS %v, CA %v", cert.Subject.CommonName, cert.DNSNames, cert.IsCA)
		}
	})
}

func FuzzParseCA(f *testing.F) {
	ca := newCA(f)
	c, k, err := ca.MarshalPEM()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(c, k)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"), k)
	f.Fuzz(func(t *testing.T, certPEM, keyPEM []byte) {
		got, err := ParseCA(certPEM, keyPEM)
		if err != nil {
			if !errors.Is(err, ErrBadCA) {
				t.Fatalf("error %v does not wrap ErrBadCA", err)
			}
			return
		}
		if !got.Cert.IsCA {
			t.Fatalf("accepted a non-CA certificate")
		}
	})
}

func TestLoadOrCreateSigningKey(t *testing.T) {
	dir := t.TempDir()
	k1, err := LoadOrCreateSigningKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := LoadOrCreateSigningKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !k1.Equal(k2) {
		t.Errorf("reload gave another key")
	}
	p := filepath.Join(dir, "command-signing.pem")
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file: %v, %v; want mode 0600", fi, err)
	}
	if err := os.WriteFile(p, []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateSigningKey(dir); !errors.Is(err, ErrBadCA) || !strings.Contains(err.Error(), "not an Ed25519 seed") {
		t.Errorf("corrupt key file: %v", err)
	}
}
