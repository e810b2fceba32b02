package pki

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestCRL: the list is signed by the CA, lists exactly the revoked
// serials, and stays valid as long as the CA.
func TestCRL(t *testing.T) {
	now := time.Now()
	ca, err := NewCA("test", now)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := ca.IssueClient("dev-a", time.Hour)
	b, _ := ca.IssueClient("dev-b", time.Hour)
	p, err := ca.CRL([]Revoked{{Serial: SerialString(a.Leaf), At: now}}, 7, now)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(p)
	if blk == nil || blk.Type != "X509 CRL" {
		t.Fatalf("not a PEM X509 CRL: %q", p)
	}
	crl, err := x509.ParseRevocationList(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(ca.Cert); err != nil {
		t.Errorf("CRL not signed by the CA: %v", err)
	}
	other, _ := NewCA("other", now)
	if err := crl.CheckSignatureFrom(other.Cert); err == nil {
		t.Error("CRL verifies against another CA")
	}
	if crl.Number.Int64() != 7 || !crl.NextUpdate.Equal(ca.Cert.NotAfter.UTC().Truncate(time.Second)) {
		t.Errorf("number %v next update %v; want 7 and the CA's expiry %v", crl.Number, crl.NextUpdate, ca.Cert.NotAfter)
	}
	if len(crl.RevokedCertificateEntries) != 1 || crl.RevokedCertificateEntries[0].SerialNumber.Cmp(a.Leaf.SerialNumber) != 0 {
		t.Errorf("entries %+v; want only dev-a's serial", crl.RevokedCertificateEntries)
	}
	for _, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber.Cmp(b.Leaf.SerialNumber) == 0 {
			t.Error("dev-b listed")
		}
	}
	if _, err := ca.CRL([]Revoked{{Serial: "zz"}}, 1, now); !errors.Is(err, ErrBadCA) {
		t.Errorf("bad serial: %v, want ErrBadCA", err)
	}
	// Atomic replacement.
	path := filepath.Join(t.TempDir(), "crl.pem")
	for _, data := range [][]byte{[]byte("one"), p} {
		if err := WriteFileAtomic(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(path)
		if string(got) != string(data) {
			t.Errorf("file holds %q, want %q", got, data)
		}
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Errorf("temporary files left: %v", ents)
	}
}
