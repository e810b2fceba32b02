package telemetry

import "errors"

// ErrClosed is returned by Run after Close, and is the reason a batch
// handed to Handle after Close is not stored.
var ErrClosed = errors.New("telemetry: ingest closed")

// ErrNotStored is wrapped by Ingest's error when a well-formed batch was
// not stored (store failure or ingest closed); the device should send it
// again.
var ErrNotStored = errors.New("telemetry batch not stored")
