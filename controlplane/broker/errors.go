package broker

import "errors"

// Sentinel errors.
var (
	// ErrConfig: the Config cannot work (missing certificate or client CA
	// pool, listen address taken, out-of-range limits).
	ErrConfig = errors.New("invalid broker configuration")
	// ErrTopic: an inline Publish or Subscribe got an invalid topic name,
	// filter or QoS.
	ErrTopic = errors.New("invalid MQTT topic")
	// ErrClosed: the broker has been closed.
	ErrClosed = errors.New("broker closed")
)
