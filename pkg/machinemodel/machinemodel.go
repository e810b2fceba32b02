// Package machinemodel defines a machine model's templates — which remote
// connections a machine allows and which OPC-UA data points it exposes —
// and validates them. The control plane stores them per model; the agent
// receives them in its configuration.
package machinemodel

import (
	"fmt"
	"math"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/gopcua/opcua/ua"
)

// Connection types of remote access (seed 000).
const (
	ConnVNC      = "vnc"
	ConnDataLink = "data_link"
	ConnSSC      = "ssc"
)

// RemoteAccess is a machine model's remote-access template.
type RemoteAccess struct {
	ConnectionTypes []string `json:"connection_types"`
	VNCTargets      []string `json:"vnc_targets,omitempty"`       // host:port
	DataLinkTargets []string `json:"data_link_targets,omitempty"` // host:port
	MachineSubnets  []string `json:"machine_subnets,omitempty"`   // CIDR
	// SSCPorts limits SSC to these protocols/ports (see ParsePortRule);
	// empty: everything in the machine subnets.
	SSCPorts []string `json:"ssc_ports,omitempty"`
}

// DataPoint is one OPC-UA variable the agent collects.
//
// The threshold fields drive the agent's edge rules (agent/rules): a value
// above WarnAbove/AlarmAbove or below WarnBelow/AlarmBelow raises a warning
// or alarm; a raised level clears only once the value is back past the
// threshold by Hysteresis (threshold − hysteresis for "above",
// threshold + hysteresis for "below"); both raising and clearing must hold
// for DelayMS before they take effect. Role marks a point the agent
// accumulates: running hours from a running condition, or energy from a
// kWh counter or a kW power value. Every rules field is optional; a
// document without them is valid as before.
type DataPoint struct {
	NodeID             string   `json:"node_id"`
	Name               string   `json:"name"`
	Unit               string   `json:"unit,omitempty"`
	SamplingIntervalMS uint32   `json:"sampling_interval_ms,omitempty"`
	DeadbandType       string   `json:"deadband_type,omitempty"` // none, absolute, percent
	DeadbandValue      float64  `json:"deadband_value,omitempty"`
	WarnAbove          *float64 `json:"warn_above,omitempty"`
	AlarmAbove         *float64 `json:"alarm_above,omitempty"`
	WarnBelow          *float64 `json:"warn_below,omitempty"`
	AlarmBelow         *float64 `json:"alarm_below,omitempty"`
	Hysteresis         float64  `json:"hysteresis,omitempty"` // ≥ 0, in the point's unit
	DelayMS            uint32   `json:"delay_ms,omitempty"`   // ≤ MaxDelayMS
	Role               string   `json:"role,omitempty"`       // "", running, energy_kwh, power_kw
	// OpenCaseOnAlarm: the control plane opens an internal service case on
	// the asset when this point reaches the alarm level (if the operator
	// tenant has Operator Internal Service; at most one open automatic case
	// per asset and point).
	OpenCaseOnAlarm bool `json:"open_case_on_alarm,omitempty"`
}

// Roles of a data point for the agent's accumulators.
const (
	RoleRunning   = "running"    // value ≠ 0 means the machine runs: running hours
	RoleEnergyKWh = "energy_kwh" // monotonic energy counter in kWh
	RolePowerKW   = "power_kw"   // power in kW, integrated over time to kWh
)

// HasThresholds reports whether any threshold is set.
func (d DataPoint) HasThresholds() bool {
	return d.WarnAbove != nil || d.AlarmAbove != nil || d.WarnBelow != nil || d.AlarmBelow != nil
}

// OPCUA is a machine model's OPC-UA template.
type OPCUA struct {
	EndpointURL  string      `json:"endpoint_url"`
	SecurityMode string      `json:"security_mode"` // None, Sign, SignAndEncrypt
	DataPoints   []DataPoint `json:"data_points"`
}

