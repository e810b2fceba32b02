package config

import (
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/gopcua/opcua/ua"
)

// build walks a decoded document, fills a Config starting from Default,
// and reports what the schema cannot check. It tolerates any shape: a
// field of the wrong type is reported and left at its default, so that
// one pass finds every problem.
func build(doc any) (Config, []Problem) {
	c := Default()
	w := &walker{}
	root, ok := doc.(map[string]any)
	if !ok {
		w.add("/", "the document must be a JSON object, e.g. {} for all defaults")
		return c, w.ps
	}
	o := obj{w: w, path: "/", m: root}

	o.boolean("dev_allow_http", &c.DevAllowHTTP)
	if o.str("server", &c.Server) && c.Server != "" {
		w.checkServer(o.at("server"), c.Server, c.DevAllowHTTP)
	}
	o.absPath("server_ca_file", &c.ServerCAFile, false)
	o.absPath("state_dir", &c.StateDir, true)

	if l, ok := o.obj("log"); ok {
		var level string
		if l.str("level", &level) {
			for lv, name := range levelNames {
				if name == level {
					c.Log.Level = lv
				}
			}
		}
		l.str("format", (*string)(&c.Log.Format))
	}

	if m, ok := o.obj("metrics"); ok {
		if m.str("listen", &c.Metrics.Listen) {
			w.checkListen(m.at("listen"), c.Metrics.Listen)
		}
	}

	if m, ok := o.obj("mqtt"); ok {
		m.duration("keepalive", &c.MQTT.KeepAlive, 5*time.Second, 20*time.Minute)
		m.duration("connect_timeout", &c.MQTT.ConnectTimeout, time.Second, 5*time.Minute)
		if r, ok := m.obj("reconnect"); ok {
			minOK := r.duration("min_backoff", &c.MQTT.Reconnect.Min, 100*time.Millisecond, time.Hour) || !r.has("min_backoff")
			maxOK := r.duration("max_backoff", &c.MQTT.Reconnect.Max, 100*time.Millisecond, time.Hour) || !r.has("max_backoff")
			if minOK && maxOK && c.MQTT.Reconnect.Min > c.MQTT.Reconnect.Max {
				w.add(r.at("min_backoff"), "%s is longer than max_backoff (%s); lower min_backoff or raise max_backoff", dur(c.MQTT.Reconnect.Min), dur(c.MQTT.Reconnect.Max))
			}
			r.number("jitter", &c.MQTT.Reconnect.Jitter)
		}
		if b, ok := m.obj("batch"); ok {
			b.integer("max_messages", &c.MQTT.Batch.MaxMessages)
			b.duration("max_delay", &c.MQTT.Batch.MaxDelay, 0, time.Minute)
		}
		m.integer("inflight_window", &c.MQTT.InflightWindow)
	}

	if q, ok := o.obj("queue"); ok {
		q.absPath("dir", &c.Queue.Dir, false)
		maxOK := q.integer("max_mb", &c.Queue.MaxMB) || !q.has("max_mb")
		segOK := q.integer("segment_mb", &c.Queue.SegmentMB) || !q.has("segment_mb")
		switch {
		case maxOK && c.Queue.MaxMB < 1:
			w.add(q.at("max_mb"), "%d MiB leaves no room for data; use at least 1", c.Queue.MaxMB)
		case maxOK && segOK && c.Queue.SegmentMB > c.Queue.MaxMB:
			w.add(q.at("segment_mb"), "%d MiB is larger than max_mb (%d MiB); a segment must fit in the queue, lower segment_mb or raise max_mb", c.Queue.SegmentMB, c.Queue.MaxMB)
		}
		q.duration("sync_interval", &c.Queue.SyncInterval, 0, time.Second)
	}

	if u, ok := o.obj("opcua"); ok {
		w.buildOPCUA(u, &c.OPCUA)
	}

	if r, ok := o.obj("remote_access"); ok {
		if cs, ok := r.obj("consent"); ok {
			cs.str("mode", (*string)(&c.RemoteAccess.Consent.Mode))
			cs.absPath("path", &c.RemoteAccess.Consent.Path, false)
		}
		switch mode := c.RemoteAccess.Consent.Mode; {
		case (mode == ConsentFile || mode == ConsentGPIO) && c.RemoteAccess.Consent.Path == "":
			w.add("/remote_access/consent/path", "consent mode %q needs the path of the file or GPIO value that must read \"on\"; set path or use mode none", mode)
		case mode == ConsentNone && c.RemoteAccess.Consent.Path != "":
			w.add("/remote_access/consent/path", "is ignored while consent mode is none; set mode to file or gpio, or remove path")
		}
		if wg, ok := r.obj("wireguard"); ok {
			wg.integer("listen_port", &c.RemoteAccess.WireGuard.ListenPort)
		}
		r.str("ssc_l3_mode", (*string)(&c.RemoteAccess.SSCL3Mode))
	}

	if r, ok := o.obj("rules"); ok {
		r.absPath("running_hours_state_file", &c.Rules.RunningHoursStateFile, false)
	}
	return c, w.ps
}

