package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const firmwareDir = "../../firmware-config"

// full is a configuration that sets every field away from its default.
func full() Config {
	c := Default()
	c.Server = "https://gantry.example.com:8443"
	c.ServerCAFile = "/etc/gantry/ca.pem"
	c.StateDir = "/data/gantry"
	c.Log = Log{Level: slog.LevelDebug, Format: LogText}
	c.Metrics.Listen = "[::1]:9200"
	c.MQTT = MQTT{
		KeepAlive:      45 * time.Second,
		ConnectTimeout: 20 * time.Second,
		Reconnect:      Backoff{Min: 500 * time.Millisecond, Max: 5 * time.Minute, Jitter: 0.35},
		Batch:          Batch{MaxMessages: 500, MaxDelay: 250 * time.Millisecond},
		InflightWindow: 16,
	}
	c.Queue = Queue{Dir: "/data/queue", MaxMB: 512, SegmentMB: 16, SyncInterval: 0}
	c.OPCUA = OPCUA{
		Endpoints: []Endpoint{
			{Name: "cnc", URL: "opc.tcp://10.0.0.5:4840", SecurityMode: SecurityModeNone, SecurityPolicy: SecurityPolicyNone, Auth: Auth{Type: AuthAnonymous}},
			{Name: "press-1", URL: "opc.tcp://press:4840/ua", SecurityMode: SecurityModeSignAndEncrypt, SecurityPolicy: SecurityPolicyBasic256Sha256,
				Auth: Auth{Type: AuthUsername, Username: "reader", PasswordFile: "/etc/gantry/press.pw"}},
			{Name: "robot", URL: "opc.tcp://robot:4840", SecurityMode: SecurityModeSign, SecurityPolicy: SecurityPolicyBasic256Sha256,
				Auth: Auth{Type: AuthCertificate, CertFile: "/etc/gantry/robot.crt", KeyFile: "/etc/gantry/robot.key"}},
		},
		Overrides: []Override{
			{NodeID: "ns=2;s=Spindle.Speed", SamplingInterval: 100 * time.Millisecond, Deadband: &Deadband{Type: DeadbandPercent, Value: 0.5}},
			{NodeID: "i=2258", Disabled: true},
			{NodeID: "ns=3;i=1001", Deadband: &Deadband{Type: DeadbandAbsolute, Value: 2}},
		},
	}
	c.RemoteAccess = RemoteAccess{Consent: Consent{Mode: ConsentGPIO, Path: "/sys/class/gpio/gpio17/value"}, WireGuard: WireGuard{ListenPort: 51821}, SSCL3Mode: SSCKernelTUN}
	c.Rules.RunningHoursStateFile = "/data/hours.json"
	return c
}