// Problem is one validation finding with the path of the offending field.
type Problem struct {
	Path    string
	Message string
}

func (p Problem) String() string { return p.Path + ": " + p.Message }

// Problems is a list of findings; it is an error when non-empty.
type Problems []Problem

func (ps Problems) Error() string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, "; ")
}

// Err returns ps as an error, or nil when empty.
func (ps Problems) Err() error {
	if len(ps) == 0 {
		return nil
	}
	return ps
}

// Limits.
const (
	MaxTargets    = 32
	MaxDataPoints = 20000
	MaxDelayMS    = 3_600_000 // one hour
)

// Validate checks a remote-access template.
func (r RemoteAccess) Validate() Problems {
	var ps Problems
	add := func(path, f string, a ...any) { ps = append(ps, Problem{path, fmt.Sprintf(f, a...)}) }
	seen := map[string]bool{}
	for i, c := range r.ConnectionTypes {
		switch c {
		case ConnVNC, ConnDataLink, ConnSSC:
		default:
			add(fmt.Sprintf("remote_access.connection_types[%d]", i), "unknown connection type %q; use vnc, data_link or ssc", c)
		}
		if seen[c] {
			add(fmt.Sprintf("remote_access.connection_types[%d]", i), "%q is listed twice", c)
		}
		seen[c] = true
	}
	checkTargets := func(name string, ts []string, needed bool) {
		path := "remote_access." + name
		if needed && len(ts) == 0 {
			add(path, "at least one host:port target is needed for this connection type")
		}
		if !needed && len(ts) > 0 {
			add(path, "targets given but the connection type is not allowed")
		}
		if len(ts) > MaxTargets {
			add(path, "at most %d targets", MaxTargets)
		}
		for i, t := range ts {
			if err := checkHostPort(t); err != nil {
				add(fmt.Sprintf("%s[%d]", path, i), "%v", err)
			}
		}
	}
	checkTargets("vnc_targets", r.VNCTargets, seen[ConnVNC])
	checkTargets("data_link_targets", r.DataLinkTargets, seen[ConnDataLink])
	if seen[ConnSSC] && len(r.MachineSubnets) == 0 {
		add("remote_access.machine_subnets", "SSC needs at least one machine subnet (CIDR, e.g. 192.168.0.0/24)")
	}
	if !seen[ConnSSC] && len(r.MachineSubnets) > 0 {
		add("remote_access.machine_subnets", "subnets given but SSC is not allowed")
	}
	for i, s := range r.MachineSubnets {
		p, err := netip.ParsePrefix(s)
		switch {
		case err != nil:
			add(fmt.Sprintf("remote_access.machine_subnets[%d]", i), "%q is not a CIDR subnet like 192.168.0.0/24", s)
		case p.Masked() != p:
			add(fmt.Sprintf("remote_access.machine_subnets[%d]", i), "%q has host bits set; did you mean %s?", s, p.Masked())
		case p.Bits() < 8 && p.Addr().Is4():
			add(fmt.Sprintf("remote_access.machine_subnets[%d]", i), "%q is too large; machine subnets are at most /8", s)
		}
	}
	return ps
}

// Targets returns the template's host:port targets of a connection type
// (none for SSC, which works on subnets).
func (r RemoteAccess) Targets(conn string) []string {
	switch conn {
	case ConnVNC:
		return r.VNCTargets
	case ConnDataLink:
		return r.DataLinkTargets
	}
	return nil
}

// Allows reports whether the template allows connection type conn to target.
func (r RemoteAccess) Allows(conn, target string) bool {
	var ts []string
	switch conn {
	case ConnVNC:
		ts = r.VNCTargets
	case ConnDataLink:
		ts = r.DataLinkTargets
	default:
		return false
	}
	ok := false
	for _, c := range r.ConnectionTypes {
		ok = ok || c == conn
	}
	if !ok {
		return false
	}
	for _, t := range ts {
		if t == target {
			return true
		}
	}
	return false
}

