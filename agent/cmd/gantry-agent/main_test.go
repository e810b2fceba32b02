package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/gantry-iot/gantry/agent/config"
)

const firmwareDir = "../../../firmware-config"

// call runs the command line in-process and returns stdout, stderr and the
// exit status main would use.
func call(t *testing.T, stdin string, args ...string) (stdout, stderr string, status int) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(t.Context(), args, stdio{in: strings.NewReader(stdin), out: &out, err: &errb})
	status = report(err, &errb)
	return out.String(), errb.String(), status
}

func writeFile(t *testing.T, dir, name, data string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// leaves lists every runnable command line of the table, e.g. "config validate".
func leaves(prefix string, list []cliCommand) []string {
	var out []string
	for _, c := range list {
		name := strings.TrimSpace(prefix + " " + c.name)
		if c.run == nil {
			out = append(out, leaves(name, c.subs)...)
			continue
		}
		out = append(out, name)
	}
	return out
}

func TestHelp(t *testing.T) {
	want := []string{"enroll", "run", "config validate", "config default", "version", "help"}
	if diff := cmp.Diff(want, leaves("", commands())); diff != "" {
		t.Errorf("commands (-want +got):\n%s", diff)
	}
	for _, args := range [][]string{nil, {"help"}, {"-h"}, {"--help"}} {
		out, _, status := call(t, "", args...)
		if status != 0 {
			t.Errorf("%q: exit %d", args, status)
		}
		for _, c := range want {
			if !strings.Contains(out, "gantry-agent "+c) {
				t.Errorf("%q: help does not list %q:\n%s", args, c, out)
			}
		}
		if !strings.Contains(out, "gantry-agent config validate FILE") || !strings.Contains(out, "unprivileged") {
			t.Errorf("%q: help lacks the synopsis or the introduction:\n%s", args, out)
		}
		for i, line := range strings.Split(out, "\n") {
			if n := len([]rune(line)); n > 80 {
				t.Errorf("help line %d is %d columns: %q", i+1, n, line)
			}
		}
	}
	// Every listed command is dispatchable and has flag help.
	for _, c := range want {
		if c == "help" {
			continue
		}
		_, stderr, status := call(t, "", append(strings.Fields(c), "-h")...)
		if status != 0 || !strings.Contains(stderr, "Usage: gantry-agent "+c) {
			t.Errorf("%s -h: exit %d, stderr:\n%s", c, status, stderr)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"frobnicate"}, "unknown command 'gantry-agent frobnicate'; the commands are enroll, run, config, version, help"},
		{[]string{"config"}, "'gantry-agent config' needs a subcommand: validate, default"},
		{[]string{"config", "check"}, "unknown command 'gantry-agent config check'"},
		{[]string{"config", "validate"}, "needs exactly one FILE"},
		{[]string{"config", "validate", "a", "b"}, "needs exactly one FILE"},
		{[]string{"config", "default", "x"}, "takes no arguments"},
		{[]string{"version", "--bogus"}, "flag provided but not defined: -bogus"},
		{[]string{"help", "me"}, "help takes no arguments"},
		{[]string{"run", "extra"}, "run takes only flags"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, stderr, status := call(t, "", tc.args...)
			if status != 2 || !strings.Contains(stderr, tc.want) || !strings.Contains(stderr, "gantry-agent help") {
				t.Errorf("exit %d, stderr:\n%s\nwant exit 2 and %q", status, stderr, tc.want)
			}
		})
	}
}

func TestReport(t *testing.T) {
	for _, tc := range []struct {
		err    error
		status int
	}{
		{nil, 0},
		{flag.ErrHelp, 0},
		{fmt.Errorf("stopping: %w", context.Canceled), 0},
		{usageErrorf("bad"), 2},
		{errors.New("boom"), 1},
		{problemsError{name: "f", count: 2}, 1},
	} {
		var b bytes.Buffer
		if got := report(tc.err, &b); got != tc.status {
			t.Errorf("report(%v) = %d, want %d", tc.err, got, tc.status)
		}
		if (tc.status == 0) != (b.Len() == 0) {
			t.Errorf("report(%v) printed %q", tc.err, b.String())
		}
	}
}

