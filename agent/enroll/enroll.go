// Package enroll enrolls an edge device with the control plane and keeps
// the resulting identity in the agent's state directory: the device key is
// generated here and never leaves the device; the control plane signs a
// certificate request and returns the certificate, its CA, the MQTT broker
// URL and the public key that signs commands. Every file is written with
// mode 0600, atomically.
package enroll

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// File names in the state directory.
const (
	KeyFile   = "device.key"
	CertFile  = "device.pem"
	CAFile    = "ca.pem"
	StateFile = "device.json"
)

// State is the device's identity after enrollment.
type State struct {
	DeviceID         string    `json:"device_id"`
	Server           string    `json:"server"`
	MQTTURL          string    `json:"mqtt_url"`
	CommandPublicKey []byte    `json:"command_public_key"`
	EnrolledAt       time.Time `json:"enrolled_at"`
	Dir              string    `json:"-"`
}

// Options configure Enroll.
type Options struct {
	Server       string // control plane URL, http(s)://host:port
	Token        string
	StateDir     string
	ServerCAFile string // PEM bundle to trust for an https server with a private CA
	AgentVersion string
}

// Enroll generates a key, asks the control plane to certify it with the
// one-time token, and writes the state directory.
func Enroll(ctx context.Context, o Options) (State, error) {
	if o.Token == "" {
		return State{}, errors.New("enroll: --token is required (create one with 'gantryctl devices enroll-token DEVICE_ID')")
	}
	conn, err := dial(o.Server, o.ServerCAFile)
	if err != nil {
		return State{}, err
	}
	defer conn.Close()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return State{}, fmt.Errorf("enroll: generate key: %w", err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "gantry-agent"}}, key)
	if err != nil {
		return State{}, fmt.Errorf("enroll: certificate request: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := gantryv1.NewEnrollmentServiceClient(conn).Enroll(ctx, &gantryv1.EnrollRequest{Token: o.Token, CsrDer: csr, AgentVersion: o.AgentVersion})
	if err != nil {
		if st, ok := status.FromError(err); ok {
			return State{}, fmt.Errorf("enroll: the control plane refused: %s", st.Message())
		}
		return State{}, fmt.Errorf("enroll: %w", err)
	}
	if len(resp.CommandPublicKey) != ed25519.PublicKeySize {
		return State{}, errors.New("enroll: the control plane sent no valid command-signing key")
	}
	cb, _ := pem.Decode(resp.CertificatePem)
	if cb == nil {
		return State{}, errors.New("enroll: the control plane sent no certificate")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil || cert.Subject.CommonName != resp.DeviceId {
		return State{}, fmt.Errorf("enroll: certificate does not name device %q (%v)", resp.DeviceId, err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return State{}, err
	}
	st := State{DeviceID: resp.DeviceId, Server: o.Server, MQTTURL: resp.MqttUrl, CommandPublicKey: resp.CommandPublicKey, EnrolledAt: time.Now().UTC(), Dir: o.StateDir}
	stateJSON, _ := json.MarshalIndent(st, "", "  ")
	if err := os.MkdirAll(o.StateDir, 0o700); err != nil {
		return State{}, fmt.Errorf("enroll: state dir: %w", err)
	}
	for _, f := range []struct {
		name string
		data []byte
	}{
		{KeyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})},
		{CertFile, resp.CertificatePem},
		{CAFile, resp.CaPem},
		{StateFile, stateJSON},
	} {
		if err := writeFile(filepath.Join(o.StateDir, f.name), f.data); err != nil {
			return State{}, err
		}
	}
	return st, nil
}

// writeFile replaces path atomically with data, mode 0600.
func writeFile(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return fmt.Errorf("enroll: write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func dial(server, caFile string) (*grpc.ClientConn, error) {
	u, err := url.Parse(server)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("enroll: --server %q: want https://host:port (http:// only for a --dev control plane)", server)
	}
	var creds credentials.TransportCredentials
	if u.Scheme == "http" {
		creds = insecure.NewCredentials()
	} else {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if caFile != "" {
			b, err := os.ReadFile(caFile)
			if err != nil {
				return nil, fmt.Errorf("enroll: --server-ca: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(b) {
				return nil, fmt.Errorf("enroll: --server-ca %s holds no PEM certificate", caFile)
			}
			cfg.RootCAs = pool
		}
		creds = credentials.NewTLS(cfg)
	}
	host := u.Host
	if u.Port() == "" {
		host += map[string]string{"http": ":80", "https": ":443"}[u.Scheme]
	}
	return grpc.NewClient(host, grpc.WithTransportCredentials(creds))
}

// Load reads the state directory written by Enroll.
func Load(dir string) (State, tls.Certificate, *x509.CertPool, error) {
	b, err := os.ReadFile(filepath.Join(dir, StateFile))
	if errors.Is(err, os.ErrNotExist) {
		return State{}, tls.Certificate{}, nil, fmt.Errorf("%s is not enrolled: run 'gantry-agent enroll --server URL --token TOKEN' first", dir)
	}
	if err != nil {
		return State{}, tls.Certificate{}, nil, err
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil || st.DeviceID == "" {
		return State{}, tls.Certificate{}, nil, fmt.Errorf("%s: corrupt device state (%v); enroll again", StateFile, err)
	}
	st.Dir = dir
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile))
	if err != nil {
		return State{}, tls.Certificate{}, nil, fmt.Errorf("device certificate: %w; enroll again", err)
	}
	ca, err := os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil {
		return State{}, tls.Certificate{}, nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return State{}, tls.Certificate{}, nil, fmt.Errorf("%s holds no certificate; enroll again", CAFile)
	}
	return st, cert, pool, nil
}