func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" {
		return fmt.Errorf("%q is not host:port (e.g. 10.0.0.10:5900)", s)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q: port must be 1..65535", s)
	}
	if _, err := netip.ParseAddr(host); err != nil && !validHostname(host) {
		return fmt.Errorf("%q: %q is neither an IP address nor a host name", s, host)
	}
	return nil
}

func validHostname(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || strings.HasPrefix(label, "-") || strings.HasSuffix(label, "-") {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}

// Validate checks an OPC-UA template. An empty template (no endpoint, no
// data points) is valid: the model has no OPC-UA data.
func (o OPCUA) Validate() Problems {
	var ps Problems
	add := func(path, f string, a ...any) { ps = append(ps, Problem{path, fmt.Sprintf(f, a...)}) }
	if o.EndpointURL == "" && len(o.DataPoints) == 0 && o.SecurityMode == "" {
		return nil
	}
	u, err := url.Parse(o.EndpointURL)
	if err != nil || u.Scheme != "opc.tcp" || u.Host == "" {
		add("opcua.endpoint_url", "%q is not an OPC-UA endpoint like opc.tcp://10.0.0.5:4840", o.EndpointURL)
	}
	switch o.SecurityMode {
	case "None", "Sign", "SignAndEncrypt":
	default:
		add("opcua.security_mode", "%q: use None, Sign or SignAndEncrypt", o.SecurityMode)
	}
	if len(o.DataPoints) > MaxDataPoints {
		add("opcua.data_points", "at most %d data points", MaxDataPoints)
	}
	names := map[string]bool{}
	nodes := map[string]bool{}
	for i, d := range o.DataPoints {
		p := fmt.Sprintf("opcua.data_points[%d]", i)
		if !validNodeID(d.NodeID) {
			add(p+".node_id", "%q is not an OPC-UA node ID like ns=2;s=Spindle.Speed", d.NodeID)
		} else if nodes[d.NodeID] {
			add(p+".node_id", "node %s is listed twice", d.NodeID)
		}
		nodes[d.NodeID] = true
		if strings.TrimSpace(d.Name) == "" || len(d.Name) > 100 {
			add(p+".name", "a name of 1..100 characters is required")
		} else if names[d.Name] {
			add(p+".name", "name %q is used twice", d.Name)
		}
		names[d.Name] = true
		if len(d.Unit) > 20 {
			add(p+".unit", "at most 20 characters")
		}
		if d.SamplingIntervalMS > 3_600_000 {
			add(p+".sampling_interval_ms", "at most 3600000 (one hour)")
		}
		switch d.DeadbandType {
		case "", "none":
			if d.DeadbandValue != 0 {
				add(p+".deadband_value", "set deadband_type to absolute or percent to use a deadband")
			}
		case "absolute":
			if d.DeadbandValue < 0 || math.IsNaN(d.DeadbandValue) || math.IsInf(d.DeadbandValue, 0) {
				add(p+".deadband_value", "must be a finite number ≥ 0")
			}
		case "percent":
			if !(d.DeadbandValue >= 0 && d.DeadbandValue <= 100) {
				add(p+".deadband_value", "a percent deadband must be between 0 and 100")
			}
		default:
			add(p+".deadband_type", "%q: use none, absolute or percent", d.DeadbandType)
		}
		for _, pr := range d.ValidateRules() {
			add(p+"."+pr.Path, "%s", pr.Message)
		}
	}
	return ps
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// ValidateRules checks the rules fields of one data point (thresholds,
// hysteresis, delay, role); paths are relative to the data point, e.g.
// "warn_below". OPCUA.Validate includes these problems under
// "opcua.data_points[i]".
func (d DataPoint) ValidateRules() Problems {
	var ps Problems
	add := func(path, f string, a ...any) { ps = append(ps, Problem{path, fmt.Sprintf(f, a...)}) }
	thresholds := []struct {
		name string
		v    *float64
	}{{"warn_above", d.WarnAbove}, {"alarm_above", d.AlarmAbove}, {"warn_below", d.WarnBelow}, {"alarm_below", d.AlarmBelow}}
	ok := true // all thresholds finite: the order checks make sense
	for _, th := range thresholds {
		if th.v != nil && !finite(*th.v) {
			add(th.name, "must be a finite number")
			ok = false
		}
	}
	if ok {
		if d.WarnAbove != nil && d.AlarmAbove != nil && *d.WarnAbove > *d.AlarmAbove {
			add("warn_above", "warning threshold %g is above the alarm threshold %g", *d.WarnAbove, *d.AlarmAbove)
		}
		if d.WarnBelow != nil && d.AlarmBelow != nil && *d.WarnBelow < *d.AlarmBelow {
			add("warn_below", "warning threshold %g is below the alarm threshold %g; warn_below must be ≥ alarm_below", *d.WarnBelow, *d.AlarmBelow)
		}
		// Every "below" threshold must lie under every "above" threshold
		// (with room for the hysteresis), or a value could be too high and
		// too low at once.
		hi, lo := math.Inf(1), math.Inf(-1)
		hiName, loName := "", ""
		for _, th := range thresholds[:2] {
			if th.v != nil && *th.v < hi {
				hi, hiName = *th.v, th.name
			}
		}
		for _, th := range thresholds[2:] {
			if th.v != nil && *th.v > lo {
				lo, loName = *th.v, th.name
			}
		}
		if hiName != "" && loName != "" {
			switch {
			case lo >= hi:
				add(loName, "%g must be below %s (%g)", lo, hiName, hi)
			case finite(d.Hysteresis) && d.Hysteresis >= 0 && d.Hysteresis >= hi-lo:
				add("hysteresis", "%g is too large: it must be less than the gap between %s (%g) and %s (%g)", d.Hysteresis, loName, lo, hiName, hi)
			}
		}
	}
	if !finite(d.Hysteresis) || d.Hysteresis < 0 {
		add("hysteresis", "must be a finite number ≥ 0")
	} else if d.Hysteresis != 0 && !d.HasThresholds() {
		add("hysteresis", "set a threshold (warn_above, alarm_above, warn_below or alarm_below) to use a hysteresis")
	}
	if d.DelayMS > MaxDelayMS {
		add("delay_ms", "at most %d (one hour)", MaxDelayMS)
	} else if d.DelayMS != 0 && !d.HasThresholds() {
		add("delay_ms", "set a threshold (warn_above, alarm_above, warn_below or alarm_below) to use a delay")
	}
	unit := func(want string) {
		if d.Unit != "" && !strings.EqualFold(d.Unit, want) {
			add("unit", "a point with role %s must be in %s, not %q (convert on the PLC or leave the role empty)", d.Role, want, d.Unit)
		}
	}
	switch d.Role {
	case "", RoleRunning:
	case RoleEnergyKWh:
		unit("kWh")
	case RolePowerKW:
		unit("kW")
	default:
		add("role", "%q: use running, energy_kwh or power_kw, or leave it empty", d.Role)
	}
	return ps
}

// validNodeID accepts the OPC-UA string notation [ns=N;]{i|s|g|b}=VALUE.
func validNodeID(id string) bool {
	rest := id
	if strings.HasPrefix(rest, "ns=") {
		i := strings.IndexByte(rest, ';')
		if i < 0 {
			return false
		}
		if _, err := strconv.ParseUint(rest[3:i], 10, 16); err != nil {
			return false
		}
		rest = rest[i+1:]
	}
	if len(rest) < 3 || rest[1] != '=' || !strings.ContainsRune("isgb", rune(rest[0])) {
		return false
	}
	_, err := ua.ParseNodeID(id)
	return err == nil
}
