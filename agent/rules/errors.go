package rules

import "errors"

var (
	// ErrCorruptState means the state file exists but cannot be read as a
	// running-hours state: New refuses to start (unless
	// Options.ResetCorruptState) rather than silently losing the counters.
	// Move the file aside to start at zero.
	ErrCorruptState = errors.New("rules: corrupt state file")

	// ErrClosed is returned by Save and Close on a closed Engine.
	ErrClosed = errors.New("rules: engine closed")

	// ErrInvalidPoints means New was given data points whose rules fields
	// do not validate; the error also carries the machinemodel.Problems.
	ErrInvalidPoints = errors.New("rules: invalid data points")
)
