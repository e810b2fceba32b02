package revocation_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gantry-iot/gantry/controlplane/authz"
	"github.com/gantry-iot/gantry/controlplane/pki"
	"github.com/gantry-iot/gantry/controlplane/revocation"
	"github.com/gantry-iot/gantry/controlplane/store"
	"github.com/gantry-iot/gantry/controlplane/store/storetest"
)

// countingStore counts the store lookups of revocation checks.
type countingStore struct {
	store.Store
	gets atomic.Int64
}

func (s *countingStore) GetDevice(ctx context.Context, id string) (store.EdgeDevice, error) {
	s.gets.Add(1)
	return s.Store.GetDevice(ctx, id)
}

func newDevice(t *testing.T, st store.Store, serial string) string {
	t.Helper()
	ctx := context.Background()
	ten, _, err := st.CreateTenantWithAdmin(ctx, store.Tenant{Name: "t-" + serial, Kind: authz.KindOperator, TenantRoles: []authz.TenantRole{authz.OperatorInternalService}}, store.User{Email: serial + "@x.example", DisplayName: "A", PasswordHash: "h"})
	if err != nil {
		t.Fatal(err)
	}
	d, err := st.CreateDevice(ctx, store.EdgeDevice{TenantID: ten.ID, Name: "d", SerialNumber: serial})
	if err != nil {
		t.Fatal(err)
	}
	return d.ID
}

