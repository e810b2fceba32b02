package pki

import (
	"bytes"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// TicketKeysFile is the name of the session-ticket key file in the PKI
// directory.
const TicketKeysFile = "session-ticket-keys.pem"

// TicketKeysKept is how many ticket keys are kept: the newest encrypts new
// tickets, the previous one still decrypts tickets issued before the last
// rotation.
const TicketKeysKept = 2

// DefaultTicketKeyPeriod is how long a ticket key encrypts new tickets
// before it is replaced; with TicketKeysKept keys a ticket stays usable for
// up to twice this (Go's TLS server caps a ticket at 7 days anyway).
const DefaultTicketKeyPeriod = 24 * time.Hour

const ticketKeyPEMType = "TLS SESSION TICKET KEY"

// TicketKeys are the TLS session-ticket keys of the control plane's MQTT
// listener, kept in a 0600 file so that a restarted control plane can
// resume the TLS sessions of reconnecting devices instead of doing a full
// mTLS handshake with each. A resumed session carries the device's
// verified certificate, so the broker's revocation check and identity still
// apply. The keys are secrets: they are never logged. Safe for concurrent
// use.
type TicketKeys struct {
	path string
	mu   sync.Mutex
	keys []ticketKey // newest first
}

type ticketKey struct {
	created time.Time
	key     [32]byte
}

// LoadOrCreateTicketKeys reads dir/session-ticket-keys.pem, creating dir
// (0700) and the file (0600) with one new key on first use.
func LoadOrCreateTicketKeys(dir string, now time.Time) (*TicketKeys, error) {
	t := &TicketKeys{path: filepath.Join(dir, TicketKeysFile)}
	b, err := os.ReadFile(t.path)
	switch {
	case err == nil:
		if t.keys, err = parseTicketKeys(b); err != nil {
			return nil, fmt.Errorf("pki.LoadOrCreateTicketKeys: %w: %s: %w (delete the file to start with a new key; devices then do one full TLS handshake)", ErrBadCA, t.path, err)
		}
		if fi, err := os.Stat(t.path); err == nil && fi.Mode().Perm()&0o077 != 0 {
			return nil, fmt.Errorf("pki.LoadOrCreateTicketKeys: %w: %s has mode %v; it holds secrets (chmod 600 it)", ErrBadCA, t.path, fi.Mode().Perm())
		}
		return t, nil
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("pki.LoadOrCreateTicketKeys: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pki.LoadOrCreateTicketKeys: %w", err)
	}
	k, err := newTicketKey(now)
	if err != nil {
		return nil, err
	}
	t.keys = []ticketKey{k}
	if err := t.save(); err != nil {
		return nil, fmt.Errorf("pki.LoadOrCreateTicketKeys: %w", err)
	}
	return t, nil
}

func newTicketKey(now time.Time) (ticketKey, error) {
	k := ticketKey{created: now.UTC().Truncate(time.Second)}
	if _, err := rand.Read(k.key[:]); err != nil {
		return k, fmt.Errorf("pki: ticket key: %w", err)
	}
	return k, nil
}

func parseTicketKeys(b []byte) ([]ticketKey, error) {
	var keys []ticketKey
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != ticketKeyPEMType || len(blk.Bytes) != 32 {
			return nil, fmt.Errorf("block %d is not a 32-byte %q", len(keys)+1, ticketKeyPEMType)
		}
		created, err := time.Parse(time.RFC3339, blk.Headers["Created"])
		if err != nil {
			return nil, fmt.Errorf("block %d: Created header: %w", len(keys)+1, err)
		}
		k := ticketKey{created: created}
		copy(k.key[:], blk.Bytes)
		keys = append(keys, k)
	}
	if len(bytes.TrimSpace(b)) != 0 {
		return nil, errors.New("trailing data that is not PEM")
	}
	if len(keys) == 0 {
		return nil, errors.New("no key")
	}
	return keys, nil
}

// save writes the keys to a temporary file (0600), syncs it and renames
// it over the key file. Called with mu held (or before t is shared).
func (t *TicketKeys) save() error {
	var buf bytes.Buffer
	for _, k := range t.keys {
		_ = pem.Encode(&buf, &pem.Block{Type: ticketKeyPEMType, Headers: map[string]string{"Created": k.created.Format(time.RFC3339)}, Bytes: k.key[:]})
	}
	tmp := t.path + ".tmp"
	_ = os.Remove(tmp)
	if err := writeFileNew(tmp, buf.Bytes()); err != nil {
		return err
	}
	if err := os.Rename(tmp, t.path); err != nil {
		os.Remove(tmp)
		return err
	}
	if d, err := os.Open(filepath.Dir(t.path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// Keys returns the keys, newest (the one that encrypts) first, for
// tls.Config.SetSessionTicketKeys.
func (t *TicketKeys) Keys() [][32]byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([][32]byte, len(t.keys))
	for i, k := range t.keys {
		out[i] = k.key
	}
	return out
}

// Newest is when the key that encrypts new tickets was created.
func (t *TicketKeys) Newest() time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.keys[0].created
}

// Rotate adds a new key (and drops the oldest beyond TicketKeysKept) if
// the newest one is at least period old, and saves the file. It reports
// whether it rotated; on error the keys are unchanged.
func (t *TicketKeys) Rotate(now time.Time, period time.Duration) (bool, error) {
	if period <= 0 {
		return false, fmt.Errorf("pki.TicketKeys.Rotate: period %v: want a positive duration", period)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if now.Sub(t.keys[0].created) < period {
		return false, nil
	}
	k, err := newTicketKey(now)
	if err != nil {
		return false, err
	}
	old := t.keys
	t.keys = append([]ticketKey{k}, old[:min(len(old), TicketKeysKept-1)]...)
	if err := t.save(); err != nil {
		t.keys = old
		return false, fmt.Errorf("pki.TicketKeys.Rotate: %w", err)
	}
	return true, nil
}