func (w *walker) buildOPCUA(u obj, dst *OPCUA) {
	names := map[string]string{} // endpoint name → path of its first use
	for _, item := range u.array("endpoints") {
		e, ok := item.asObj()
		if !ok {
			continue
		}
		ep := Endpoint{SecurityMode: SecurityModeNone, SecurityPolicy: SecurityPolicyNone, Auth: Auth{Type: AuthAnonymous}}
		if e.required("name", &ep.Name) {
			if first, dup := names[ep.Name]; dup {
				w.add(e.at("name"), "endpoint name %q is already used by %s; names must be unique", ep.Name, first)
			} else {
				names[ep.Name] = e.at("name")
			}
		}
		if e.required("url", &ep.URL) {
			w.checkOPCUAURL(e.at("url"), ep.URL)
		}
		modeOK := e.str("security_mode", (*string)(&ep.SecurityMode))
		policyOK := e.str("security_policy", (*string)(&ep.SecurityPolicy))
		knownMode := ep.SecurityMode == SecurityModeNone || ep.SecurityMode == SecurityModeSign || ep.SecurityMode == SecurityModeSignAndEncrypt
		knownPolicy := ep.SecurityPolicy == SecurityPolicyNone || ep.SecurityPolicy == SecurityPolicyBasic256Sha256
		if (modeOK || policyOK) && knownMode && knownPolicy {
			switch {
			case ep.SecurityMode != SecurityModeNone && ep.SecurityPolicy == SecurityPolicyNone:
				w.add(e.at("security_policy"), "security_mode %s needs security_policy %s", ep.SecurityMode, SecurityPolicyBasic256Sha256)
			case ep.SecurityMode == SecurityModeNone && ep.SecurityPolicy != SecurityPolicyNone:
				w.add(e.at("security_mode"), "security_policy %s needs security_mode Sign or SignAndEncrypt; set both, or set the policy to None", ep.SecurityPolicy)
			}
		}
		if a, ok := e.obj("auth"); ok {
			a.str("type", (*string)(&ep.Auth.Type))
			a.str("username", &ep.Auth.Username)
			a.absPath("password_file", &ep.Auth.PasswordFile, false)
			a.absPath("cert_file", &ep.Auth.CertFile, false)
			a.absPath("key_file", &ep.Auth.KeyFile, false)
			w.checkAuth(a, ep.Auth)
			if ep.Auth.Type == AuthCertificate && ep.SecurityMode == SecurityModeNone && knownMode {
				w.add(a.at("type"), "certificate login needs security_mode Sign or SignAndEncrypt with security_policy %s (the user token is signed with the server's certificate and nonce); set both on this endpoint", SecurityPolicyBasic256Sha256)
			}
		}
		dst.Endpoints = append(dst.Endpoints, ep)
	}

	nodes := map[string]string{} // canonical node ID → path of its first use
	for _, item := range u.array("overrides") {
		o, ok := item.asObj()
		if !ok {
			continue
		}
		var ov Override
		if o.required("node_id", &ov.NodeID) {
			if id, err := ua.ParseNodeID(ov.NodeID); err != nil {
				w.add(o.at("node_id"), "%q is not an OPC-UA node ID (%v); write e.g. \"ns=2;s=Spindle.Speed\" or \"i=2258\"", ov.NodeID, err)
			} else if first, dup := nodes[id.String()]; dup {
				w.add(o.at("node_id"), "node %s is already overridden by %s; merge the two overrides", ov.NodeID, first)
			} else {
				nodes[id.String()] = o.at("node_id")
			}
		}
		o.duration("sampling_interval", &ov.SamplingInterval, 10*time.Millisecond, time.Hour)
		if d, ok := o.obj("deadband"); ok {
			db := Deadband{}
			typeOK := d.str("type", (*string)(&db.Type))
			valueOK := d.number("value", &db.Value)
			if typeOK && valueOK && db.Type == DeadbandPercent && db.Value > 100 {
				w.add(d.at("value"), "%v%% is more than the whole range; a percent deadband is 0..100", db.Value)
			}
			ov.Deadband = &db
		}
		o.boolean("disabled", &ov.Disabled)
		dst.Overrides = append(dst.Overrides, ov)
	}
}

