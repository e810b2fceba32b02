package topics

import (
	"errors"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		topic string
		id    string
		kind  Kind
		ok    bool
	}{
		{"gantry/v1/dev/d-1/telemetry", "d-1", Telemetry, true},
		{"gantry/v1/dev/ABC/cmdack", "ABC", CmdAck, true},
		{"gantry/v1/dev/+/cmd", "", "", false},
		{"gantry/v1/dev/#", "", "", false},
		{"gantry/v1/dev/d1/cmd/extra", "", "", false},
		{"gantry/v1/dev/d1/bogus", "", "", false},
		{"gantry/v2/dev/d1/cmd", "", "", false},
		{"gantry/v1/dev//cmd", "", "", false},
		{"gantry/v1/dev/" + strings.Repeat("a", 65) + "/cmd", "", "", false},
	} {
		id, k, err := Parse(tc.topic)
		if (err == nil) != tc.ok || id != tc.id || k != tc.kind {
			t.Errorf("Parse(%q) = %q, %q, %v", tc.topic, id, k, err)
		}
		if err != nil && !errors.Is(err, ErrBadTopic) {
			t.Errorf("Parse(%q) error does not wrap ErrBadTopic", tc.topic)
		}
	}
	if got := Device("d1", Cmd); got != "gantry/v1/dev/d1/cmd" {
		t.Errorf("Device = %q", got)
	}
}

func FuzzParse(f *testing.F) {
	f.Add("gantry/v1/dev/d1/telemetry")
	f.Add("gantry/v1/dev/+/#")
	f.Fuzz(func(t *testing.T, topic string) {
		id, k, err := Parse(topic)
		if err != nil {
			return
		}
		if Device(id, k) != topic {
			t.Fatalf("round trip %q → %q", topic, Device(id, k))
		}
		if strings.ContainsAny(id, "+#/") {
			t.Fatalf("wildcard in device ID %q", id)
		}
	})
}
