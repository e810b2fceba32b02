package machinemodel

import (
	"encoding/json"
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
