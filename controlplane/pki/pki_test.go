package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func csr(t *testing.T, key any, cn string) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestSignCSR(t *testing.T) {
	ca, err := NewCA("test CA", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	cert, err := ca.SignCSR(csr(t, key, "attacker-chosen"), "dev-1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if cert.Subject.CommonName != "dev-1" {
		t.Errorf("CN = %q, want the device ID", cert.Subject.CommonName)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("issued cert does not verify as a client cert: %v", err)
	}
	weak, _ := rsa.GenerateKey(rand.Reader, 1024)
	bad := csr(t, key, "x")
	bad[len(bad)-3] ^= 0xff // break the signature
	for name, der := range map[string][]byte{
		"garbage":   []byte("hello"),
		"tampered":  bad,
		"weak RSA":  csr(t, weak, "x"),
		"truncated": csr(t, key, "x")[:40],
	} {
		if _, err := ca.SignCSR(der, "dev-1", time.Hour); !errors.Is(err, ErrBadCSR) {
			t.Errorf("%s: %v, want ErrBadCSR", name, err)
		}
	}
}

func TestLoadOrCreateAndTLS(t *testing.T) {
	dir := t.TempDir()
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
	fi, _ := os.Stat(filepath.Join(dir, "ca-key.pem"))
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("CA key mode %v", fi.Mode().Perm())
	}
	srv, err := ca1.IssueServer([]string{"127.0.0.1", "localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := ca2.IssueClient("dev-9", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{srv}, ClientCAs: ca1.Pool(), ClientAuth: tls.RequireAndVerifyClientCert})
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
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: ca1.Pool(), Certificates: []tls.Certificate{cli}, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if cn := <-got; cn != "dev-9" {
		t.Errorf("server saw %q", cn)
	}
}

func FuzzSignCSR(f *testing.F) {
	ca, err := NewCA("fuzz", time.Now())
	if err != nil {
		f.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	f.Add(der)
	f.Fuzz(func(t *testing.T, b []byte) {
		cert, err := ca.SignCSR(b, "dev", time.Minute)
		if err == nil && cert.Subject.CommonName != "dev" {
			t.Fatalf("CN %q", cert.Subject.CommonName)
		}
	})
}
