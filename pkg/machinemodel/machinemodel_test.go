package machinemodel

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
)

func f(v float64) *float64 { return &v }

func TestRemoteAccessValidate(t *testing.T) {
	good := RemoteAccess{ConnectionTypes: []string{"vnc", "data_link", "ssc"}, VNCTargets: []string{"10.0.0.10:5900"},
		DataLinkTargets: []string{"10.0.0.20:502", "plc.local:102"}, MachineSubnets: []string{"10.0.0.0/24"}}
	if ps := good.Validate(); len(ps) != 0 {
		t.Fatalf("good template: %v", ps)
	}
	for _, tc := range []struct {
		name string
		ra   RemoteAccess
		path string
		msg  string
	}{
		{"unknown type", RemoteAccess{ConnectionTypes: []string{"telnet"}}, "remote_access.connection_types[0]", "unknown connection type"},
		{"duplicate type", RemoteAccess{ConnectionTypes: []string{"vnc", "vnc"}, VNCTargets: []string{"1.2.3.4:5900"}}, "remote_access.connection_types[1]", "twice"},
		{"vnc without target", RemoteAccess{ConnectionTypes: []string{"vnc"}}, "remote_access.vnc_targets", "at least one"},
		{"target without type", RemoteAccess{VNCTargets: []string{"1.2.3.4:5900"}}, "remote_access.vnc_targets", "not allowed"},
		{"bad port", RemoteAccess{ConnectionTypes: []string{"data_link"}, DataLinkTargets: []string{"1.2.3.4:70000"}}, "remote_access.data_link_targets[0]", "port"},
		{"no port", RemoteAccess{ConnectionTypes: []string{"data_link"}, DataLinkTargets: []string{"1.2.3.4"}}, "remote_access.data_link_targets[0]", "host:port"},
		{"bad host", RemoteAccess{ConnectionTypes: []string{"vnc"}, VNCTargets: []string{"bad_host!:5900"}}, "remote_access.vnc_targets[0]", "neither"},
		{"ssc without subnet", RemoteAccess{ConnectionTypes: []string{"ssc"}}, "remote_access.machine_subnets", "at least one"},
		{"bad cidr", RemoteAccess{ConnectionTypes: []string{"ssc"}, MachineSubnets: []string{"10.0.0.0/33"}}, "remote_access.machine_subnets[0]", "CIDR"},
		{"subnet too large", RemoteAccess{ConnectionTypes: []string{"ssc"}, MachineSubnets: []string{"10.0.0.0/8"}}, "remote_access.machine_subnets[0]", "at most /16"},
		{"ipv6 subnet", RemoteAccess{ConnectionTypes: []string{"ssc"}, MachineSubnets: []string{"fd00::/64"}}, "remote_access.machine_subnets[0]", "IPv4"},
		{"ports without ssc", RemoteAccess{ConnectionTypes: []string{"vnc"}, VNCTargets: []string{"1.2.3.4:5900"}, SSCPorts: []string{"tcp/102"}}, "remote_access.ssc_ports", "not allowed"},
		{"bad port rule", RemoteAccess{ConnectionTypes: []string{"ssc"}, MachineSubnets: []string{"10.0.0.0/24"}, SSCPorts: []string{"sctp/1"}}, "remote_access.ssc_ports[0]", "tcp/PORT"},
		{"bad port range", RemoteAccess{ConnectionTypes: []string{"ssc"}, MachineSubnets: []string{"10.0.0.0/24"}, SSCPorts: []string{"tcp/90-80"}}, "remote_access.ssc_ports[0]", "LOW"},
		{"port zero", RemoteAccess{ConnectionTypes: []string{"ssc"}, MachineSubnets: []string{"10.0.0.0/24"}, SSCPorts: []string{"udp/0"}}, "remote_access.ssc_ports[0]", "1-65535"},
		{"host bits", RemoteAccess{ConnectionTypes: []string{"ssc"}, MachineSubnets: []string{"10.0.0.5/24"}}, "remote_access.machine_subnets[0]", "10.0.0.0/24"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ps := tc.ra.Validate()
			for _, p := range ps {
				if p.Path == tc.path && strings.Contains(p.Message, tc.msg) {
					return
				}
			}
			t.Errorf("want problem at %s mentioning %q, got %v", tc.path, tc.msg, ps)
		})
	}
}

