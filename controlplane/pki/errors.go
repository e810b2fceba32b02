package pki

import "errors"

// Sentinel errors; every error from this package that is caused by bad
// input wraps one of them.
var (
	// ErrBadCSR: a certificate request was rejected (not DER PKCS#10, bad
	// signature, weak or unsupported key) or the device ID is invalid.
	ErrBadCSR = errors.New("bad certificate request")
	// ErrBadCA: PEM data or files do not hold a usable CA certificate and
	// matching private key (or a usable command-signing key).
	ErrBadCA = errors.New("bad CA")
)
