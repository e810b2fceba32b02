// Package pki is the control plane's certificate authority: it issues the
// server certificates of the embedded MQTT broker and HTTPS listener, and
// signs edge devices' certificate requests at enrollment (the device's key
// never leaves the device). Keys are ECDSA P-256.
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
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/gantry-iot/gantry/pkg/topics"
)

// CA is a certificate authority. Safe for concurrent use.
type CA struct {
	Cert *x509.Certificate
	key  crypto.Signer
	now  func() time.Time
}

// NewCA creates a self-signed CA valid for ten years.
func NewCA(name string, now time.Time) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki.NewCA: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, fmt.Errorf("pki.NewCA: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"Gantry"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("pki.NewCA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki.NewCA: %w", err)
	}
	return &CA{Cert: cert, key: key, now: time.Now}, nil
}

func randomSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
}

// SerialString is the hex form of a certificate serial used in records
// and revocation checks.
func SerialString(c *x509.Certificate) string { return hex.EncodeToString(c.SerialNumber.Bytes()) }

// MarshalPEM encodes the CA certificate and key.
func (ca *CA) MarshalPEM() (certPEM, keyPEM []byte, err error) {
	keyDER, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: marshal CA key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), nil
}

// ParseCA decodes a CA from PEM (as written by MarshalPEM): the key must
// be PKCS#8 and belong to the certificate, which must be a CA. Errors wrap
// ErrBadCA.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	cb, _ := pem.Decode(certPEM)
	if cb == nil || cb.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("pki.ParseCA: %w: no PEM CERTIFICATE block in the certificate data", ErrBadCA)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki.ParseCA: %w: %w", ErrBadCA, err)
	}
	if !cert.IsCA || !cert.BasicConstraintsValid {
		return nil, fmt.Errorf("pki.ParseCA: %w: certificate %q is not a CA certificate", ErrBadCA, cert.Subject.CommonName)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil || kb.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("pki.ParseCA: %w: no PEM PRIVATE KEY (PKCS#8) block in the key data", ErrBadCA)
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki.ParseCA: %w: %w", ErrBadCA, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("pki.ParseCA: %w: key type %T cannot sign", ErrBadCA, k)
	}
	pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("pki.ParseCA: %w: the private key does not belong to certificate %q", ErrBadCA, cert.Subject.CommonName)
	}
	return &CA{Cert: cert, key: signer, now: time.Now}, nil
}

// LoadOrCreateCA reads ca.pem and ca-key.pem from dir, creating dir
// (0700) and both files (0600) with a new CA named name on first use.
// One file without the other is an error, not a reason to make a new CA
// (that would orphan every enrolled device).
func LoadOrCreateCA(dir, name string) (*CA, error) {
	cp, kp := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	cb, cerr := os.ReadFile(cp)
	kb, kerr := os.ReadFile(kp)
	if cerr == nil && kerr == nil {
		ca, err := ParseCA(cb, kb)
		if err != nil {
			return nil, fmt.Errorf("pki.LoadOrCreateCA: %s, %s: %w", cp, kp, err)
		}
		return ca, nil
	}
	if !errors.Is(cerr, os.ErrNotExist) || !errors.Is(kerr, os.ErrNotExist) {
		return nil, fmt.Errorf("pki.LoadOrCreateCA: %w: %s and %s must both exist or both be absent (restore the missing one from a backup; %v; %v)", ErrBadCA, cp, kp, cerr, kerr)
	}
	ca, err := NewCA(name, time.Now())
	if err != nil {
		return nil, err
	}
	certPEM, keyPEM, err := ca.MarshalPEM()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pki.LoadOrCreateCA: %w", err)
	}
	if err := writeFileNew(kp, keyPEM); err != nil {
		return nil, fmt.Errorf("pki.LoadOrCreateCA: %w", err)
	}
	if err := writeFileNew(cp, certPEM); err != nil {
		return nil, fmt.Errorf("pki.LoadOrCreateCA: %w", err)
	}
	return ca, nil
}