func TestPortRules(t *testing.T) {
	rules, err := ParsePortRules([]string{"tcp/102", "udp/161", "tcp/8000-8100", "icmp"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		proto uint8
		port  uint16
		want  bool
	}{
		{ProtoTCP, 102, true}, {ProtoTCP, 103, false}, {ProtoUDP, 102, false}, {ProtoUDP, 161, true},
		{ProtoTCP, 8000, true}, {ProtoTCP, 8100, true}, {ProtoTCP, 8101, false}, {ProtoTCP, 7999, false},
		{ProtoICMP, 0, true}, {47, 0, false},
	} {
		if got := PortsAllow(rules, tc.proto, tc.port); got != tc.want {
			t.Errorf("PortsAllow(%d, %d) = %v, want %v", tc.proto, tc.port, got, tc.want)
		}
	}
	if !PortsAllow(nil, ProtoUDP, 9) {
		t.Error("no rules must allow everything")
	}
	if PortsAllow([]PortRule{{Proto: ProtoTCP, Lo: 1, Hi: 65535}}, ProtoICMP, 0) {
		t.Error("a TCP rule must not allow ICMP")
	}
	good := RemoteAccess{ConnectionTypes: []string{"ssc"}, MachineSubnets: []string{"10.0.0.0/16"}, SSCPorts: []string{"tcp/1-65535", "icmp"}}
	if ps := good.Validate(); len(ps) != 0 {
		t.Fatalf("good SSC template: %v", ps)
	}
}

func TestAllows(t *testing.T) {
	ra := RemoteAccess{ConnectionTypes: []string{"vnc", "data_link"}, VNCTargets: []string{"10.0.0.10:5900"}, DataLinkTargets: []string{"10.0.0.20:502"}}
	for _, tc := range []struct {
		conn, target string
		want         bool
	}{
		{"vnc", "10.0.0.10:5900", true},
		{"vnc", "10.0.0.20:502", false},
		{"data_link", "10.0.0.20:502", true},
		{"data_link", "10.0.0.20:503", false},
		{"ssc", "10.0.0.20:502", false},
	} {
		if got := ra.Allows(tc.conn, tc.target); got != tc.want {
			t.Errorf("Allows(%s, %s) = %v, want %v", tc.conn, tc.target, got, tc.want)
		}
	}
}

func TestOPCUAValidate(t *testing.T) {
	good := OPCUA{EndpointURL: "opc.tcp://10.0.0.5:4840", SecurityMode: "None", DataPoints: []DataPoint{
		{NodeID: "ns=2;s=cnc1.SpindleSpeed", Name: "Spindle speed", Unit: "rpm", SamplingIntervalMS: 100, DeadbandType: "absolute", DeadbandValue: 5, WarnAbove: f(9000), AlarmAbove: f(12000)},
		{NodeID: "ns=2;i=17", Name: "Temperature", DeadbandType: "percent", DeadbandValue: 1},
	}}
	if ps := good.Validate(); len(ps) != 0 {
		t.Fatalf("good template: %v", ps)
	}
	if ps := (OPCUA{}).Validate(); len(ps) != 0 {
		t.Fatalf("empty template: %v", ps)
	}
	bad := OPCUA{EndpointURL: "http://x", SecurityMode: "Maybe", DataPoints: []DataPoint{
		{NodeID: "garbage", Name: ""},
		{NodeID: "ns=2;i=1", Name: "A", DeadbandType: "percent", DeadbandValue: 150},
		{NodeID: "ns=2;i=1", Name: "A", DeadbandType: "fuzzy"},
		{NodeID: "ns=2;i=3", Name: "C", WarnAbove: f(10), AlarmAbove: f(5)},
	}}
	ps := bad.Validate()
	for _, want := range []string{"opcua.endpoint_url", "opcua.security_mode", "opcua.data_points[0].node_id", "opcua.data_points[0].name",
		"opcua.data_points[1].deadband_value", "opcua.data_points[2].node_id", "opcua.data_points[2].name", "opcua.data_points[2].deadband_type", "opcua.data_points[3].warn_above"} {
		found := false
		for _, p := range ps {
			found = found || p.Path == want
		}
		if !found {
			t.Errorf("no problem reported at %s; got %v", want, ps)
		}
	}
}

func FuzzTemplates(f *testing.F) {
	f.Add([]byte(`{"connection_types":["vnc"],"vnc_targets":["10.0.0.1:5900"]}`), []byte(`{"endpoint_url":"opc.tcp://a:4840","security_mode":"None","data_points":[{"node_id":"ns=2;i=1","name":"x"}]}`))
	f.Fuzz(func(t *testing.T, ra, op []byte) {
		var r RemoteAccess
		if json.Unmarshal(ra, &r) == nil {
			ps := r.Validate()
			if len(ps) == 0 {
				for _, c := range r.ConnectionTypes {
					if c != ConnVNC && c != ConnDataLink && c != ConnSSC {
						t.Fatalf("accepted unknown connection type %q", c)
					}
				}
			}
		}
		var o OPCUA
		if json.Unmarshal(op, &o) == nil {
			_ = o.Validate()
		}
	})
}

func TestDataPointRulesValidate(t *testing.T) {
	base := func(mod func(*DataPoint)) DataPoint {
		d := DataPoint{NodeID: "ns=2;i=1", Name: "P"}
		mod(&d)
		return d
	}
	for _, tc := range []struct {
		name string
		d    DataPoint
		path string // "" = valid
		msg  string
	}{
		{"no rules", base(func(d *DataPoint) {}), "", ""},
		{"all thresholds", base(func(d *DataPoint) {
			d.WarnAbove, d.AlarmAbove, d.WarnBelow, d.AlarmBelow, d.Hysteresis, d.DelayMS = f(70), f(85), f(10), f(5), 2, 5000
		}), "", ""},
		{"below only", base(func(d *DataPoint) { d.WarnBelow, d.AlarmBelow = f(3), f(1) }), "", ""},
		{"equal warn and alarm", base(func(d *DataPoint) { d.WarnAbove, d.AlarmAbove = f(5), f(5) }), "", ""},
		{"running role", base(func(d *DataPoint) { d.Role = RoleRunning }), "", ""},
		{"energy role kWh", base(func(d *DataPoint) { d.Role, d.Unit = RoleEnergyKWh, "kWh" }), "", ""},
		{"power role no unit", base(func(d *DataPoint) { d.Role = RolePowerKW }), "", ""},
		{"power with thresholds", base(func(d *DataPoint) { d.Role, d.Unit, d.WarnAbove = RolePowerKW, "kW", f(30) }), "", ""},
		{"NaN warn_below", base(func(d *DataPoint) { d.WarnBelow = f(math.NaN()) }), "warn_below", "finite"},
		{"Inf alarm_below", base(func(d *DataPoint) { d.AlarmBelow = f(math.Inf(-1)) }), "alarm_below", "finite"},
		{"warn above alarm", base(func(d *DataPoint) { d.WarnAbove, d.AlarmAbove = f(10), f(5) }), "warn_above", "above the alarm"},
		{"warn below alarm", base(func(d *DataPoint) { d.WarnBelow, d.AlarmBelow = f(1), f(5) }), "warn_below", "≥ alarm_below"},
		{"below over above", base(func(d *DataPoint) { d.WarnAbove, d.WarnBelow = f(10), f(20) }), "warn_below", "must be below warn_above"},
		{"below equals above", base(func(d *DataPoint) { d.AlarmAbove, d.AlarmBelow = f(10), f(10) }), "alarm_below", "must be below alarm_above"},
		{"hysteresis bridges the gap", base(func(d *DataPoint) { d.WarnAbove, d.WarnBelow, d.Hysteresis = f(10), f(5), 5 }), "hysteresis", "too large"},
		{"negative hysteresis", base(func(d *DataPoint) { d.WarnAbove, d.Hysteresis = f(10), -1 }), "hysteresis", "≥ 0"},
		{"NaN hysteresis", base(func(d *DataPoint) { d.WarnAbove, d.Hysteresis = f(10), math.NaN() }), "hysteresis", "finite"},
		{"hysteresis without threshold", base(func(d *DataPoint) { d.Hysteresis = 1 }), "hysteresis", "set a threshold"},
		{"delay without threshold", base(func(d *DataPoint) { d.DelayMS = 1 }), "delay_ms", "set a threshold"},
		{"delay too long", base(func(d *DataPoint) { d.WarnAbove, d.DelayMS = f(1), MaxDelayMS+1 }), "delay_ms", "at most"},
		{"unknown role", base(func(d *DataPoint) { d.Role = "hours" }), "role", "use running"},
		{"energy in Wh", base(func(d *DataPoint) { d.Role, d.Unit = RoleEnergyKWh, "Wh" }), "unit", "kWh"},
		{"power in W", base(func(d *DataPoint) { d.Role, d.Unit = RolePowerKW, "W" }), "unit", "kW"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := OPCUA{EndpointURL: "opc.tcp://10.0.0.5:4840", SecurityMode: "None", DataPoints: []DataPoint{tc.d}}
			ps := o.Validate()
			if tc.path == "" {
				if len(ps) != 0 {
					t.Fatalf("want valid, got %v", ps)
				}
				return
			}
			want := "opcua.data_points[0]." + tc.path
			for _, p := range ps {
				if p.Path == want && strings.Contains(p.Message, tc.msg) {
					return
				}
			}
			t.Errorf("want problem at %s mentioning %q, got %v", want, tc.msg, ps)
		})
	}
}

