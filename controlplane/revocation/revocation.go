// Package revocation decides whether a device certificate is still valid
// and keeps the certificate revocation list (CRL) an external broker
// loads.
//
// A device certificate is valid while it is its device's current one
// (re-enrollment replaces it and revokes the previous one). Checker keeps
// every enrolled device's current serial in memory, loaded at start and
// updated by every enrollment that goes through its EnrollRepo, so a
// CONNECT costs a map lookup instead of a store query; a device missing
// from the cache (enrolled by another process, or never) is looked up in
// the store. Enrollments through the EnrollRepo are serialized and update
// the cache before the new certificate is handed out, so an old
// certificate is refused from the moment its replacement exists.
//
// With Config.CRLFile set, the CRL (PEM, signed by the CA) is rewritten
// at start and after every revocation, and Config.ReloadCommand runs after
// each rewrite so that the broker (Mosquitto reads crlfile only at start
// and on SIGHUP) loads it.
package revocation

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"os/exec"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gantry-iot/gantry/controlplane/fleet"
	"github.com/gantry-iot/gantry/controlplane/pki"
	"github.com/gantry-iot/gantry/controlplane/store"
)

// Store is the persistence a Checker needs.
type Store interface {
	ListDeviceCerts(ctx context.Context) (map[string]string, error)
	ListRevokedCerts(ctx context.Context) ([]store.RevokedCert, error)
	GetDevice(ctx context.Context, id string) (store.EdgeDevice, error)
}

// Config configures a Checker.
type Config struct {
	// CA signs the CRL; required with CRLFile.
	CA *pki.CA
	// CRLFile is where the PEM CRL is written; empty: no CRL.
	CRLFile string
	// ReloadCommand (argv, no shell) runs after each CRL rewrite, e.g.
	// ["systemctl", "reload", "mosquitto"]. Empty: none.
	ReloadCommand []string
	// ReloadTimeout bounds one ReloadCommand run (default 30 s).
	ReloadTimeout time.Duration
}

// Checker answers revocation questions from memory. Safe for concurrent use.
type Checker struct {
	st  Store
	cfg Config
	log *slog.Logger

	mu      sync.RWMutex
	current map[string]string // device ID → current certificate serial

	enrollMu  sync.Mutex // serializes enrollments and CRL writes; guards below
	crlNumber int64
	crlLen    int // revoked serials in the CRL last written (the list only grows)

	lookups, misses, crlWrites, crlFailures, reloadFailures prometheus.Counter
}

// New loads the current serials and, with a CRL file, writes the CRL
// (running the reload command if the list of revoked serials changed
// since the file was last written).
func New(ctx context.Context, st Store, cfg Config, reg prometheus.Registerer, logger *slog.Logger) (*Checker, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if cfg.CRLFile != "" && cfg.CA == nil {
		return nil, errors.New("revocation.New: a CA is required to sign the CRL")
	}
	if cfg.ReloadTimeout <= 0 {
		cfg.ReloadTimeout = 30 * time.Second
	}
	cur, err := st.ListDeviceCerts(ctx)
	if err != nil {
		return nil, fmt.Errorf("revocation.New: %w", err)
	}
	c := &Checker{st: st, cfg: cfg, log: logger, current: cur,
		lookups:        prometheus.NewCounter(prometheus.CounterOpts{Name: "gantry_cert_revocation_checks_total", Help: "Device certificate revocation checks (one per MQTT CONNECT)."}),
		misses:         prometheus.NewCounter(prometheus.CounterOpts{Name: "gantry_cert_revocation_cache_misses_total", Help: "Revocation checks of devices not in the cache (looked up in the store)."}),
		crlWrites:      prometheus.NewCounter(prometheus.CounterOpts{Name: "gantry_crl_writes_total", Help: "CRL files written."}),
		crlFailures:    prometheus.NewCounter(prometheus.CounterOpts{Name: "gantry_crl_write_failures_total", Help: "CRL files that could not be written."}),
		reloadFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "gantry_crl_reload_failures_total", Help: "Failed runs of the broker reload command after a CRL write."}),
	}
	if reg != nil {
		reg.MustRegister(c.lookups, c.misses, c.crlWrites, c.crlFailures, c.reloadFailures)
	}
	if cfg.CRLFile != "" {
		old, _ := os.ReadFile(cfg.CRLFile)
		revoked, err := st.ListRevokedCerts(ctx)
		if err != nil {
			return nil, fmt.Errorf("revocation.New: %w", err)
		}
		if err := c.writeCRL(revoked); err != nil {
			return nil, fmt.Errorf("revocation.New: %w", err)
		}
		if !sameSerials(old, revoked) {
			c.reload(ctx)
		}
	}
	return c, nil
}

