package collector

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/ua"
)

// Security is how the collector meets a secured endpoint (template
// security mode Sign or SignAndEncrypt) and who it logs in as.
type Security struct {
	// Policy is the security policy, e.g. "Basic256Sha256" (default for
	// Sign and SignAndEncrypt).
	Policy string
	// Identity is the client application instance certificate; required
	// for Sign and SignAndEncrypt (see LoadOrCreateIdentity).
	Identity *Identity
	// Username and Password log in as an OPC-UA user; empty Username is
	// anonymous. The password is never logged.
	Username string
	Password string
	// UserCert logs in with an X.509 user identity token (OPC-UA
	// "certificate" user authentication) instead of a username; it needs
	// security mode Sign or SignAndEncrypt. See LoadUserCertificate.
	UserCert *UserCertificate
	// TrustDir pins server certificates: the first certificate an endpoint
	// presents is written there, and a different one later is refused
	// (trust on first use). Empty: no pinning.
	TrustDir string
}

// Identity is an OPC-UA client application instance certificate.
type Identity struct {
	CertDER []byte
	Key     *rsa.PrivateKey
	URI     string // the certificate's application URI
}

// UserCertificate is an OPC-UA user's X.509 certificate and RSA key.
type UserCertificate struct {
	CertDER []byte
	Key     *rsa.PrivateKey
	File    string // where the certificate came from, for messages
	Subject string // the certificate's subject, for messages
}

// Fingerprint is the certificate's SHA-256 (hex, upper case).
func (u *UserCertificate) Fingerprint() string { return fingerprint(u.CertDER) }

// LoadUserCertificate reads an OPC-UA user certificate (PEM CERTIFICATE or
// DER) and its RSA private key (PEM "RSA PRIVATE KEY" or "PRIVATE KEY"),
// checks that they belong together and that the key file is not readable
// by every user.
func LoadUserCertificate(certFile, keyFile string) (*UserCertificate, error) {
	cb, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("user certificate cert_file: %w", err)
	}
	der := cb
	if b, _ := pem.Decode(cb); b != nil {
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("user certificate cert_file %s: PEM block %q, want CERTIFICATE", certFile, b.Type)
		}
		der = b.Bytes
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("user certificate cert_file %s: not a PEM or DER X.509 certificate: %w", certFile, err)
	}
	pub, ok := cert.PublicKey.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("user certificate cert_file %s: %T key; OPC-UA user certificates need RSA", certFile, cert.PublicKey)
	}
	if now := time.Now(); now.After(cert.NotAfter) || now.Before(cert.NotBefore) {
		return nil, fmt.Errorf("user certificate cert_file %s: valid %s to %s, not now; renew it", certFile, cert.NotBefore.Format(time.DateOnly), cert.NotAfter.Format(time.DateOnly))
	}
	fi, err := os.Stat(keyFile)
	if err != nil {
		return nil, fmt.Errorf("user certificate key_file: %w", err)
	}
	if fi.Mode().Perm()&0o007 != 0 {
		return nil, fmt.Errorf("user certificate key_file %s: mode %v lets every user read the private key; chmod 600 it", keyFile, fi.Mode().Perm())
	}
	kb, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("user certificate key_file: %w", err)
	}
	b, _ := pem.Decode(kb)
	if b == nil {
		return nil, fmt.Errorf("user certificate key_file %s: not PEM", keyFile)
	}
	var key *rsa.PrivateKey
	switch b.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	case "PRIVATE KEY":
		var k any
		if k, err = x509.ParsePKCS8PrivateKey(b.Bytes); err == nil {
			if key, ok = k.(*rsa.PrivateKey); !ok {
				err = fmt.Errorf("%T key, want RSA", k)
			}
		}
	default:
		err = fmt.Errorf("PEM block %q, want RSA PRIVATE KEY or PRIVATE KEY", b.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("user certificate key_file %s: %w", keyFile, err)
	}
	if !key.PublicKey.Equal(pub) {
		return nil, fmt.Errorf("user certificate key_file %s does not belong to cert_file %s", keyFile, certFile)
	}
	return &UserCertificate{CertDER: der, Key: key, File: certFile, Subject: cert.Subject.String()}, nil
}

