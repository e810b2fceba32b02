package e2e

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/gantry-iot/gantry/pkg/machinemodel"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
	"github.com/gantry-iot/gantry/testbed/nodeopcua"
)

// userCert writes a self-signed RSA user certificate (PEM) and its key
// (0600) for cn into dir and returns the paths and the SHA-256 fingerprint.
func userCert(t *testing.T, dir, cn string) (certFile, keyFile, sum string) {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tpl := &x509.Certificate{SerialNumber: big.NewInt(now.UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(1, 0, 0),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment | x509.KeyUsageKeyEncipherment | x509.KeyUsageDataEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, cn+".pem"), filepath.Join(dir, cn+".key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(der)
	return certFile, keyFile, strings.ToUpper(hex.EncodeToString(h[:]))
}

// TestOPCUACertificateLogin: the agent process logs in to node-opcua with
// an X.509 user certificate from its config (auth type certificate) over
// SignAndEncrypt, and the values reach the control plane's API; an agent
// configured with a certificate the server does not trust keeps running
// and its status page names the endpoint's refused certificate (subject,
// fingerprint, file) and what to do.
func TestOPCUACertificateLogin(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real processes")
	}
	if err := nodeopcua.Available(); err != nil {
		t.Skip(err)
	}
	dir := t.TempDir()
	goodCert, goodKey, _ := userCert(t, dir, "line-operator")
	badCert, badKey, badSum := userCert(t, dir, "stranger")
	srv, err := nodeopcua.StartWith(context.Background(), 0, "unused-Pa55", t.TempDir(), nodeopcua.Options{TrustedUserCert: goodCert})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	cp := startControlPlane(t)
	tpl := machinemodel.OPCUA{EndpointURL: srv.URL, SecurityMode: "SignAndEncrypt", DataPoints: []machinemodel.DataPoint{
		{NodeID: nodeopcua.Temperature, Name: "temperature", Unit: "°C", SamplingIntervalMS: 100},
	}}
	auth := func(cert, key string) string {
		return fmt.Sprintf(`{"type": "certificate", "cert_file": %q, "key_file": %q}`, cert, key)
	}
	dc, id, _, goodLogs := runAuthAgent(t, cp, srv.URL, tpl, "certificate gateway", auth(goodCert, goodKey))
	ctx := context.Background()
	deadline := time.Now().Add(60 * time.Second)
	for {
		r, err := dc.GetLatestValues(ctx, connect.NewRequest(&gantryv1.GetLatestValuesRequest{DeviceId: id}))
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Msg.Values) > 0 && r.Msg.Values[0].Point == "temperature" && r.Msg.Values[0].Value >= 20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no temperature through the agent with the trusted user certificate within 60 s; agent log:\n%s", goodLogs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}

	_, _, status, badLogs := runAuthAgent(t, cp, srv.URL, tpl, "untrusted certificate gateway", auth(badCert, badKey))
	var p struct {
		OPCUA struct {
			Endpoint string `json:"endpoint"`
			State    string `json:"state"`
		} `json:"opcua"`
	}
	deadline = time.Now().Add(60 * time.Second)
	for !strings.Contains(p.OPCUA.State, "refused user certificate") {
		if time.Now().After(deadline) {
			t.Fatalf("status %+v after 60 s; agent log:\n%s", p, badLogs.String())
		}
		time.Sleep(200 * time.Millisecond)
		resp, err := http.Get(status + "/status")
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		_ = json.Unmarshal(b, &p)
	}
	t.Logf("untrusted user certificate → %s: %q", p.OPCUA.Endpoint, p.OPCUA.State)
	for _, want := range []string{"CN=stranger", badSum, badCert, "trusted user certificates"} {
		if !strings.Contains(p.OPCUA.State, want) {
			t.Errorf("status %q does not contain %q", p.OPCUA.State, want)
		}
	}
	if p.OPCUA.Endpoint != srv.URL {
		t.Errorf("status endpoint %q, want %q", p.OPCUA.Endpoint, srv.URL)
	}
}
