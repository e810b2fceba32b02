package queue

import "errors"

// Sentinel errors. Operations wrap them with %w; test with errors.Is.
var (
	// ErrClosed is returned by operations on a closed Queue.
	ErrClosed = errors.New("queue closed")
	// ErrTooLarge is returned by Append for a payload larger than
	// MaxRecord or than one segment can hold; raise Options.SegmentBytes
	// or split the payload.
	ErrTooLarge = errors.New("record larger than the queue allows")
	// ErrBadOptions is returned by Open for inconsistent Options.
	ErrBadOptions = errors.New("invalid queue options")
	// ErrBroken is returned by Append after a write or fsync failed in a
	// way that left the state on disk unknown (for example the disk went
	// read-only). Close and re-Open the queue (restart the agent): Open
	// rescans and repairs the log.
	ErrBroken = errors.New("queue unusable after a failed write; reopen it")
	// ErrCorrupt marks a record that failed its checks (length, CRC-32C,
	// sequence) while decoding.
	ErrCorrupt = errors.New("corrupt record")
)