// Identity files in the agent's state directory.
const (
	IdentityCertFile = "opcua-client.der"
	IdentityKeyFile  = "opcua-client.key"
)

// LoadOrCreateIdentity reads the client certificate and key from dir, or
// creates a self-signed RSA-2048 certificate for applicationURI there
// (files 0600) on first use. OPC-UA servers trust clients by this
// certificate: an operator adds it to the server's trust list once.
func LoadOrCreateIdentity(dir, applicationURI string) (*Identity, error) {
	certPath, keyPath := filepath.Join(dir, IdentityCertFile), filepath.Join(dir, IdentityKeyFile)
	der, cerr := os.ReadFile(certPath)
	keyPEM, kerr := os.ReadFile(keyPath)
	if cerr == nil && kerr == nil {
		return parseIdentity(der, keyPEM)
	}
	if !errors.Is(cerr, os.ErrNotExist) && cerr != nil {
		return nil, fmt.Errorf("opc-ua client certificate: %w", cerr)
	}
	if !errors.Is(kerr, os.ErrNotExist) && kerr != nil {
		return nil, fmt.Errorf("opc-ua client key: %w", kerr)
	}
	u, err := url.Parse(applicationURI)
	if err != nil || u.Scheme == "" {
		return nil, fmt.Errorf("opc-ua client certificate: application URI %q is not a URI", applicationURI)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	now := time.Now()
	tpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "Gantry agent", Organization: []string{"Gantry"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment | x509.KeyUsageKeyEncipherment | x509.KeyUsageDataEncipherment | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{u},
		DNSNames:              []string{host},
	}
	der, err = x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	if err := writeFile0600(keyPath, keyPEM); err != nil {
		return nil, err
	}
	if err := writeFile0600(certPath, der); err != nil {
		return nil, err
	}
	return &Identity{CertDER: der, Key: key, URI: applicationURI}, nil
}

func parseIdentity(der, keyPEM []byte) (*Identity, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("opc-ua client certificate %s: %w (delete it and its key to create a new one)", IdentityCertFile, err)
	}
	b, _ := pem.Decode(keyPEM)
	if b == nil || b.Type != "RSA PRIVATE KEY" {
		return nil, fmt.Errorf("opc-ua client key %s: not a PEM RSA PRIVATE KEY", IdentityKeyFile)
	}
	key, err := x509.ParsePKCS1PrivateKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("opc-ua client key %s: %w", IdentityKeyFile, err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("opc-ua client key %s does not belong to %s", IdentityKeyFile, IdentityCertFile)
	}
	id := &Identity{CertDER: der, Key: key}
	if len(cert.URIs) > 0 {
		id.URI = cert.URIs[0].String()
	}
	return id, nil
}

