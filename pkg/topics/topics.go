// Package topics builds and parses Gantry's MQTT topics, the contract
// between agent and control plane (SPEC §5):
//
//	gantry/v1/dev/{deviceID}/{telemetry|state|events|cmd|cmdack}
//
// Device IDs are 1..64 characters of [A-Za-z0-9-], so they can never
// contain MQTT wildcards or level separators.
package topics

import (
	"fmt"
	"strings"
)

// Kind is the last topic level.
type Kind string

// Topic kinds: devices publish telemetry, state, events and cmdack and
// subscribe to cmd.
const (
	Telemetry Kind = "telemetry"
	State     Kind = "state"
	Events    Kind = "events"
	Cmd       Kind = "cmd"
	CmdAck    Kind = "cmdack"
)

// Prefix is the common topic prefix.
const Prefix = "gantry/v1/dev/"

// MaxDeviceIDLen is the longest device ID.
const MaxDeviceIDLen = 64

// ValidDeviceID reports whether id can be used in a topic.
func ValidDeviceID(id string) bool { return CheckDeviceID(id) == nil }

// CheckDeviceID explains why id is not a valid device ID (nil if it is).
// The error wraps ErrBadDeviceID.
func CheckDeviceID(id string) error {
	if len(id) == 0 {
		return fmt.Errorf("%w: empty", ErrBadDeviceID)
	}
	if len(id) > MaxDeviceIDLen {
		return fmt.Errorf("%w: %d characters, at most %d allowed", ErrBadDeviceID, len(id), MaxDeviceIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("%w: %q has %q at byte %d; use only letters, digits and '-'", ErrBadDeviceID, id, c, i)
		}
	}
	return nil
}

func validKind(k Kind) bool {
	switch k {
	case Telemetry, State, Events, Cmd, CmdAck:
		return true
	}
	return false
}

// Kinds lists every topic kind.
func Kinds() []Kind { return []Kind{Telemetry, State, Events, Cmd, CmdAck} }

// FromDevice reports whether devices publish on topics of kind k
// (telemetry, state, events, cmdack); the only other kind, cmd, flows from
// the control plane to the device. Brokers' ACLs are built on it.
func (k Kind) FromDevice() bool {
	switch k {
	case Telemetry, State, Events, CmdAck:
		return true
	}
	return false
}

// Build is Device without the panic: it returns an error wrapping
// ErrBadDeviceID or ErrBadTopic for an invalid device ID or kind.
func Build(deviceID string, k Kind) (string, error) {
	if err := CheckDeviceID(deviceID); err != nil {
		return "", fmt.Errorf("topics.Build: %w", err)
	}
	if !validKind(k) {
		return "", fmt.Errorf("topics.Build: %w: unknown kind %q (telemetry, state, events, cmd or cmdack)", ErrBadTopic, k)
	}
	return Prefix + deviceID + "/" + string(k), nil
}

// Device returns the topic of kind k for deviceID. It panics on an
// invalid device ID or kind (programming errors; IDs are validated at
// enrollment).
func Device(deviceID string, k Kind) string {
	if !ValidDeviceID(deviceID) || !validKind(k) {
		panic(fmt.Sprintf("topics.Device(%q, %q): invalid device ID or kind", deviceID, k))
	}
	return Prefix + deviceID + "/" + string(k)
}

// Wildcard is the filter for kind k of every device (control plane side).
func Wildcard(k Kind) string { return Prefix + "+/" + string(k) }

// Parse splits a device topic into device ID and kind. It is strict:
// exactly five levels, the prefix gantry/v1/dev/, a valid device ID (so no
// wildcards) and a known kind. Errors wrap ErrBadTopic.
func Parse(topic string) (deviceID string, k Kind, err error) {
	rest, ok := strings.CutPrefix(topic, Prefix)
	if !ok {
		return "", "", fmt.Errorf("%w: %q does not start with %s", ErrBadTopic, topic, Prefix)
	}
	id, kind, ok := strings.Cut(rest, "/")
	if !ok {
		return "", "", fmt.Errorf("%w: %q has no kind level", ErrBadTopic, topic)
	}
	if strings.Contains(kind, "/") {
		return "", "", fmt.Errorf("%w: %q has levels after the kind (want gantry/v1/dev/{deviceID}/{kind})", ErrBadTopic, topic)
	}
	if err := CheckDeviceID(id); err != nil {
		return "", "", fmt.Errorf("%w: %q: %w", ErrBadTopic, topic, err)
	}
	if !validKind(Kind(kind)) {
		return "", "", fmt.Errorf("%w: %q: unknown kind %q (telemetry, state, events, cmd or cmdack)", ErrBadTopic, topic, kind)
	}
	return id, Kind(kind), nil
}
