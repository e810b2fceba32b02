package pki

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestTicketKeys: created 0600 on first use, the same keys after a reload,
// rotated only when the newest is a period old, at most TicketKeysKept
// kept (newest first), and the file reflects every rotation.
func TestTicketKeys(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	k, err := LoadOrCreateTicketKeys(dir, t0)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, TicketKeysFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v mode %v, want 0600", err, fi.Mode().Perm())
	}
	first := k.Keys()
	if len(first) != 1 || first[0] == ([32]byte{}) {
		t.Fatalf("keys %d (zero: %v), want one random key", len(first), first[0] == ([32]byte{}))
	}
	again, err := LoadOrCreateTicketKeys(dir, t0.Add(time.Hour))
	if err != nil || again.Keys()[0] != first[0] || !again.Newest().Equal(t0) {
		t.Fatalf("reload: %v, same key %v, created %v", err, again.Keys()[0] == first[0], again.Newest())
	}
	if ok, err := k.Rotate(t0.Add(time.Hour), DefaultTicketKeyPeriod); ok || err != nil {
		t.Fatalf("rotated a fresh key: %v %v", ok, err)
	}
	t1 := t0.Add(DefaultTicketKeyPeriod)
	if ok, err := k.Rotate(t1, DefaultTicketKeyPeriod); !ok || err != nil {
		t.Fatalf("rotate after a period: %v %v", ok, err)
	}
	ks := k.Keys()
	if len(ks) != 2 || ks[1] != first[0] || ks[0] == first[0] {
		t.Fatalf("after one rotation: %d keys, previous kept second: %v", len(ks), len(ks) == 2 && ks[1] == first[0])
	}
	if ok, _ := k.Rotate(t1.Add(DefaultTicketKeyPeriod), DefaultTicketKeyPeriod); !ok {
		t.Fatal("second rotation did not happen")
	}
	ks2 := k.Keys()
	if len(ks2) != TicketKeysKept || ks2[1] != ks[0] {
		t.Fatalf("after two rotations: %d keys, want %d with the previous newest second", len(ks2), TicketKeysKept)
	}
	re, err := LoadOrCreateTicketKeys(dir, t0)
	if err != nil || len(re.Keys()) != 2 || re.Keys()[0] != ks2[0] || re.Keys()[1] != ks2[1] {
		t.Fatalf("reload after rotations: %v", err)
	}
	if _, err := k.Rotate(t1, 0); err == nil {
		t.Error("zero period accepted")
	}
	if b, _ := os.ReadFile(filepath.Join(dir, TicketKeysFile)); !strings.Contains(string(b), "Created: ") {
		t.Errorf("file has no creation times:\n%s", b)
	}
}

func TestTicketKeysBadFile(t *testing.T) {
	for name, content := range map[string]string{
		"not PEM":    "hello",
		"wrong type": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
		"short key":  "-----BEGIN TLS SESSION TICKET KEY-----\nCreated: 2026-12-01T10:00:00Z\n\nAAAA\n-----END TLS SESSION TICKET KEY-----\n",
		"no created": "-----BEGIN TLS SESSION TICKET KEY-----\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n-----END TLS SESSION TICKET KEY-----\n",
	} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, TicketKeysFile), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := LoadOrCreateTicketKeys(dir, time.Now())
		if !errors.Is(err, ErrBadCA) || !strings.Contains(err.Error(), "delete the file") {
			t.Errorf("%s: %v, want ErrBadCA telling what to do", name, err)
		}
	}
	dir := t.TempDir()
	if _, err := LoadOrCreateTicketKeys(dir, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, TicketKeysFile), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateTicketKeys(dir, time.Now()); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("world-readable key file: %v, want a refusal", err)
	}
}
