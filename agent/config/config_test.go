package config

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestDefaultValidates(t *testing.T) {
	c, err := Parse([]byte(DefaultJSON))
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Queue.Dir = "/var/lib/gantry-agent/queue"
	if diff := cmp.Diff(want, c); diff != "" {
		t.Errorf("default file differs from Default() (-want +got):\n%s", diff)
	}
	b, err := os.ReadFile("../../firmware-config/agent.default.json")
	if err != nil {
		t.Fatal(err)
	}
	if ps := Validate(b); len(ps) != 0 {
		t.Errorf("firmware-config/agent.default.json: %v", ps)
	}
}

func TestSchemaCopyCurrent(t *testing.T) {
	b, err := os.ReadFile("../../firmware-config/agent.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, schemaJSON) {
		t.Errorf("firmware-config/agent.schema.json differs from agent/config/agent.schema.json: copy it again")
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	for _, tc := range []struct {
		name string
		doc  string
		want []string // paths
	}{
		{"not json", `{`, []string{"/"}},
		{"unknown field", `{"colour": "red"}`, []string{"/"}},
		{"several schema problems", `{"log": {"level": "loud"}, "queue": {"max_mb": 0}, "metrics": {"listen": 5}}`, []string{"/log/level", "/metrics/listen", "/queue/max_mb"}},
		{"semantic problems", `{"state_dir": "relative", "mqtt": {"keepalive": "soon"}, "queue": {"max_mb": 4, "segment_mb": 8}, "remote_access": {"consent": {"mode": "file"}}, "metrics": {"listen": "nowhere"}}`,
			[]string{"/metrics/listen", "/mqtt/keepalive", "/queue/segment_mb", "/remote_access/consent/path", "/state_dir"}},
		{"duration out of range", `{"mqtt": {"keepalive": "1ms"}}`, []string{"/mqtt/keepalive"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ps := Validate([]byte(tc.doc))
			var got []string
			for _, p := range ps {
				if p.Message == "" {
					t.Errorf("empty message at %s", p.Path)
				}
				got = append(got, p.Path)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("problem paths (-want +got):\n%s\n%v", diff, ps)
			}
		})
	}
	c, err := Parse([]byte(`{"queue": {"max_mb": 16, "sync_delay": "5ms"}, "remote_access": {"consent": {"mode": "file", "path": "/run/gantry/consent"}}}`))
	if err != nil || c.Queue.MaxMB != 16 || c.Queue.SyncDelay != 5*time.Millisecond || c.Consent.Path != "/run/gantry/consent" {
		t.Errorf("parse: %+v %v", c, err)
	}
}

// TestValidateCommand runs the real binary.
func TestValidateCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the agent")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "gantry-agent")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/gantry-agent").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	good := filepath.Join(dir, "good.json")
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(good, []byte(DefaultJSON), 0o600)
	os.WriteFile(bad, []byte(`{"queue": {"max_mb": 0}, "log": {"level": "loud"}}`), 0o600)
	if out, err := exec.Command(bin, "config", "validate", good).CombinedOutput(); err != nil || !strings.Contains(string(out), "valid") {
		t.Errorf("validate good: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "config", "validate", bad).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "/queue/max_mb") || !strings.Contains(string(out), "/log/level") {
		t.Errorf("validate bad: %v\n%s", err, out)
	}
	if out, err := exec.Command(bin, "config", "default").CombinedOutput(); err != nil || !strings.Contains(string(out), `"max_mb": 64`) {
		t.Errorf("config default: %v\n%s", err, out)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(DefaultJSON))
	f.Add([]byte(`{"queue": {"max_mb": 1}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err == nil && (c.Queue.MaxMB < 1 || c.Queue.SegmentMB > c.Queue.MaxMB) {
			t.Fatalf("accepted invalid queue %+v", c.Queue)
		}
	})
}

func TestSystemdUnit(t *testing.T) {
	path, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed: cannot verify firmware-config/gantry-agent.service")
	}
	out, err := exec.Command(path, "verify", "--man=no", "../../firmware-config/gantry-agent.service").CombinedOutput()
	if err != nil && !strings.Contains(string(out), "/usr/bin/gantry-agent") {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