// TestDataPointJSONCompat: documents written before the rules fields
// existed decode and validate unchanged, and the new fields are omitted
// when unset, so old readers see the same JSON.
func TestDataPointJSONCompat(t *testing.T) {
	old := `{"node_id":"ns=2;s=cnc1.Temperature","name":"Temperature","unit":"°C","sampling_interval_ms":1000,"warn_above":70,"alarm_above":85}`
	var d DataPoint
	if err := json.Unmarshal([]byte(old), &d); err != nil {
		t.Fatal(err)
	}
	if ps := d.ValidateRules(); len(ps) != 0 {
		t.Fatalf("old point: %v", ps)
	}
	out, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != old {
		t.Errorf("round trip changed the document:\n got %s\nwant %s", out, old)
	}
	full := `{"node_id":"ns=2;i=1","name":"P","warn_above":70,"alarm_above":85,"warn_below":10,"alarm_below":5,"hysteresis":2,"delay_ms":5000,"role":"power_kw"}`
	var d2 DataPoint
	if err := json.Unmarshal([]byte(full), &d2); err != nil {
		t.Fatal(err)
	}
	if d2.WarnBelow == nil || *d2.WarnBelow != 10 || *d2.AlarmBelow != 5 || d2.Hysteresis != 2 || d2.DelayMS != 5000 || d2.Role != RolePowerKW {
		t.Errorf("decoded %+v", d2)
	}
}