func crlSerials(t *testing.T, path string, ca *pki.CA) []string {
	t.Helper()
	p, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(p)
	if b == nil {
		t.Fatalf("%s: no PEM", path)
	}
	crl, err := x509.ParseRevocationList(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(ca.Cert); err != nil {
		t.Fatalf("CRL signature: %v", err)
	}
	var out []string
	for _, e := range crl.RevokedCertificateEntries {
		out = append(out, e.SerialNumber.Text(16))
	}
	return out
}

// TestCheckerRevokesAtOnce: checks of enrolled devices are answered from
// memory; re-enrollment through the EnrollRepo refuses the old serial
// immediately, rewrites the CRL (signed by the CA, listing the old serial)
// and runs the reload command; a first enrollment does not reload; a
// restarted Checker answers the same from the store.
func TestCheckerRevokesAtOnce(t *testing.T) {
	ctx := context.Background()
	base := storetest.SQLite(t)
	st := &countingStore{Store: base}
	ca, err := pki.NewCA("test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	crl := filepath.Join(dir, "crl.pem")
	reloads := filepath.Join(dir, "reloads")
	cfg := revocation.Config{CA: ca, CRLFile: crl, ReloadCommand: []string{"sh", "-c", "echo reload >> " + reloads}}
	a := newDevice(t, base, "a")
	if err := base.SetDeviceCert(ctx, a, "a1", ""); err != nil { // enrolled before start
		t.Fatal(err)
	}
	c, err := revocation.New(ctx, st, cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	countReloads := func() int {
		b, _ := os.ReadFile(reloads)
		return strings.Count(string(b), "reload")
	}
	if got := crlSerials(t, crl, ca); len(got) != 0 {
		t.Errorf("CRL at start lists %v, want none", got)
	}
	startReloads := countReloads()
	if c.IsRevoked(a, "a1") || !c.IsRevoked(a, "other") {
		t.Error("a1 must be valid and other serials revoked")
	}
	if n := st.gets.Load(); n != 0 {
		t.Errorf("%d store lookups for a cached device, want 0", n)
	}
	// A device unknown to the control plane: looked up, refused.
	if !c.IsRevoked("ghost", "x") || st.gets.Load() != 1 {
		t.Errorf("unknown device: want revoked after one lookup (lookups %d)", st.gets.Load())
	}
	repo := c.EnrollRepo(base)
	b := newDevice(t, base, "b")
	if err := repo.SetDeviceCert(ctx, b, "b1", "1.0"); err != nil {
		t.Fatal(err)
	}
	if c.IsRevoked(b, "b1") || countReloads() != startReloads {
		t.Errorf("first enrollment: revoked %v, reloads %d (want valid and no reload)", c.IsRevoked(b, "b1"), countReloads()-startReloads)
	}
	// Re-enrollment: the old serial is refused at once.
	if err := repo.SetDeviceCert(ctx, a, "a2", "1.1"); err != nil {
		t.Fatal(err)
	}
	if !c.IsRevoked(a, "a1") || c.IsRevoked(a, "a2") {
		t.Error("after re-enrollment a1 must be revoked and a2 valid")
	}
	if got := crlSerials(t, crl, ca); len(got) != 1 || got[0] != "a1" {
		t.Errorf("CRL lists %v, want [a1]", got)
	}
	if n := countReloads() - startReloads; n != 1 {
		t.Errorf("reload ran %d times after a revocation, want 1", n)
	}
	// A restart loads the same state; the CRL is unchanged, so no reload.
	before := countReloads()
	c2, err := revocation.New(ctx, base, cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !c2.IsRevoked(a, "a1") || c2.IsRevoked(a, "a2") || c2.IsRevoked(b, "b1") {
		t.Error("restarted checker disagrees")
	}
	if countReloads() != before {
		t.Error("restart with an unchanged CRL ran the reload command")
	}
	// A CRL file behind the store (e.g. a crash between the store commit
	// and the file write) is rewritten and reloaded at start.
	empty, err := ca.CRL(nil, 1, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(crl, empty, 0o644); err != nil {
		t.Fatal(err)
	}
	before = countReloads()
	if _, err := revocation.New(ctx, base, cfg, nil, nil); err != nil {
		t.Fatal(err)
	}
	if got := crlSerials(t, crl, ca); len(got) != 1 || got[0] != "a1" || countReloads() != before+1 {
		t.Errorf("stale CRL at start: now lists %v after %d reloads, want [a1] after 1", got, countReloads()-before)
	}
	// A CRL that cannot be written fails the start, and a revocation.
	bad := cfg
	bad.CRLFile = filepath.Join(dir, "gone", "crl.pem")
	if _, err := revocation.New(ctx, base, bad, nil, nil); err == nil {
		t.Error("New with an unwritable CRL path succeeded")
	}
	if err := os.Mkdir(filepath.Join(dir, "gone"), 0o700); err != nil {
		t.Fatal(err)
	}
	c3, err := revocation.New(ctx, base, bad, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "gone")); err != nil {
		t.Fatal(err)
	}
	if err := c3.EnrollRepo(base).SetDeviceCert(ctx, a, "a3", ""); err == nil || !strings.Contains(err.Error(), "CRL") {
		t.Errorf("re-enrollment with an unwritable CRL: %v, want an error about the CRL", err)
	}
}

// BenchmarkIsRevoked compares a CONNECT's revocation check from the cache
// with the store lookup it replaces (SQLite), in one run.
func BenchmarkIsRevoked(b *testing.B) {
	ctx := context.Background()
	st := storetest.SQLite(b)
	ten, _, err := st.CreateTenantWithAdmin(ctx, store.Tenant{Name: "bench", Kind: authz.KindOperator, TenantRoles: []authz.TenantRole{authz.OperatorInternalService}}, store.User{Email: "b@x.example", DisplayName: "B", PasswordHash: "h"})
	if err != nil {
		b.Fatal(err)
	}
	var ids []string
	for i := range 1000 {
		d, err := st.CreateDevice(ctx, store.EdgeDevice{TenantID: ten.ID, Name: "d", SerialNumber: string(rune('a'+i%26)) + time.Now().Format("150405.000000000")})
		if err != nil {
			b.Fatal(err)
		}
		if err := st.SetDeviceCert(ctx, d.ID, "s"+d.ID, ""); err != nil {
			b.Fatal(err)
		}
		ids = append(ids, d.ID)
	}
	c, err := revocation.New(ctx, st, revocation.Config{}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("store", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			id := ids[i%len(ids)]
			d, err := st.GetDevice(ctx, id)
			if err != nil || d.CertSerial != "s"+id {
				b.Fatal("lookup failed")
			}
		}
	})
	b.Run("cache", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			id := ids[i%len(ids)]
			if c.IsRevoked(id, "s"+id) {
				b.Fatal("valid certificate refused")
			}
		}
	})
}
