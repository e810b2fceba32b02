package fleet

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/gantry-iot/gantry/controlplane/errkind"
	"github.com/gantry-iot/gantry/controlplane/store"
)

// Signer issues device certificates from certificate requests.
type Signer interface {
	SignCSR(csrDER []byte, deviceID string, ttl time.Duration) (*x509.Certificate, error)
}

// EnrollRepo is the persistence enrollment needs.
type EnrollRepo interface {
	UseEnrollmentToken(ctx context.Context, tokenHash []byte, now time.Time) (store.EnrollmentToken, error)
	SetDeviceCert(ctx context.Context, id, certSerial, agentVersion string) error
	GetDevice(ctx context.Context, id string) (store.EdgeDevice, error)
}

// Enrolled is the outcome of an enrollment.
type Enrolled struct {
	DeviceID string
	Cert     *x509.Certificate
}

// DeviceCertTTL is the validity of device certificates. Devices re-enroll
// (or, later, renew) before it ends.
const DeviceCertTTL = 2 * 365 * 24 * time.Hour

// Enroll redeems a one-time enrollment token for a device certificate.
// The previous certificate of the device stops working at once (the broker
// accepts only a device's current certificate).
func Enroll(ctx context.Context, repo EnrollRepo, signer Signer, token string, csrDER []byte, agentVersion string, now time.Time, serialOf func(*x509.Certificate) string) (Enrolled, error) {
	if !strings.HasPrefix(token, "gantry-enroll-") || len(token) > 100 {
		return Enrolled{}, errkind.Invalidf("token", "not an enrollment token; copy it from 'gantryctl devices enroll-token' or the portal")
	}
	if len(csrDER) == 0 || len(csrDER) > 16<<10 {
		return Enrolled{}, errkind.Invalidf("csr_der", "a DER certificate request of at most 16 KiB is required")
	}
	if len(agentVersion) > 64 {
		return Enrolled{}, errkind.Invalidf("agent_version", "at most 64 characters")
	}
	h := sha256.Sum256([]byte(token))
	t, err := repo.UseEnrollmentToken(ctx, h[:], now)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return Enrolled{}, errkind.New(errkind.Unauthenticated, "token", "unknown enrollment token; create a new one")
	case errors.Is(err, store.ErrUsed):
		return Enrolled{}, errkind.New(errkind.Precondition, "token", "this enrollment token was already used; create a new one for each enrollment")
	case errors.Is(err, store.ErrExpired):
		return Enrolled{}, errkind.New(errkind.Precondition, "token", "this enrollment token has expired; create a new one")
	case err != nil:
		return Enrolled{}, err
	}
	cert, err := signer.SignCSR(csrDER, t.DeviceID, DeviceCertTTL)
	if err != nil {
		return Enrolled{}, errkind.Invalidf("csr_der", "%v", err)
	}
	if err := repo.SetDeviceCert(ctx, t.DeviceID, serialOf(cert), agentVersion); err != nil {
		return Enrolled{}, fmt.Errorf("record certificate: %w", err)
	}
	return Enrolled{DeviceID: t.DeviceID, Cert: cert}, nil
}