func TestConfigValidateInProcess(t *testing.T) {
	dir := t.TempDir()
	good := writeFile(t, dir, "good.json", `{"queue": {"max_mb": 16}}`)
	bad := writeFile(t, dir, "bad.json", `{"queue": {"max_mb": 0}, "log": {"level": "loud"}, "colour": 1}`)

	out, stderr, status := call(t, "", "config", "validate", good)
	if status != 0 || out != good+": valid\n" || stderr != "" {
		t.Errorf("good: exit %d, stdout %q, stderr %q", status, out, stderr)
	}
	out, stderr, status = call(t, "", "config", "validate", bad)
	wantOut := "/colour: unknown field; remove it or fix its spelling (fields allowed here: dev_allow_http, log, metrics, mqtt, opcua, queue, remote_access, rules, server, server_ca_file, state_dir)\n" +
		"/log/level: \"loud\" is not allowed; use one of \"debug\", \"info\", \"warn\", \"error\"\n" +
		"/queue/max_mb: 0 is too small; the minimum is 1\n"
	if diff := cmp.Diff(wantOut, out); diff != "" {
		t.Errorf("bad: stdout (-want +got):\n%s", diff)
	}
	if status != 1 || !strings.Contains(stderr, bad+": 3 problem(s)") {
		t.Errorf("bad: exit %d, stderr %q", status, stderr)
	}
	out, stderr, status = call(t, `{"metrics": {"listen": "nowhere"}}`, "config", "validate", "-")
	if status != 1 || !strings.HasPrefix(out, "/metrics/listen: ") || !strings.Contains(stderr, "standard input: 1 problem(s)") {
		t.Errorf("stdin: exit %d, stdout %q, stderr %q", status, out, stderr)
	}
	if out, _, status := call(t, `{}`, "config", "validate", "-"); status != 0 || out != "standard input: valid\n" {
		t.Errorf("stdin {}: exit %d, stdout %q", status, out)
	}
	_, stderr, status = call(t, "", "config", "validate", filepath.Join(dir, "missing.json"))
	if status != 1 || !strings.Contains(stderr, "no such file") {
		t.Errorf("missing file: exit %d, stderr %q", status, stderr)
	}
}

func TestRunNotEnrolled(t *testing.T) {
	_, stderr, status := call(t, "", "run", "--state-dir", t.TempDir(), "--metrics-listen", "off")
	if status != 1 || !strings.Contains(stderr, "not enrolled") {
		t.Errorf("run without enrollment: exit %d, stderr %q", status, stderr)
	}
	bad := writeFile(t, t.TempDir(), "agent.json", `{"queue": {"max_mb": 0}}`)
	_, stderr, status = call(t, "", "run", "--config", bad)
	if status != 1 || !strings.Contains(stderr, "/queue/max_mb") {
		t.Errorf("run with an invalid config: exit %d, stderr %q", status, stderr)
	}
}

// TestBinary builds the real agent and runs it as a process.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the agent binary; skipped with -short")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "gantry-agent")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	exe := func(t *testing.T, args ...string) (stdout, stderr string, status int) {
		t.Helper()
		var out, errb bytes.Buffer
		cmd := exec.Command(bin, args...)
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		var ee *exec.ExitError
		switch {
		case err == nil:
		case errors.As(err, &ee):
			status = ee.ExitCode()
		default:
			t.Fatalf("%s: %v", bin, err)
		}
		return out.String(), errb.String(), status
	}

	t.Run("validate good", func(t *testing.T) {
		for _, f := range []string{filepath.Join(firmwareDir, "agent.default.json"), writeFile(t, dir, "good.json", `{"server": "https://cp.example.com", "remote_access": {"consent": {"mode": "file", "path": "/run/gantry/consent"}}}`)} {
			out, stderr, status := exe(t, "config", "validate", f)
			if status != 0 || out != f+": valid\n" || stderr != "" {
				t.Errorf("%s: exit %d, stdout %q, stderr %q", f, status, out, stderr)
			}
		}
	})
	t.Run("validate bad", func(t *testing.T) {
		f := writeFile(t, dir, "bad.json", `{
  "server": "http://cp.example.com",
  "mqtt": {"reconnect": {"min_backoff": "5m", "max_backoff": "1m"}},
  "opcua": {"endpoints": [{"name": "cnc", "url": "tcp://10.0.0.5:4840", "auth": {"type": "username", "username": "reader"}}]}
}`)
		out, stderr, status := exe(t, "config", "validate", f)
		want := "/mqtt/reconnect/min_backoff: 5m is longer than max_backoff (1m); lower min_backoff or raise max_backoff\n" +
			"/opcua/endpoints/0/auth/password_file: auth type username needs the absolute path of a file (0600) holding the password; add it\n" +
			"/opcua/endpoints/0/url: \"tcp://10.0.0.5:4840\": scheme must be opc.tcp; write opc.tcp://host:port[/path]\n" +
			"/server: \"http://cp.example.com\" is plain http; use https://, or set dev_allow_http for a development server\n"
		if diff := cmp.Diff(want, out); diff != "" {
			t.Errorf("stdout (-want +got):\n%s", diff)
		}
		if status != 1 || stderr != "gantry-agent: "+f+": 4 problem(s); fix them and validate again\n" {
			t.Errorf("exit %d, stderr %q", status, stderr)
		}
	})
	t.Run("config default", func(t *testing.T) {
		out, _, status := exe(t, "config", "default")
		want, err := os.ReadFile(filepath.Join(firmwareDir, "agent.default.json"))
		if err != nil {
			t.Fatal(err)
		}
		if status != 0 || out != string(want) || out != string(config.DefaultJSON()) {
			t.Errorf("exit %d; output differs from firmware-config/agent.default.json:\n%s", status, out)
		}
	})
	t.Run("version and usage", func(t *testing.T) {
		if out, _, status := exe(t, "version"); status != 0 || !regexp.MustCompile(`^gantry-agent \S+ \(go`).MatchString(out) {
			t.Errorf("version: exit %d, %q", status, out)
		}
		if _, stderr, status := exe(t, "nope"); status != 2 || !strings.Contains(stderr, "unknown command") {
			t.Errorf("unknown command: exit %d, %q", status, stderr)
		}
	})
	t.Run("systemd unit", func(t *testing.T) { verifyUnit(t, bin) })
}