// IsRevoked reports whether serial is not the current certificate of
// deviceID (revoked by re-enrollment, or the device is unknown or not
// enrolled). A store error counts as revoked: refusing is the safe side.
func (c *Checker) IsRevoked(deviceID, serial string) bool {
	c.lookups.Inc()
	c.mu.RLock()
	cur, ok := c.current[deviceID]
	c.mu.RUnlock()
	if ok {
		return cur != serial
	}
	c.misses.Inc()
	d, err := c.st.GetDevice(context.Background(), deviceID)
	return err != nil || d.CertSerial == "" || d.CertSerial != serial
}

// EnrollRepo wraps repo so that every SetDeviceCert also updates the
// cache and the CRL before enrollment hands out the new certificate. A
// CRL that cannot be written fails the enrollment (the old certificate is
// revoked in the store but an external broker would still accept it); a
// failing reload command is logged and counted only (the file is right
// and the next reload loads it).
func (c *Checker) EnrollRepo(repo fleet.EnrollRepo) fleet.EnrollRepo {
	return enrollRepo{EnrollRepo: repo, c: c}
}

type enrollRepo struct {
	fleet.EnrollRepo
	c *Checker
}

func (r enrollRepo) SetDeviceCert(ctx context.Context, id, serial, agentVersion string) error {
	c := r.c
	c.enrollMu.Lock()
	defer c.enrollMu.Unlock()
	c.mu.RLock()
	prev := c.current[id]
	c.mu.RUnlock()
	if err := r.EnrollRepo.SetDeviceCert(ctx, id, serial, agentVersion); err != nil {
		return err
	}
	c.mu.Lock()
	c.current[id] = serial
	c.mu.Unlock()
	if c.cfg.CRLFile == "" || prev == serial {
		return nil
	}
	revoked, err := c.st.ListRevokedCerts(ctx)
	if err == nil && len(revoked) == c.crlLen {
		return nil // a first enrollment revokes nothing
	}
	if err == nil {
		err = c.writeCRL(revoked)
	}
	if err != nil {
		c.crlFailures.Inc()
		return fmt.Errorf("certificate recorded but the CRL for the broker was not written (fix the cause and enroll again): %w", err)
	}
	c.reload(ctx)
	return nil
}

// writeCRL writes the CRL of the revoked serials; callers hold enrollMu
// or run before the Checker is shared.
func (c *Checker) writeCRL(revoked []store.RevokedCert) error {
	list := make([]pki.Revoked, len(revoked))
	for i, r := range revoked {
		list[i] = pki.Revoked{Serial: r.Serial, At: r.RevokedAt}
	}
	now := time.Now()
	c.crlNumber = max(c.crlNumber+1, now.UnixMilli()) // grows across restarts too
	p, err := c.cfg.CA.CRL(list, c.crlNumber, now)
	if err == nil {
		err = pki.WriteFileAtomic(c.cfg.CRLFile, p, 0o644) // public; the broker runs as another user
	}
	if err != nil {
		c.crlFailures.Inc()
		return err
	}
	c.crlLen = len(revoked)
	c.crlWrites.Inc()
	c.log.Info("CRL written", "file", c.cfg.CRLFile, "revoked", len(revoked))
	return nil
}

func (c *Checker) reload(ctx context.Context) {
	if len(c.cfg.ReloadCommand) == 0 {
		return
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.ReloadTimeout)
	defer cancel()
	out, err := exec.CommandContext(rctx, c.cfg.ReloadCommand[0], c.cfg.ReloadCommand[1:]...).CombinedOutput()
	if err != nil {
		c.reloadFailures.Inc()
		c.log.Error("broker reload after CRL write failed; the broker still accepts revoked certificates until it reloads", "command", c.cfg.ReloadCommand, "err", err, "output", string(out))
		return
	}
	c.log.Info("broker reloaded for the new CRL", "command", c.cfg.ReloadCommand)
}

// sameSerials reports whether the PEM CRL old lists exactly revoked.
func sameSerials(old []byte, revoked []store.RevokedCert) bool {
	b, _ := pem.Decode(old)
	if b == nil {
		return false
	}
	crl, err := x509.ParseRevocationList(b.Bytes)
	if err != nil || len(crl.RevokedCertificateEntries) != len(revoked) {
		return false
	}
	var have []string
	for _, e := range crl.RevokedCertificateEntries {
		have = append(have, e.SerialNumber.Text(16))
	}
	var want []string
	for _, r := range revoked {
		n, ok := new(big.Int).SetString(r.Serial, 16)
		if !ok {
			return false
		}
		want = append(want, n.Text(16))
	}
	slices.Sort(have)
	slices.Sort(want)
	return slices.Equal(have, want)
}