// writeFileNew writes data to a new file with mode 0600 and syncs it; it
// fails if the file exists (another process created the CA meanwhile).
func writeFileNew(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Pool returns a pool holding the CA certificate.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

func (ca *CA) sign(tmpl *x509.Certificate, pub crypto.PublicKey) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// leaf is the template of a certificate for cn valid for ttl (but never
// beyond the CA's own expiry).
func (ca *CA) leaf(cn string, ttl time.Duration, usage x509.ExtKeyUsage) (*x509.Certificate, error) {
	if ttl <= 0 {
		return nil, fmt.Errorf("certificate lifetime %v must be positive", ttl)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := ca.now()
	notAfter := now.Add(ttl)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"Gantry"}},
		NotBefore:    now.Add(-5 * time.Minute),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}, nil
}

// IssueServer issues a TLS server certificate for hosts (IPs become IP
// SANs, everything else DNS SANs).
func (ca *CA) IssueServer(hosts []string, ttl time.Duration) (tls.Certificate, error) {
	if len(hosts) == 0 {
		return tls.Certificate{}, errors.New("pki.IssueServer: no host names or IPs given; clients verify the server against them")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki.IssueServer: %w", err)
	}
	tmpl, err := ca.leaf(hosts[0], ttl, x509.ExtKeyUsageServerAuth)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki.IssueServer: %w", err)
	}
	for _, h := range hosts {
		if h == "" {
			return tls.Certificate{}, errors.New("pki.IssueServer: empty host name")
		}
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	cert, err := ca.sign(tmpl, &key.PublicKey)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki.IssueServer: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}, nil
}

// IssueClient issues a client certificate with common name cn (the
// control plane's own clients, tests).
func (ca *CA) IssueClient(cn string, ttl time.Duration) (tls.Certificate, error) {
	if cn == "" {
		return tls.Certificate{}, errors.New("pki.IssueClient: empty common name; the broker uses it as the client's identity")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki.IssueClient: %w", err)
	}
	tmpl, err := ca.leaf(cn, ttl, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki.IssueClient: %w", err)
	}
	cert, err := ca.sign(tmpl, &key.PublicKey)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki.IssueClient: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}, nil
}

// SignCSR checks a device's certificate request (DER PKCS#10) and issues
// a client certificate (ExtKeyUsageClientAuth) whose common name is
// deviceID, whatever the request asked; other requested names and
// extensions are ignored. Accepted keys: ECDSA P-256 or larger, RSA of at
// least 2048 bits, Ed25519. Errors about the request or device ID wrap
// ErrBadCSR. The serial for revocation records is SerialString(cert).
func (ca *CA) SignCSR(csrDER []byte, deviceID string, ttl time.Duration) (*x509.Certificate, error) {
	if err := topics.CheckDeviceID(deviceID); err != nil {
		return nil, fmt.Errorf("pki.SignCSR: %w: %w", ErrBadCSR, err)
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("pki.SignCSR: %w: not a DER PKCS#10 request (%v); send the DER bytes of a CSR made with the device's key", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("pki.SignCSR: %w: signature does not verify, so the request was not made with its key (%v)", ErrBadCSR, err)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve.Params().BitSize < 256 {
			return nil, fmt.Errorf("pki.SignCSR: %w: ECDSA curve %s is too weak; use P-256 or larger", ErrBadCSR, k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, fmt.Errorf("pki.SignCSR: %w: RSA key of %d bits is too weak; use at least 2048 bits (or ECDSA P-256)", ErrBadCSR, k.N.BitLen())
		}
	case ed25519.PublicKey:
	default:
		return nil, fmt.Errorf("pki.SignCSR: %w: unsupported key type %T; use ECDSA P-256", ErrBadCSR, csr.PublicKey)
	}
	tmpl, err := ca.leaf(deviceID, ttl, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return nil, fmt.Errorf("pki.SignCSR: %w", err)
	}
	cert, err := ca.sign(tmpl, csr.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("pki.SignCSR: %w", err)
	}
	return cert, nil
}
