// Package command signs and verifies control-plane commands to edge
// devices. The control plane signs the serialized gantryv1.Command with
// Ed25519; the agent accepts a command only if the signature verifies with
// the key it received at enrollment, the command names this device, it is
// within its validity window, and its nonce was never seen before.
package command

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
)

// Rejection reasons; Verify wraps exactly one of them.
var (
	ErrMalformed    = errors.New("malformed command")
	ErrUnsigned     = errors.New("command is not signed")
	ErrBadSignature = errors.New("command signature does not verify")
	ErrWrongDevice  = errors.New("command is for another device")
	ErrExpired      = errors.New("command has expired")
	ErrNotYetValid  = errors.New("command is issued in the future")
	ErrTooLong      = errors.New("command validity window is too long")
	ErrReplay       = errors.New("command was already received (replay)")
)

// Limits.
const (
	MaxTTL     = 10 * time.Minute // longest accepted validity window
	ClockSkew  = 30 * time.Second // tolerated clock difference
	MaxPayload = 64 << 10
)

// New returns an unsigned command for deviceID valid for ttl from now.
func New(deviceID string, ttl time.Duration, now time.Time) *gantryv1.Command {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return &gantryv1.Command{Nonce: hex.EncodeToString(b), DeviceId: deviceID, IssuedAt: timestamppb.New(now), ExpiresAt: timestamppb.New(now.Add(ttl))}
}

// Sign serializes and signs c, returning the MQTT payload.
func Sign(key ed25519.PrivateKey, c *gantryv1.Command) ([]byte, error) {
	body, err := proto.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("command.Sign: %w", err)
	}
	return proto.Marshal(&gantryv1.SignedCommand{Command: body, Signature: ed25519.Sign(key, body)})
}

// Verifier checks commands for one device. Safe for concurrent use.
type Verifier struct {
	pub      ed25519.PublicKey
	deviceID string
	now      func() time.Time
	path     string // nonce log, "" for memory only

	mu   sync.Mutex
	seen map[string]time.Time // nonce → expiry
}

// NewVerifier returns a verifier. When nonceFile is set, seen nonces are
// kept there (0600) so replays are refused across agent restarts.
func NewVerifier(pub ed25519.PublicKey, deviceID, nonceFile string, now func() time.Time) (*Verifier, error) {
	if len(pub) != ed25519.PublicKeySize {
		return nil, errors.New("command.NewVerifier: no valid Ed25519 public key (enroll the device again)")
	}
	if now == nil {
		now = time.Now
	}
	v := &Verifier{pub: pub, deviceID: deviceID, now: now, path: nonceFile, seen: map[string]time.Time{}}
	if nonceFile != "" {
		b, err := os.ReadFile(nonceFile)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return nil, fmt.Errorf("command: nonce log: %w", err)
		default:
			if err := json.Unmarshal(b, &v.seen); err != nil {
				// A corrupt log must not open a replay window: refuse to start.
				return nil, fmt.Errorf("command: nonce log %s is corrupt (%v); delete it only if no command can still be valid (wait %v)", nonceFile, err, MaxTTL)
			}
		}
	}
	return v, nil
}

// Verify checks a payload and returns the command it carries.
func (v *Verifier) Verify(payload []byte) (*gantryv1.Command, error) {
	if len(payload) > MaxPayload {
		return nil, fmt.Errorf("%w: %d bytes", ErrMalformed, len(payload))
	}
	var sc gantryv1.SignedCommand
	if err := proto.Unmarshal(payload, &sc); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if len(sc.Signature) == 0 {
		return nil, ErrUnsigned
	}
	if !ed25519.Verify(v.pub, sc.Command, sc.Signature) {
		return nil, ErrBadSignature
	}
	var c gantryv1.Command
	if err := proto.Unmarshal(sc.Command, &c); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if c.Nonce == "" || c.IssuedAt == nil || c.ExpiresAt == nil || c.Body == nil {
		return nil, fmt.Errorf("%w: nonce, issued_at, expires_at and a body are required", ErrMalformed)
	}
	if c.DeviceId != v.deviceID {
		return nil, fmt.Errorf("%w (%q)", ErrWrongDevice, c.DeviceId)
	}
	now := v.now()
	issued, expires := c.IssuedAt.AsTime(), c.ExpiresAt.AsTime()
	switch {
	case expires.Sub(issued) > MaxTTL:
		return nil, ErrTooLong
	case issued.After(now.Add(ClockSkew)):
		return nil, ErrNotYetValid
	case !now.Before(expires.Add(ClockSkew)):
		return nil, ErrExpired
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	for n, exp := range v.seen {
		if now.After(exp.Add(2 * ClockSkew)) {
			delete(v.seen, n)
		}
	}
	if _, dup := v.seen[c.Nonce]; dup {
		return nil, ErrReplay
	}
	v.seen[c.Nonce] = expires
	if err := v.persist(); err != nil {
		delete(v.seen, c.Nonce)
		return nil, fmt.Errorf("command: cannot record nonce, refusing: %w", err)
	}
	return &c, nil
}

// persist writes the nonce log atomically; callers hold v.mu.
func (v *Verifier) persist() error {
	if v.path == "" {
		return nil
	}
	b, err := json.Marshal(v.seen)
	if err != nil {
		return err
	}
	tmp := filepath.Join(filepath.Dir(v.path), ".nonces.tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, v.path)
}