func TestParseDefaults(t *testing.T) {
	for _, doc := range []string{`{}`, " {\n}\n", string(DefaultJSON())} {
		got, err := Parse([]byte(doc))
		if err != nil {
			t.Fatalf("Parse(%q): %v", doc, err)
		}
		if diff := cmp.Diff(Default(), got); diff != "" {
			t.Errorf("Parse(%.20q) (-want +got):\n%s", doc, diff)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	for name, c := range map[string]Config{"default": Default(), "full": full()} {
		t.Run(name, func(t *testing.T) {
			b, err := json.Marshal(c)
			if err != nil {
				t.Fatal(err)
			}
			got, err := Parse(b)
			if err != nil {
				t.Fatalf("Parse(Marshal(c)): %v\n%s", err, b)
			}
			if diff := cmp.Diff(c, got); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
			var viaUnmarshal Config
			if err := json.Unmarshal(b, &viaUnmarshal); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(c, viaUnmarshal); diff != "" {
				t.Errorf("json.Unmarshal (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMarshalRejectsUnnamedLevel(t *testing.T) {
	c := Default()
	c.Log.Level = slog.Level(2)
	if _, err := json.Marshal(c); err == nil || !strings.Contains(err.Error(), "log level") {
		t.Errorf("Marshal with level 2: %v, want an error about the log level", err)
	}
}

func TestDerivedPaths(t *testing.T) {
	c := Default()
	if got, want := c.QueueDir(), "/var/lib/gantry-agent/queue"; got != want {
		t.Errorf("QueueDir() = %q, want %q", got, want)
	}
	if got, want := c.RunningHoursFile(), "/var/lib/gantry-agent/running-hours.json"; got != want {
		t.Errorf("RunningHoursFile() = %q, want %q", got, want)
	}
	f := full()
	if f.QueueDir() != "/data/queue" || f.RunningHoursFile() != "/data/hours.json" {
		t.Errorf("explicit paths not used: %q %q", f.QueueDir(), f.RunningHoursFile())
	}
}

func TestDefaultFile(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(firmwareDir, "agent.default.json"))
	if err != nil {
		t.Fatal(err)
	}
	if ps := Validate(b); len(ps) != 0 {
		t.Errorf("firmware-config/agent.default.json has problems: %v", ps)
	}
	if !bytes.Equal(b, DefaultJSON()) {
		t.Errorf("firmware-config/agent.default.json differs from DefaultJSON(); regenerate it with 'go run ./agent/cmd/gantry-agent config default > firmware-config/agent.default.json'")
	}
}

func TestSchemaCopyIdentical(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(firmwareDir, "agent.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, Schema()) {
		t.Errorf("firmware-config/agent.schema.json differs from the embedded agent/config/agent.schema.json (the canonical one); run 'cp agent/config/agent.schema.json firmware-config/'")
	}
}

// TestSchemaDefaults keeps the schema's documented defaults equal to
// Default(): a document made of every "default" in the schema must parse to
// Default().
func TestSchemaDefaults(t *testing.T) {
	if _, err := compiled(); err != nil {
		t.Fatal(err)
	}
	var schema map[string]any
	if err := json.Unmarshal(schemaJSON, &schema); err != nil {
		t.Fatal(err)
	}
	var defaults func(s map[string]any) (any, bool)
	defaults = func(s map[string]any) (any, bool) {
		props, ok := s["properties"].(map[string]any)
		if !ok {
			d, ok := s["default"]
			return d, ok
		}
		m := map[string]any{}
		for name, p := range props {
			if d, ok := defaults(p.(map[string]any)); ok {
				m[name] = d
			} else {
				t.Errorf("schema property %q has no default", name)
			}
		}
		return m, true
	}
	doc, _ := defaults(schema)
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(b)
	if err != nil {
		t.Fatalf("the schema's defaults do not parse: %v\n%s", err, b)
	}
	if diff := cmp.Diff(Default(), got); diff != "" {
		t.Errorf("schema defaults differ from Default() (-want +got):\n%s", diff)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		doc  string
		want []Problem // Message is a substring the real message must contain
	}{
		{"empty", ``, []Problem{{"/", "empty"}}},
		{"syntax error with position", "{\n  \"log\": {\"level\": \"info\",}\n}", []Problem{{"/", "line 2, column 27"}}},
		{"truncated", `{"log": {`, []Problem{{"/", "ends early"}}},
		{"trailing data", `{} {}`, []Problem{{"/", "after the JSON object"}}},
		{"not an object", `[1, 2]`, []Problem{{"/", "want object"}}},
		{"too deep", strings.Repeat(`{"a":`, 40) + `1` + strings.Repeat(`}`, 40), []Problem{{"/", "nested deeper"}}},
		{"unknown top-level field", `{"colour": "red"}`, []Problem{{"/colour", "unknown field"}}},
		{"unknown nested field lists known ones", `{"mqtt": {"reconnect": {"min": "1s"}}}`,
			[]Problem{{"/mqtt/reconnect/min", "allowed here: jitter, max_backoff, min_backoff"}}},
		{"unknown field name is escaped", `{"a/b~c": 1}`, []Problem{{"/a~1b~0c", "unknown field"}}},
		{"duplicate field", `{"log": {"level": "info", "level": "debug"}}`, []Problem{{"/log/level", "more than once"}}},
		{"enum", `{"log": {"level": "loud"}}`, []Problem{{"/log/level", `"loud" is not allowed; use one of "debug", "info", "warn", "error"`}}},
		{"wrong type", `{"queue": {"max_mb": "64"}}`, []Problem{{"/queue/max_mb", "got string, want integer"}}},
		{"fraction for integer", `{"queue": {"max_mb": 1.5}}`, []Problem{{"/queue/max_mb", "want integer"}}},
		{"integer written as 1e2", `{"queue": {"max_mb": 1e2}}`, nil},
		{"max_mb zero", `{"queue": {"max_mb": 0}}`, []Problem{{"/queue/max_mb", "0 is too small; the minimum is 1"}}},
		{"huge number stays short", `{"queue": {"max_mb": 1e400}}`, []Problem{{"/queue/max_mb", "a number beyond any range is too large; the maximum is 65536"}}},
		{"fraction bound", `{"mqtt": {"reconnect": {"jitter": 1.25}}}`, []Problem{{"/mqtt/reconnect/jitter", "1.25 is too large; the maximum is 1"}}},
		{"segment larger than queue", `{"queue": {"max_mb": 4}}`, []Problem{{"/queue/segment_mb", "larger than max_mb (4 MiB)"}}},
		{"relative queue dir", `{"queue": {"dir": "queue"}}`, []Problem{{"/queue/dir", "absolute path"}}},
		{"empty state_dir", `{"state_dir": ""}`, []Problem{{"/state_dir", "must not be empty"}}},
		{"relative state_dir", `{"state_dir": "var/lib"}`, []Problem{{"/state_dir", "relative path"}}},
		{"bad duration", `{"mqtt": {"keepalive": "soon"}}`, []Problem{{"/mqtt/keepalive", `"soon" is not a Go duration`}}},
		{"duration without unit", `{"queue": {"sync_interval": "5"}}`, []Problem{{"/queue/sync_interval", "not a Go duration"}}},
		{"zero duration", `{"queue": {"sync_interval": "0"}}`, nil},
		{"duration out of range", `{"mqtt": {"keepalive": "1s"}}`, []Problem{{"/mqtt/keepalive", "from 5s to 20m"}}},
		{"duration overflow", `{"mqtt": {"keepalive": "99999999999h"}}`, []Problem{{"/mqtt/keepalive", "not a Go duration"}}},
		{"backoff min above max", `{"mqtt": {"reconnect": {"min_backoff": "2m", "max_backoff": "30s"}}}`,
			[]Problem{{"/mqtt/reconnect/min_backoff", "longer than max_backoff (30s)"}}},
		{"backoff min above default max", `{"mqtt": {"reconnect": {"min_backoff": "2m"}}}`,
			[]Problem{{"/mqtt/reconnect/min_backoff", "longer than max_backoff (1m)"}}},
		{"jitter above 1", `{"mqtt": {"reconnect": {"jitter": 1.5}}}`, []Problem{{"/mqtt/reconnect/jitter", "maximum is 1"}}},
		{"server http", `{"server": "http://cp:8080"}`, []Problem{{"/server", "use https://, or set dev_allow_http"}}},
		{"server http allowed in dev", `{"server": "http://cp:8080", "dev_allow_http": true}`, nil},
		{"server https", `{"server": "https://cp.example.com"}`, nil},
		{"server not a URL", `{"server": "::nope"}`, []Problem{{"/server", "not a URL"}}},
		{"server wrong scheme", `{"server": "ftp://cp"}`, []Problem{{"/server", "not an https URL"}}},
		{"server without host", `{"server": "https:///x"}`, []Problem{{"/server", "no host"}}},
		{"server with credentials", `{"server": "https://u:p@cp"}`, []Problem{{"/server", "credentials"}}},
		{"server bad port", `{"server": "https://cp:70000"}`, []Problem{{"/server", "port"}}},
		{"metrics off", `{"metrics": {"listen": "off"}}`, nil},
		{"metrics ipv6", `{"metrics": {"listen": "[::1]:9101"}}`, nil},
		{"metrics no port", `{"metrics": {"listen": "127.0.0.1"}}`, []Problem{{"/metrics/listen", "not host:port"}}},
		{"metrics bad port", `{"metrics": {"listen": "127.0.0.1:http"}}`, []Problem{{"/metrics/listen", "not a number"}}},
		{"metrics port zero", `{"metrics": {"listen": "127.0.0.1:0"}}`, []Problem{{"/metrics/listen", "fixed port"}}},
		{"endpoint missing url", `{"opcua": {"endpoints": [{"name": "cnc"}]}}`, []Problem{{"/opcua/endpoints/0/url", "required field is missing"}}},
		{"endpoint url scheme", `{"opcua": {"endpoints": [{"name": "cnc", "url": "http://cnc:4840"}]}}`,
			[]Problem{{"/opcua/endpoints/0/url", "scheme must be opc.tcp"}}},
		{"endpoint url no host", `{"opcua": {"endpoints": [{"name": "cnc", "url": "opc.tcp://:4840"}]}}`, []Problem{{"/opcua/endpoints/0/url", "no host"}}},
		{"endpoint bad name", `{"opcua": {"endpoints": [{"name": "a b", "url": "opc.tcp://a:4840"}]}}`, []Problem{{"/opcua/endpoints/0/name", "not a valid name"}}},
		{"endpoint duplicate name", `{"opcua": {"endpoints": [{"name": "a", "url": "opc.tcp://a:1"}, {"name": "a", "url": "opc.tcp://b:1"}]}}`,
			[]Problem{{"/opcua/endpoints/1/name", "already used by /opcua/endpoints/0/name"}}},
		{"endpoint not an object", `{"opcua": {"endpoints": ["opc.tcp://a:1"]}}`, []Problem{{"/opcua/endpoints/0", "want object"}}},
		{"sign without policy", `{"opcua": {"endpoints": [{"name": "a", "url": "opc.tcp://a:1", "security_mode": "Sign"}]}}`,
			[]Problem{{"/opcua/endpoints/0/security_policy", "needs security_policy Basic256Sha256"}}},
		{"policy without mode", `{"opcua": {"endpoints": [{"name": "a", "url": "opc.tcp://a:1", "security_policy": "Basic256Sha256"}]}}`,
			[]Problem{{"/opcua/endpoints/0/security_mode", "needs security_mode Sign or SignAndEncrypt"}}},
		{"username auth incomplete", `{"opcua": {"endpoints": [{"name": "a", "url": "opc.tcp://a:1", "auth": {"type": "username"}}]}}`,
			[]Problem{{"/opcua/endpoints/0/auth/password_file", "needs the absolute path"}, {"/opcua/endpoints/0/auth/username", "needs the user name"}}},
		{"certificate auth incomplete", `{"opcua": {"endpoints": [{"name": "a", "url": "opc.tcp://a:1", "security_mode": "Sign", "security_policy": "Basic256Sha256", "auth": {"type": "certificate", "cert_file": "/c"}}]}}`,
			[]Problem{{"/opcua/endpoints/0/auth/key_file", "needs the absolute path of the PEM private key"}}},
		{"certificate auth without security", `{"opcua": {"endpoints": [{"name": "a", "url": "opc.tcp://a:1", "auth": {"type": "certificate", "cert_file": "/c", "key_file": "/k"}}]}}`,
			[]Problem{{"/opcua/endpoints/0/auth/type", "certificate login needs security_mode Sign or SignAndEncrypt"}}},
		{"anonymous with password", `{"opcua": {"endpoints": [{"name": "a", "url": "opc.tcp://a:1", "auth": {"password_file": "/pw"}}]}}`,
			[]Problem{{"/opcua/endpoints/0/auth/password_file", "only used with auth type username"}}},
		{"relative password file", `{"opcua": {"endpoints": [{"name": "a", "url": "opc.tcp://a:1", "auth": {"type": "username", "username": "u", "password_file": "pw"}}]}}`,
			[]Problem{{"/opcua/endpoints/0/auth/password_file", "relative path"}}},
		{"override bad node id", `{"opcua": {"overrides": [{"node_id": "ns=two;s=Speed"}]}}`, []Problem{{"/opcua/overrides/0/node_id", "not an OPC-UA node ID"}}},
		{"override duplicate node", `{"opcua": {"overrides": [{"node_id": "ns=2;s=X"}, {"node_id": "ns=2;s=X", "disabled": true}]}}`,
			[]Problem{{"/opcua/overrides/1/node_id", "already overridden by /opcua/overrides/0/node_id"}}},
		{"override missing node id", `{"opcua": {"overrides": [{"disabled": true}]}}`, []Problem{{"/opcua/overrides/0/node_id", "required field is missing"}}},
		{"override sampling too fast", `{"opcua": {"overrides": [{"node_id": "i=1", "sampling_interval": "1ms"}]}}`,
			[]Problem{{"/opcua/overrides/0/sampling_interval", "from 10ms to 1h"}}},
		{"deadband percent over 100", `{"opcua": {"overrides": [{"node_id": "i=1", "deadband": {"type": "percent", "value": 150}}]}}`,
			[]Problem{{"/opcua/overrides/0/deadband/value", "0..100"}}},
		{"deadband negative", `{"opcua": {"overrides": [{"node_id": "i=1", "deadband": {"type": "absolute", "value": -1}}]}}`,
			[]Problem{{"/opcua/overrides/0/deadband/value", "minimum is 0"}}},
		{"deadband missing type", `{"opcua": {"overrides": [{"node_id": "i=1", "deadband": {"value": 1}}]}}`,
			[]Problem{{"/opcua/overrides/0/deadband/type", "required field is missing"}}},
		{"consent file without path", `{"remote_access": {"consent": {"mode": "file"}}}`, []Problem{{"/remote_access/consent/path", `consent mode "file" needs the path`}}},
		{"consent path with mode none", `{"remote_access": {"consent": {"path": "/run/consent"}}}`, []Problem{{"/remote_access/consent/path", "ignored while consent mode is none"}}},
		{"consent unknown mode", `{"remote_access": {"consent": {"mode": "key"}}}`, []Problem{{"/remote_access/consent/mode", `use one of "none", "file", "gpio"`}}},
		{"wireguard port", `{"remote_access": {"wireguard": {"listen_port": 70000}}}`, []Problem{{"/remote_access/wireguard/listen_port", "maximum is 65535"}}},
		{"ssc mode", `{"remote_access": {"ssc_l3_mode": "tun"}}`, []Problem{{"/remote_access/ssc_l3_mode", "use one of"}}},
		{"relative running hours file", `{"rules": {"running_hours_state_file": "hours.json"}}`, []Problem{{"/rules/running_hours_state_file", "relative path"}}},
		{"several problems at once, in path order", `{
			"server": "http://cp",
			"log": {"level": "loud", "format": "xml"},
			"metrics": {"listen": 9101},
			"mqtt": {"keepalive": "soon", "reconnect": {"min_backoff": "2m", "max_backoff": "1m"}},
			"queue": {"max_mb": 4, "segment_mb": 8, "extra": true},
			"opcua": {"endpoints": [
				{"name": "ok", "url": "opc.tcp://a:1"},
				{"name": "ok", "url": "https://b", "auth": {"type": "username"}}
			]},
			"remote_access": {"consent": {"mode": "gpio"}}
		}`, []Problem{
			{"/log/format", "use one of"},
			{"/log/level", "use one of"},
			{"/metrics/listen", "got number, want string"},
			{"/mqtt/keepalive", "not a Go duration"},
			{"/mqtt/reconnect/min_backoff", "longer than max_backoff"},
			{"/opcua/endpoints/1/auth/password_file", "needs"},
			{"/opcua/endpoints/1/auth/username", "needs"},
			{"/opcua/endpoints/1/name", "already used"},
			{"/opcua/endpoints/1/url", "opc.tcp"},
			{"/queue/extra", "unknown field"},
			{"/queue/segment_mb", "larger than max_mb"},
			{"/remote_access/consent/path", "needs the path"},
			{"/server", "https"},
		}},
		{"array indexes sort as numbers", `{"opcua": {"overrides": [` + strings.Repeat(`{"node_id": "i=1"},`, 10) + `{"node_id": "ns=two;s=bad"}]}}`, []Problem{
			{"/opcua/overrides/1/node_id", "already"}, {"/opcua/overrides/2/node_id", "already"}, {"/opcua/overrides/3/node_id", "already"},
			{"/opcua/overrides/4/node_id", "already"}, {"/opcua/overrides/5/node_id", "already"}, {"/opcua/overrides/6/node_id", "already"},
			{"/opcua/overrides/7/node_id", "already"}, {"/opcua/overrides/8/node_id", "already"}, {"/opcua/overrides/9/node_id", "already"},
			{"/opcua/overrides/10/node_id", "not an OPC-UA node ID"},
		}},
		{"full config is valid", string(mustMarshal(t, full())), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Validate([]byte(tc.doc))
			// Compare paths exactly and messages by the expected substring.
			matches := cmp.Comparer(func(a, b Problem) bool {
				return a.Path == b.Path && (strings.Contains(a.Message, b.Message) || strings.Contains(b.Message, a.Message))
			})
			if diff := cmp.Diff(tc.want, got, matches); diff != "" {
				t.Errorf("Validate (-want +got):\n%s", diff)
			}
			c, err := Parse([]byte(tc.doc))
			if len(tc.want) == 0 {
				if err != nil {
					t.Errorf("Parse: %v", err)
				}
				return
			}
			var ie *InvalidError
			if !errors.Is(err, ErrInvalid) || !errors.As(err, &ie) || len(ie.Problems) != len(got) {
				t.Errorf("Parse error = %v, want an *InvalidError with %d problems", err, len(got))
			}
			if diff := cmp.Diff(Config{}, c); diff != "" {
				t.Errorf("Parse returned a config with an error (-want +got):\n%s", diff)
			}
		})
	}
}

func mustMarshal(t *testing.T, c Config) []byte {
	t.Helper()
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.json", mustMarshal(t, full()))
	c, err := Load(good)
	if err != nil {
		t.Fatalf("Load(good): %v", err)
	}
	if diff := cmp.Diff(full(), c); diff != "" {
		t.Errorf("Load (-want +got):\n%s", diff)
	}

	for _, tc := range []struct {
		name, path string
		is         error
		contains   string
	}{
		{"missing", filepath.Join(dir, "nope.json"), os.ErrNotExist, "config default"},
		{"too large", write("big.json", bytes.Repeat([]byte(" "), MaxFileSize+1)), ErrTooLarge, "big.json"},
		{"invalid", write("bad.json", []byte(`{"queue": {"max_mb": 0}}`)), ErrInvalid, "/queue/max_mb"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(tc.path)
			if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.contains) {
				t.Errorf("Load(%s) = %v, want %v mentioning %q", tc.path, err, tc.is, tc.contains)
			}
		})
	}
}

func TestLogger(t *testing.T) {
	for _, tc := range []struct {
		log  Log
		want string
	}{
		{Log{Level: slog.LevelInfo, Format: LogJSON}, `"msg":"shown"`},
		{Log{Level: slog.LevelInfo, Format: LogText}, `msg=shown`},
	} {
		var b bytes.Buffer
		l := tc.log.NewLogger(&b)
		l.Debug("hidden")
		l.Info("shown")
		if !strings.Contains(b.String(), tc.want) || strings.Contains(b.String(), "hidden") {
			t.Errorf("%+v wrote %q, want %s and no debug line", tc.log, b.String(), tc.want)
		}
	}
}

// FuzzParse: any input either parses to a Config that survives a round
// trip, or yields problems that each have a path and a message; never a
// panic.
func FuzzParse(f *testing.F) {
	f.Add(DefaultJSON())
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"queue": {"max_mb": 1, "segment_mb": 1}}`))
	f.Add([]byte(`{"opcua": {"endpoints": [{"name": "a", "url": "opc.tcp://a:1", "auth": {"type": "username"}}], "overrides": [{"node_id": "i=1", "deadband": {"type": "percent", "value": 5}}]}}`))
	f.Add([]byte(`{"mqtt": {"reconnect": {"min_backoff": "2m", "max_backoff": "1m"}}, "log": {"level": "loud"}}`))
	f.Add([]byte(`{"a": {"a": [1, {"b": null}]}, "a": 1e999}`))
	f.Add([]byte(`{"server": "https://x:1", "metrics": {"listen": "[::1]:1"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		ps := Validate(data)
		if err != nil {
			var ie *InvalidError
			if !errors.As(err, &ie) || len(ie.Problems) == 0 || len(ps) == 0 {
				t.Fatalf("Parse error %v without problems (Validate: %v)", err, ps)
			}
			for _, p := range ps {
				if !strings.HasPrefix(p.Path, "/") || p.Message == "" {
					t.Fatalf("malformed problem %+v", p)
				}
			}
			return
		}
		if len(ps) != 0 {
			t.Fatalf("Parse accepted what Validate rejects: %v", ps)
		}
		if c.Queue.MaxMB < 1 || c.Queue.SegmentMB > c.Queue.MaxMB || c.MQTT.Reconnect.Min > c.MQTT.Reconnect.Max {
			t.Fatalf("accepted an inconsistent config: %+v", c)
		}
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatalf("Marshal of a parsed config: %v", err)
		}
		again, err := Parse(b)
		if err != nil {
			t.Fatalf("re-parse of %s: %v", b, err)
		}
		if diff := cmp.Diff(c, again); diff != "" {
			t.Fatalf("round trip (-first +second):\n%s", diff)
		}
	})
}
