// Package topics builds and parses Gantry's MQTT topics, the contract
// between agent and control plane (SPEC §5):
//
//	gantry/v1/dev/{deviceID}/{telemetry|state|events|cmd|cmdack}
//
// Device IDs are 1..64 characters of [A-Za-z0-9-], so they can never
// contain MQTT wildcards or level separators.
package topics

import (
	"errors"
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

// ErrBadTopic is wrapped by every parse error.
var ErrBadTopic = errors.New("not a gantry device topic")

// ValidDeviceID reports whether id can be used in a topic.
func ValidDeviceID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}

func validKind(k Kind) bool {
	switch k {
	case Telemetry, State, Events, Cmd, CmdAck:
		return true
	}
	return false
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

// Parse splits a device topic into device ID and kind.
func Parse(topic string) (deviceID string, k Kind, err error) {
	rest, ok := strings.CutPrefix(topic, Prefix)
	if !ok {
		return "", "", fmt.Errorf("%w: %q does not start with %s", ErrBadTopic, topic, Prefix)
	}
	id, kind, ok := strings.Cut(rest, "/")
	if !ok {
		return "", "", fmt.Errorf("%w: %q has no kind level", ErrBadTopic, topic)
	}
	if !ValidDeviceID(id) {
		return "", "", fmt.Errorf("%w: %q has an invalid device ID", ErrBadTopic, topic)
	}
	if !validKind(Kind(kind)) {
		return "", "", fmt.Errorf("%w: %q: unknown kind %q (telemetry, state, events, cmd or cmdack)", ErrBadTopic, topic, kind)
	}
	return id, Kind(kind), nil
}