// checkAuth reports fields missing for, or foreign to, the auth type.
func (w *walker) checkAuth(a obj, auth Auth) {
	// Decide on the raw strings: a present but malformed value (a relative
	// path) is reported by absPath, not as missing or unused.
	raw := func(field string) string { s, _ := a.m[field].(string); return s }
	need := func(field, what string) {
		if raw(field) == "" {
			w.add(a.at(field), "auth type %s needs %s; add it", auth.Type, what)
		}
	}
	unused := func(field string, useWith AuthType) {
		if raw(field) != "" {
			w.add(a.at(field), "is only used with auth type %s; remove it or change type", useWith)
		}
	}
	switch auth.Type {
	case AuthUsername:
		need("username", "the user name")
		need("password_file", "the absolute path of a file (0600) holding the password")
		unused("cert_file", AuthCertificate)
		unused("key_file", AuthCertificate)
	case AuthCertificate:
		need("cert_file", "the absolute path of the user's X.509 certificate (PEM or DER, RSA)")
		need("key_file", "the absolute path of the PEM private key (0600)")
		unused("username", AuthUsername)
		unused("password_file", AuthUsername)
	case AuthAnonymous:
		unused("username", AuthUsername)
		unused("password_file", AuthUsername)
		unused("cert_file", AuthCertificate)
		unused("key_file", AuthCertificate)
	}
}

func (w *walker) checkServer(path, s string, allowHTTP bool) {
	u, err := url.Parse(s)
	if err != nil {
		w.add(path, "%q is not a URL (%v); write https://host[:port]", s, err)
		return
	}
	switch {
	case u.Scheme == "http" && !allowHTTP:
		w.add(path, "%q is plain http; use https://, or set dev_allow_http for a development server", s)
	case u.Scheme != "https" && u.Scheme != "http":
		w.add(path, "%q is not an https URL; write https://host[:port]", s)
	case u.Host == "" || u.Hostname() == "":
		w.add(path, "%q has no host; write https://host[:port]", s)
	case u.User != nil:
		w.add(path, "%q contains credentials; remove them, the agent authenticates with its certificate", s)
	case u.RawQuery != "" || u.Fragment != "":
		w.add(path, "%q has a query or fragment; give only the base URL, https://host[:port][/path]", s)
	default:
		if p := u.Port(); p != "" {
			w.checkPort(path, s, p, false)
		}
	}
}

func (w *walker) checkOPCUAURL(path, s string) {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		w.add(path, "%q is not a URL (%v); write opc.tcp://host:port", s, err)
	case u.Scheme != "opc.tcp":
		w.add(path, "%q: scheme must be opc.tcp; write opc.tcp://host:port[/path]", s)
	case u.Hostname() == "":
		w.add(path, "%q has no host; write opc.tcp://host:port[/path]", s)
	case u.Port() != "":
		w.checkPort(path, s, u.Port(), false)
	}
}

func (w *walker) checkListen(path, s string) {
	if s == MetricsOff {
		return
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		w.add(path, "%q is not host:port (%v); write e.g. 127.0.0.1:9101, or off to disable metrics", s, err)
		return
	}
	if strings.ContainsAny(host, " \t/") {
		w.add(path, "%q: %q is not a host name or IP address", s, host)
		return
	}
	w.checkPort(path, s, port, true)
}

func (w *walker) checkPort(path, s, port string, listen bool) {
	n, err := strconv.Atoi(port)
	switch {
	case err != nil || n < 0 || n > 65535:
		w.add(path, "%q: port %q is not a number from 1 to 65535", s, port)
	case n == 0 && listen:
		w.add(path, "%q: port 0 would pick a random port that Prometheus cannot find; choose a fixed port", s)
	case n == 0:
		w.add(path, "%q: port 0 is not a valid destination; use the server's port", s)
	}
}

// walker collects problems while build reads the document.
type walker struct {
	ps []Problem
}

func (w *walker) add(path, format string, args ...any) {
	w.ps = append(w.ps, Problem{Path: path, Message: fmt.Sprintf(format, args...)})
}

// value is a node of the decoded document with its path.
type value struct {
	w    *walker
	path string
	v    any
}

func (v value) asObj() (obj, bool) {
	m, ok := v.v.(map[string]any)
	if !ok {
		v.w.add(v.path, "wrong type: got %s, want object", typeName(v.v))
	}
	return obj{w: v.w, path: v.path, m: m}, ok
}

// obj is an object of the decoded document. Its accessors copy a present
// field of the right type into dst and report whether they did; a field
// of the wrong type is reported and dst is left alone.
type obj struct {
	w    *walker
	path string
	m    map[string]any
}