func writeFile0600(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// clientOptions returns the gopcua options for the template's security
// mode: None connects as before; Sign and SignAndEncrypt pick the
// server's matching endpoint, check its certificate against the pin and
// log in with the configured user.
func (c *Collector) clientOptions(ctx context.Context) ([]opcua.Option, error) {
	opts := []opcua.Option{opcua.AutoReconnect(false), opcua.RequestTimeout(10 * time.Second)}
	sec := c.opts.Security
	mode := ua.MessageSecurityModeFromString(c.tpl.SecurityMode)
	if mode == ua.MessageSecurityModeNone {
		opts = append(opts, opcua.SecurityMode(ua.MessageSecurityModeNone))
		if sec.Username != "" {
			opts = append(opts, opcua.AuthUsername(sec.Username, sec.Password))
		}
		return opts, nil
	}
	opts = append(opts, opcua.Certificate(sec.Identity.CertDER), opcua.PrivateKey(sec.Identity.Key))
	if sec.Identity.URI != "" {
		opts = append(opts, opcua.ApplicationURI(sec.Identity.URI))
	}
	eps, err := opcua.GetEndpoints(ctx, c.tpl.EndpointURL)
	if err != nil {
		return nil, fmt.Errorf("get endpoints of %s: %w", c.tpl.EndpointURL, err)
	}
	ep, err := opcua.SelectEndpoint(eps, sec.Policy, mode)
	if err != nil {
		return nil, fmt.Errorf("the server offers no %s endpoint with policy %s: %w", mode, sec.Policy, err)
	}
	if err := c.checkPin(ep.ServerCertificate); err != nil {
		return nil, err
	}
	token := ua.UserTokenTypeAnonymous
	if sec.UserCert != nil {
		if !offersToken(ep, ua.UserTokenTypeCertificate) {
			return nil, fmt.Errorf("the server's %s endpoint offers no certificate user login (it offers %s); use auth type username or anonymous", mode, tokenTypes(ep))
		}
		token = ua.UserTokenTypeCertificate
		opts = append(opts, opcua.AuthCertificate(sec.UserCert.CertDER), opcua.AuthPrivateKey(sec.UserCert.Key))
	} else if sec.Username != "" {
		token = ua.UserTokenTypeUserName
		opts = append(opts, opcua.AuthUsername(sec.Username, sec.Password))
	} else {
		opts = append(opts, opcua.AuthAnonymous())
	}
	opts = append(opts, opcua.SecurityFromEndpoint(ep, token))
	return opts, nil
}

func offersToken(ep *ua.EndpointDescription, t ua.UserTokenType) bool {
	for _, p := range ep.UserIdentityTokens {
		if p.TokenType == t {
			return true
		}
	}
	return false
}

func tokenTypes(ep *ua.EndpointDescription) string {
	var ts []string
	for _, p := range ep.UserIdentityTokens {
		ts = append(ts, strings.TrimPrefix(p.TokenType.String(), "UserTokenType"))
	}
	if len(ts) == 0 {
		return "no user login"
	}
	return strings.Join(ts, ", ")
}

// checkPin implements trust on first use for the endpoint's certificate.
func (c *Collector) checkPin(cert []byte) error {
	dir := c.opts.Security.TrustDir
	if dir == "" {
		return nil
	}
	if len(cert) == 0 {
		return fmt.Errorf("the server at %s presented no certificate on a secured endpoint", c.tpl.EndpointURL)
	}
	sum := sha256.Sum256([]byte(c.tpl.EndpointURL))
	path := filepath.Join(dir, "opcua-server-"+hex.EncodeToString(sum[:8])+".der")
	pinned, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		if err := writeFile0600(path, cert); err != nil {
			return fmt.Errorf("pin the server certificate: %w", err)
		}
		c.log.Info("opc-ua server certificate pinned (trust on first use)", "endpoint", c.tpl.EndpointURL, "sha256", fingerprint(cert), "file", path)
		return nil
	case err != nil:
		return fmt.Errorf("read the pinned server certificate: %w", err)
	case !bytes.Equal(pinned, cert):
		return fmt.Errorf("the server at %s presents certificate sha256 %s, not the pinned %s: if the server's certificate was renewed on purpose, delete %s",
			c.tpl.EndpointURL, fingerprint(cert), fingerprint(pinned), path)
	}
	return nil
}

func fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return strings.ToUpper(hex.EncodeToString(sum[:]))
}

// explain turns the errors of a failed connection into what the user can
// act on; the password never appears.
func (c *Collector) explain(err error) error {
	var code ua.StatusCode
	if errors.As(err, &code) {
		switch code {
		case ua.StatusBadUserAccessDenied, ua.StatusBadIdentityTokenRejected, ua.StatusBadIdentityTokenInvalid:
			if u := c.opts.Security.UserCert; u != nil {
				return fmt.Errorf("%w: the OPC-UA server refused user certificate %q (sha256 %s, %s); add it to the server's trusted user certificates or check cert_file and key_file", err, u.Subject, u.Fingerprint(), u.File)
			}
			who := "anonymous login"
			if u := c.opts.Security.Username; u != "" {
				who = "user " + u
			}
			return fmt.Errorf("%w: the OPC-UA server refused %s; check the username and password_file", err, who)
		case ua.StatusBadSecurityChecksFailed, ua.StatusBadCertificateUntrusted, ua.StatusBadCertificateInvalid:
			return fmt.Errorf("%w: the OPC-UA server does not trust the agent's client certificate; add %s to the server's trusted clients", err, IdentityCertFile)
		}
	}
	return err
}
