package telemetry

import "errors"

// ErrClosed is returned by Run after Close, and is the reason a batch
// handed to Handle after Close is not stored.
var ErrClosed = errors.New("telemetry: ingest closed")