// TestSysusers checks the user definition with systemd-sysusers.
func TestSysusers(t *testing.T) {
	sysusers, err := exec.LookPath("systemd-sysusers")
	if err != nil {
		t.Skip("systemd-sysusers not installed: firmware-config/gantry-agent.sysusers.conf NOT verified")
	}
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs(filepath.Join(firmwareDir, "gantry-agent.sysusers.conf"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sysusers, "--dry-run", "--root="+root, abs).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Creating user 'gantry'") {
		t.Errorf("systemd-sysusers --dry-run: %v\n%s", err, out)
	}
}

// verifyUnit runs systemd-analyze verify on the unit, alone and with the
// SSC drop-in, with ExecStart pointing at the freshly built binary.
func verifyUnit(t *testing.T, bin string) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed: firmware-config/gantry-agent.service NOT verified")
	}
	unit, err := os.ReadFile(filepath.Join(firmwareDir, "gantry-agent.service"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(unit, []byte("ExecStart=/usr/bin/gantry-agent ")) {
		t.Fatalf("the unit must start /usr/bin/gantry-agent")
	}
	unit = bytes.ReplaceAll(unit, []byte("ExecStart=/usr/bin/gantry-agent "), []byte("ExecStart="+bin+" "))
	dropIn, err := os.ReadFile(filepath.Join(firmwareDir, "gantry-agent-ssc-l3.conf"))
	if err != nil {
		t.Fatal(err)
	}
	// RestartSteps= and RestartMaxDelaySec= (the restart backoff) arrived in
	// systemd 254; older versions ignore them with a warning.
	var tolerated []string
	if v := systemdVersion(t, analyze); v < 254 {
		tolerated = []string{"Unknown key 'RestartSteps'", "Unknown key 'RestartMaxDelaySec'"}
		t.Logf("systemd %d: tolerating %q", v, tolerated)
	}
	for _, withDropIn := range []bool{false, true} {
		t.Run("drop-in="+strconv.FormatBool(withDropIn), func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, dir, "gantry-agent.service", string(unit))
			if withDropIn {
				if err := os.Mkdir(filepath.Join(dir, "gantry-agent.service.d"), 0o755); err != nil {
					t.Fatal(err)
				}
				writeFile(t, filepath.Join(dir, "gantry-agent.service.d"), "ssc-l3.conf", string(dropIn))
			}
			out, err := exec.Command(analyze, "verify", "--man=no", filepath.Join(dir, "gantry-agent.service")).CombinedOutput()
			if err != nil {
				t.Errorf("systemd-analyze verify: %v\n%s", err, out)
			}
			for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				if line == "" || slices.ContainsFunc(tolerated, func(sub string) bool { return strings.Contains(line, sub) }) {
					continue
				}
				t.Errorf("systemd-analyze verify warns: %s", line)
			}
		})
	}
}

func systemdVersion(t *testing.T, analyze string) int {
	t.Helper()
	out, err := exec.Command(analyze, "--version").Output()
	if err != nil {
		t.Fatalf("systemd-analyze --version: %v", err)
	}
	m := regexp.MustCompile(`systemd (\d+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("cannot read the systemd version from %q", out)
	}
	v, _ := strconv.Atoi(string(m[1]))
	return v
}
