package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gantry-iot/gantry/agent/config"
	"github.com/gantry-iot/gantry/pkg/machinemodel"
)

// TestCollectorSecurityUserCertificate: an endpoint with auth type
// certificate gives the collector the user certificate (and the agent's
// client certificate for the secured channel); an unreadable or
// mismatched key fails with the endpoint's name.
func TestCollectorSecurityUserCertificate(t *testing.T) {
	dir := t.TempDir()
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "line-3"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	certFile, keyFile := filepath.Join(dir, "user.pem"), filepath.Join(dir, "user.key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600)

	cfg := config.Default()
	cfg.StateDir = t.TempDir()
	const url = "opc.tcp://plc:4840"
	cfg.OPCUA.Endpoints = []config.Endpoint{{Name: "plc", URL: url, SecurityMode: config.SecurityModeSignAndEncrypt, SecurityPolicy: config.SecurityPolicyBasic256Sha256,
		Auth: config.Auth{Type: config.AuthCertificate, CertFile: certFile, KeyFile: keyFile}}}
	got, sec, err := collectorSecurity(cfg, machinemodel.OPCUA{EndpointURL: url, SecurityMode: "None"}, "dev-1")
	if err != nil {
		t.Fatal(err)
	}
	if got.SecurityMode != "SignAndEncrypt" || sec.UserCert == nil || sec.Identity == nil || sec.Username != "" || !strings.Contains(sec.UserCert.Subject, "CN=line-3") {
		t.Errorf("mode %q, user cert %v, identity %v, username %q", got.SecurityMode, sec.UserCert != nil, sec.Identity != nil, sec.Username)
	}
	cfg.OPCUA.Endpoints[0].Auth.KeyFile = filepath.Join(dir, "missing.key")
	if _, _, err := collectorSecurity(cfg, machinemodel.OPCUA{EndpointURL: url, SecurityMode: "None"}, "dev-1"); err == nil || !strings.Contains(err.Error(), "opcua endpoint plc") || !strings.Contains(err.Error(), "key_file") {
		t.Errorf("missing key: %v", err)
	}
}
