package pki

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// Revoked is one revoked certificate for a CRL.
type Revoked struct {
	Serial string // hex, as SerialString
	At     time.Time
}

// CRL returns a PEM certificate revocation list signed by the CA listing
// revoked, numbered number (must grow with every new list) and valid from
// now until the CA expires: it is read by a broker that loads it only at
// start and reload, so a list that expired on its own would lock every
// device out. Serials that are not hex wrap ErrBadCA.
func (ca *CA) CRL(revoked []Revoked, number int64, now time.Time) ([]byte, error) {
	entries := make([]x509.RevocationListEntry, 0, len(revoked))
	for _, r := range revoked {
		b, err := hex.DecodeString(r.Serial)
		if err != nil || len(b) == 0 {
			return nil, fmt.Errorf("pki.CRL: %w: serial %q is not hex", ErrBadCA, r.Serial)
		}
		entries = append(entries, x509.RevocationListEntry{SerialNumber: new(big.Int).SetBytes(b), RevocationTime: r.At.UTC()})
	}
	next := ca.Cert.NotAfter
	if !next.After(now) {
		return nil, fmt.Errorf("pki.CRL: %w: the CA expired on %s", ErrBadCA, next.Format(time.RFC3339))
	}
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:                    big.NewInt(number),
		ThisUpdate:                now.Add(-time.Minute).UTC(),
		NextUpdate:                next.UTC(),
		RevokedCertificateEntries: entries,
	}, ca.Cert, ca.key)
	if err != nil {
		return nil, fmt.Errorf("pki.CRL: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), nil
}

// WriteFileAtomic replaces path with data, with mode perm from the start,
// via a synced temporary file and a rename, so a reader never sees a
// partial file.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("pki.WriteFileAtomic: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("pki.WriteFileAtomic: %w", err)
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return fmt.Errorf("pki.WriteFileAtomic: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("pki.WriteFileAtomic: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("pki.WriteFileAtomic: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("pki.WriteFileAtomic: %w", err)
	}
	return nil
}