func (o obj) at(key string) string { return pointer(o.path, key) }

func (o obj) has(key string) bool {
	_, ok := o.m[key]
	return ok
}

func (o obj) get(key string) (any, bool) {
	v, ok := o.m[key]
	return v, ok
}

func (o obj) wrongType(key string, v any, want string) {
	o.w.add(o.at(key), "wrong type: got %s, want %s", typeName(v), want)
}

func (o obj) obj(key string) (obj, bool) {
	v, ok := o.get(key)
	if !ok {
		return obj{}, false
	}
	return value{w: o.w, path: o.at(key), v: v}.asObj()
}

func (o obj) array(key string) []value {
	v, ok := o.get(key)
	if !ok {
		return nil
	}
	a, ok := v.([]any)
	if !ok {
		o.wrongType(key, v, "array")
		return nil
	}
	out := make([]value, len(a))
	for i, item := range a {
		out[i] = value{w: o.w, path: pointer(o.at(key), strconv.Itoa(i)), v: item}
	}
	return out
}

func (o obj) str(key string, dst *string) bool {
	v, ok := o.get(key)
	if !ok {
		return false
	}
	s, ok := v.(string)
	if !ok {
		o.wrongType(key, v, "string")
		return false
	}
	*dst = s
	return true
}

// required is str for a field that must be present and non-empty.
func (o obj) required(key string, dst *string) bool {
	if _, ok := o.get(key); !ok {
		o.w.add(o.at(key), "required field is missing; add it")
		return false
	}
	if !o.str(key, dst) {
		return false
	}
	if *dst == "" {
		o.w.add(o.at(key), "must not be empty")
		return false
	}
	return true
}

// absPath is str for a path that must be absolute (and, if required,
// present and non-empty); an empty optional path is allowed.
func (o obj) absPath(key string, dst *string, nonEmpty bool) bool {
	var s string
	if !o.str(key, &s) {
		return false
	}
	switch {
	case s == "" && nonEmpty:
		o.w.add(o.at(key), "must not be empty; give an absolute path or leave the field out for the default")
		return false
	case s == "":
	case !filepath.IsAbs(s):
		o.w.add(o.at(key), "%q is a relative path; use an absolute path (the agent's working directory is not defined)", s)
		return false
	case strings.ContainsRune(s, 0):
		o.w.add(o.at(key), "contains a NUL byte; remove it")
		return false
	}
	*dst = s
	return true
}

func (o obj) boolean(key string, dst *bool) bool {
	v, ok := o.get(key)
	if !ok {
		return false
	}
	b, ok := v.(bool)
	if !ok {
		o.wrongType(key, v, "boolean")
		return false
	}
	*dst = b
	return true
}

func (o obj) number(key string, dst *float64) bool {
	v, ok := o.get(key)
	if !ok {
		return false
	}
	n, ok := v.(json.Number)
	if !ok {
		o.wrongType(key, v, "number")
		return false
	}
	f, err := n.Float64()
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		o.w.add(o.at(key), "%s is out of range; use a smaller number", n)
		return false
	}
	*dst = f
	return true
}

// integer accepts any JSON number with an integral value that fits an
// int32 (JSON Schema counts 1.0 and 1e2 as integers too).
func (o obj) integer(key string, dst *int) bool {
	v, ok := o.get(key)
	if !ok {
		return false
	}
	n, ok := v.(json.Number)
	if !ok {
		o.wrongType(key, v, "integer")
		return false
	}
	if i, err := strconv.ParseInt(string(n), 10, 32); err == nil {
		*dst = int(i)
		return true
	}
	f, err := n.Float64()
	if err != nil || f != math.Trunc(f) || f < math.MinInt32 || f > math.MaxInt32 {
		o.w.add(o.at(key), "%s is not a whole number in range; write an integer such as 64", n)
		return false
	}
	*dst = int(f)
	return true
}

// duration reads a Go duration string within [lo, hi].
func (o obj) duration(key string, dst *time.Duration, lo, hi time.Duration) bool {
	var s string
	if !o.str(key, &s) {
		return false
	}
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		o.w.add(o.at(key), "%q is not a Go duration; write e.g. \"500ms\", \"5s\", \"2m\" or \"1h30m\"", s)
		return false
	case d < lo || d > hi:
		o.w.add(o.at(key), "%s is out of range; use a duration from %s to %s", dur(d), dur(lo), dur(hi))
		return false
	}
	*dst = d
	return true
}

func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case json.Number:
		return "number"
	case string:
		return "string"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}
