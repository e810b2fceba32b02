package topics

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParse(t *testing.T) {
	type parsed struct {
		ID   string
		Kind Kind
	}
	for _, tc := range []struct {
		name    string
		topic   string
		want    parsed
		wantErr error
		errHas  string
	}{
		{name: "telemetry", topic: "gantry/v1/dev/d-1/telemetry", want: parsed{"d-1", Telemetry}},
		{name: "cmdack", topic: "gantry/v1/dev/ABC/cmdack", want: parsed{"ABC", CmdAck}},
		{name: "state", topic: "gantry/v1/dev/x/state", want: parsed{"x", State}},
		{name: "events", topic: "gantry/v1/dev/0/events", want: parsed{"0", Events}},
		{name: "cmd", topic: "gantry/v1/dev/" + strings.Repeat("a", 64) + "/cmd", want: parsed{strings.Repeat("a", 64), Cmd}},
		{name: "plus wildcard", topic: "gantry/v1/dev/+/cmd", wantErr: ErrBadDeviceID, errHas: "'+'"},
		{name: "hash wildcard", topic: "gantry/v1/dev/#", wantErr: ErrBadTopic, errHas: "no kind level"},
		{name: "extra level", topic: "gantry/v1/dev/d1/cmd/extra", wantErr: ErrBadTopic, errHas: "levels after the kind"},
		{name: "unknown kind", topic: "gantry/v1/dev/d1/bogus", wantErr: ErrBadTopic, errHas: `unknown kind "bogus"`},
		{name: "wildcard kind", topic: "gantry/v1/dev/d1/#", wantErr: ErrBadTopic, errHas: "unknown kind"},
		{name: "other version", topic: "gantry/v2/dev/d1/cmd", wantErr: ErrBadTopic, errHas: "does not start with"},
		{name: "leading slash", topic: "/gantry/v1/dev/d1/cmd", wantErr: ErrBadTopic, errHas: "does not start with"},
		{name: "empty ID", topic: "gantry/v1/dev//cmd", wantErr: ErrBadDeviceID, errHas: "empty"},
		{name: "long ID", topic: "gantry/v1/dev/" + strings.Repeat("a", 65) + "/cmd", wantErr: ErrBadDeviceID, errHas: "at most 64"},
		{name: "underscore", topic: "gantry/v1/dev/a_b/cmd", wantErr: ErrBadDeviceID, errHas: "letters, digits"},
		{name: "non-ASCII", topic: "gantry/v1/dev/gerät/cmd", wantErr: ErrBadDeviceID},
		{name: "empty", topic: "", wantErr: ErrBadTopic},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, k, err := Parse(tc.topic)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || !errors.Is(err, ErrBadTopic) {
					t.Fatalf("Parse(%q) error = %v, want one wrapping %v and ErrBadTopic", tc.topic, err, tc.wantErr)
				}
				if !strings.Contains(err.Error(), tc.errHas) {
					t.Errorf("Parse(%q) error %q does not say %q", tc.topic, err, tc.errHas)
				}
				if id != "" || k != "" {
					t.Errorf("Parse(%q) returned %q, %q with an error", tc.topic, id, k)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tc.topic, err)
			}
			if diff := cmp.Diff(tc.want, parsed{id, k}); diff != "" {
				t.Errorf("Parse(%q) (-want +got):\n%s", tc.topic, diff)
			}
		})
	}
}

func TestBuild(t *testing.T) {
	for _, k := range Kinds() {
		t.Run(string(k), func(t *testing.T) {
			got, err := Build("dev-1", k)
			if err != nil {
				t.Fatal(err)
			}
			if want := "gantry/v1/dev/dev-1/" + string(k); got != want {
				t.Errorf("Build = %q, want %q", got, want)
			}
			if got != Device("dev-1", k) {
				t.Errorf("Device and Build disagree")
			}
		})
	}
	if _, err := Build("a/b", Cmd); !errors.Is(err, ErrBadDeviceID) {
		t.Errorf("Build with a slash in the ID: %v, want ErrBadDeviceID", err)
	}
	if _, err := Build("a", "x"); !errors.Is(err, ErrBadTopic) {
		t.Errorf("Build with an unknown kind: %v, want ErrBadTopic", err)
	}
	if got, want := Wildcard(State), "gantry/v1/dev/+/state"; got != want {
		t.Errorf("Wildcard = %q, want %q", got, want)
	}
	defer func() {
		if recover() == nil {
			t.Errorf("Device with a wildcard ID did not panic")
		}
	}()
	Device("+", Cmd)
}

func TestFromDevice(t *testing.T) {
	got := map[Kind]bool{}
	for _, k := range Kinds() {
		got[k] = k.FromDevice()
	}
	want := map[Kind]bool{Telemetry: true, State: true, Events: true, CmdAck: true, Cmd: false}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("FromDevice (-want +got):\n%s", diff)
	}
	if Kind("bogus").FromDevice() {
		t.Errorf("unknown kind counts as from device")
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"gantry/v1/dev/d1/telemetry", "gantry/v1/dev/+/#", "gantry/v1/dev/a/b/cmd", "gantry/v1/dev/d\x00/cmd", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		id, k, err := Parse(topic)
		if err != nil {
			if !errors.Is(err, ErrBadTopic) {
				t.Fatalf("error %v does not wrap ErrBadTopic", err)
			}
			return
		}
		if Device(id, k) != topic {
			t.Fatalf("round trip %q → %q", topic, Device(id, k))
		}
		if strings.ContainsAny(id, "+#/\x00") || len(id) == 0 || len(id) > MaxDeviceIDLen {
			t.Fatalf("invalid device ID %q accepted", id)
		}
	})
}