// FuzzDataPoint: Validate never panics, every problem path names a field of
// the point, and a point without problems has ordered, finite thresholds
// and a known role.
func FuzzDataPoint(f *testing.F) {
	f.Add([]byte(`{"node_id":"ns=2;i=1","name":"x","warn_above":70,"alarm_above":85,"hysteresis":2,"delay_ms":100}`))
	f.Add([]byte(`{"node_id":"ns=2;i=1","name":"x","warn_below":10,"alarm_below":5,"role":"running"}`))
	f.Add([]byte(`{"node_id":"ns=2;i=1","name":"x","warn_above":1,"warn_below":2,"hysteresis":-1,"role":"x"}`))
	f.Add([]byte(`{"node_id":"ns=2;i=1","name":"x","role":"energy_kwh","unit":"Wh","delay_ms":4000000}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var d DataPoint
		if json.Unmarshal(data, &d) != nil {
			return
		}
		ps := d.ValidateRules()
		for _, p := range ps {
			switch p.Path {
			case "warn_above", "alarm_above", "warn_below", "alarm_below", "hysteresis", "delay_ms", "role", "unit":
			default:
				t.Fatalf("problem with unexpected path %q: %v", p.Path, p)
			}
			if p.Message == "" {
				t.Fatalf("empty message at %s", p.Path)
			}
		}
		if len(ps) != 0 {
			return
		}
		for _, v := range []*float64{d.WarnAbove, d.AlarmAbove, d.WarnBelow, d.AlarmBelow} {
			if v != nil && (math.IsNaN(*v) || math.IsInf(*v, 0)) {
				t.Fatalf("accepted a non-finite threshold: %+v", d)
			}
		}
		if d.WarnAbove != nil && d.AlarmAbove != nil && *d.WarnAbove > *d.AlarmAbove {
			t.Fatalf("accepted warn_above > alarm_above: %+v", d)
		}
		if d.WarnBelow != nil && d.AlarmBelow != nil && *d.WarnBelow < *d.AlarmBelow {
			t.Fatalf("accepted warn_below < alarm_below: %+v", d)
		}
		for _, hi := range []*float64{d.WarnAbove, d.AlarmAbove} {
			for _, lo := range []*float64{d.WarnBelow, d.AlarmBelow} {
				if hi != nil && lo != nil && !(*lo+d.Hysteresis < *hi) && !(*hi-*lo > d.Hysteresis) {
					t.Fatalf("accepted overlapping bands: %+v", d)
				}
			}
		}
		if !(d.Hysteresis >= 0) || d.DelayMS > MaxDelayMS {
			t.Fatalf("accepted hysteresis %g / delay %d", d.Hysteresis, d.DelayMS)
		}
		switch d.Role {
		case "", RoleRunning, RoleEnergyKWh, RolePowerKW:
		default:
			t.Fatalf("accepted role %q", d.Role)
		}
		// Decoding what we encode gives the same point (JSON round trip).
		out, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		var back DataPoint
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatal(err)
		}
		if ps := back.ValidateRules(); len(ps) != 0 {
			t.Fatalf("round trip made a valid point invalid: %v", ps)
		}
	})
}
