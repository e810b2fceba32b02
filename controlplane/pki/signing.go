package pki

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// LoadOrCreateSigningKey reads the Ed25519 command-signing key from
// dir/command-signing.pem, creating it (mode 0600) on first use. The
// control plane signs every command to a device with it; devices receive
// the public key at enrollment.
func LoadOrCreateSigningKey(dir string) (ed25519.PrivateKey, error) {
	p := filepath.Join(dir, "command-signing.pem")
	b, err := os.ReadFile(p)
	if err == nil {
		blk, _ := pem.Decode(b)
		if blk == nil || blk.Type != "ED25519 PRIVATE KEY" || len(blk.Bytes) != ed25519.SeedSize {
			return nil, fmt.Errorf("pki.LoadOrCreateSigningKey: %w: %s is not an Ed25519 seed in PEM; move it away to create a new key (devices must then re-enroll)", ErrBadCA, p)
		}
		return ed25519.NewKeyFromSeed(blk.Bytes), nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("pki.LoadOrCreateSigningKey: %w", err)
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki.LoadOrCreateSigningKey: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pki.LoadOrCreateSigningKey: %w", err)
	}
	if err := writeFileNew(p, pem.EncodeToMemory(&pem.Block{Type: "ED25519 PRIVATE KEY", Bytes: key.Seed()})); err != nil {
		return nil, fmt.Errorf("pki.LoadOrCreateSigningKey: %w", err)
	}
	return key, nil
}
