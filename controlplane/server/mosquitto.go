package server

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gantry-iot/gantry/controlplane/pki"
	"github.com/gantry-iot/gantry/controlplane/revocation"
	"github.com/gantry-iot/gantry/controlplane/store"
)

// MosquittoFiles says where and for which names WriteMosquittoFiles writes.
type MosquittoFiles struct {
	DataDir  string        // the control plane's data dir (CA in pki/)
	StoreDSN string        // empty: SQLite in DataDir
	Dir      string        // output directory
	Hosts    []string      // names and IPs devices use to reach the broker
	Validity time.Duration // of the server certificate
}

// WriteMosquittoFiles writes ca.pem, server.pem, server-key.pem (0600) and
// crl.pem to f.Dir for an external Mosquitto (deploy/mosquitto), creating
// the CA on first use, and returns the paths written.
func WriteMosquittoFiles(ctx context.Context, f MosquittoFiles) ([]string, error) {
	if f.DataDir == "" || f.Dir == "" {
		return nil, errors.New("mosquitto files: a data dir and an output dir are required")
	}
	var hosts []string
	for _, h := range f.Hosts {
		if h = strings.TrimSpace(h); h != "" {
			hosts = append(hosts, h)
		}
	}
	if len(hosts) == 0 {
		return nil, errors.New("mosquitto files: give the broker's host names or IPs (devices verify the server certificate against them)")
	}
	if err := os.MkdirAll(f.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("mosquitto files: %w", err)
	}
	ca, err := pki.LoadOrCreateCA(filepath.Join(f.DataDir, "pki"), "Gantry control plane CA")
	if err != nil {
		return nil, err
	}
	dsn := f.StoreDSN
	if dsn == "" {
		dsn = filepath.Join(f.DataDir, "gantry.db")
	}
	st, err := store.Open(ctx, dsn, nil)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	if err := os.MkdirAll(f.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("mosquitto files: %w", err)
	}
	srv, err := ca.IssueServer(hosts, f.Validity)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(srv.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("mosquitto files: %w", err)
	}
	caPEM, _, err := ca.MarshalPEM()
	if err != nil {
		return nil, err
	}
	files := []struct {
		name string
		data []byte
		perm os.FileMode
	}{
		{"ca.pem", caPEM, 0o644},
		{"server.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate[0]}), 0o644},
		// The broker's user must read the key: 0640, readable by the group
		// (chgrp mosquitto after writing it).
		{"server-key.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o640},
	}
	var written []string
	for _, fl := range files {
		p := filepath.Join(f.Dir, fl.name)
		if err := pki.WriteFileAtomic(p, fl.data, fl.perm); err != nil {
			return written, err
		}
		written = append(written, p)
	}
	crl := filepath.Join(f.Dir, "crl.pem")
	if _, err := revocation.New(ctx, st, revocation.Config{CA: ca, CRLFile: crl}, nil, nil); err != nil {
		return written, err
	}
	return append(written, crl), nil
}
