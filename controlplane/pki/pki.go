// Package pki is the control plane's certificate authority: it issues the
// server certificates of the embedded MQTT broker and HTTPS listener, and
// signs edge devices' certificate requests at enrollment (the device's key
// never leaves the device). Keys are ECDSA P-256.
package pki

import (
	"crypto"
	"crypto/ecdsa"
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
)

// ErrBadCSR is wrapped by every certificate-request rejection.
var ErrBadCSR = errors.New("bad certificate request")

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
		return nil, err
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
		return nil, err
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

// ParseCA decodes a CA from PEM.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	cb, _ := pem.Decode(certPEM)
	if cb == nil || cb.Type != "CERTIFICATE" {
		return nil, errors.New("pki.ParseCA: no CERTIFICATE block")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki.ParseCA: %w", err)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, errors.New("pki.ParseCA: no private key block")
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pki.ParseCA: %w", err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok || !cert.IsCA {
		return nil, errors.New("pki.ParseCA: not a CA certificate with a signing key")
	}
	return &CA{Cert: cert, key: signer, now: time.Now}, nil
}

// LoadOrCreateCA reads ca.pem and ca-key.pem from dir, creating them
// (mode 0600) on first use.
func LoadOrCreateCA(dir, name string) (*CA, error) {
	cp, kp := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	cb, cerr := os.ReadFile(cp)
	kb, kerr := os.ReadFile(kp)
	if cerr == nil && kerr == nil {
		return ParseCA(cb, kb)
	}
	if !errors.Is(cerr, os.ErrNotExist) || !errors.Is(kerr, os.ErrNotExist) {
		return nil, fmt.Errorf("pki: %s and %s must both exist or both be absent (%v, %v)", cp, kp, cerr, kerr)
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
		return nil, err
	}
	if err := os.WriteFile(kp, keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(cp, certPEM, 0o600); err != nil {
		return nil, err
	}
	return ca, nil
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

func (ca *CA) leaf(cn string, ttl time.Duration, usage x509.ExtKeyUsage) (*x509.Certificate, error) {
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := ca.now()
	return &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"Gantry"}},
		NotBefore:    now.Add(-5 * time.Minute),
		NotAfter:     now.Add(ttl),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}, nil
}

// IssueServer issues a TLS server certificate for hosts (IPs become IP
// SANs, everything else DNS SANs).
func (ca *CA) IssueServer(hosts []string, ttl time.Duration) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl, err := ca.leaf(firstOr(hosts, "gantry"), ttl, x509.ExtKeyUsageServerAuth)
	if err != nil {
		return tls.Certificate{}, err
	}
	for _, h := range hosts {
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

func firstOr(s []string, def string) string {
	if len(s) > 0 {
		return s[0]
	}
	return def
}

// IssueClient issues a client certificate with common name cn (the
// control plane's own clients, tests).
func (ca *CA) IssueClient(cn string, ttl time.Duration) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl, err := ca.leaf(cn, ttl, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return tls.Certificate{}, err
	}
	cert, err := ca.sign(tmpl, &key.PublicKey)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("pki.IssueClient: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}, nil
}

// SignCSR checks a device's certificate request (DER) and issues a client
// certificate whose common name is deviceID, whatever the request asked.
func (ca *CA) SignCSR(csrDER []byte, deviceID string, ttl time.Duration) (*x509.Certificate, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("%w: not a DER PKCS#10 request: %v", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature does not verify (the request was not made with its key): %v", ErrBadCSR, err)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve.Params().BitSize < 256 {
			return nil, fmt.Errorf("%w: ECDSA keys need at least P-256", ErrBadCSR)
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, fmt.Errorf("%w: RSA keys need at least 2048 bits, got %d", ErrBadCSR, k.N.BitLen())
		}
	default:
		if _, ok := csr.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok {
			return nil, fmt.Errorf("%w: unsupported key type %T", ErrBadCSR, csr.PublicKey)
		}
	}
	tmpl, err := ca.leaf(deviceID, ttl, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return nil, err
	}
	cert, err := ca.sign(tmpl, csr.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("pki.SignCSR: %w", err)
	}
	return cert, nil
}
