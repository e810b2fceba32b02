package topics

import "errors"

// Sentinel errors. Every error returned by this package wraps one of them.
var (
	// ErrBadTopic: the topic is not gantry/v1/dev/{deviceID}/{kind}.
	ErrBadTopic = errors.New("not a gantry device topic")
	// ErrBadDeviceID: a device ID is empty, longer than 64 characters or
	// holds a character outside [A-Za-z0-9-].
	ErrBadDeviceID = errors.New("invalid device ID")
)
