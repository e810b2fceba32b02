package machinemodel

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"

	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
)

// IsEmpty reports whether the template has no OPC-UA data at all (no
// endpoint, no data points): a device with it collects nothing.
func (o OPCUA) IsEmpty() bool {
	return o.EndpointURL == "" && o.SecurityMode == "" && len(o.DataPoints) == 0
}

// Hash is the hex SHA-256 of the template's canonical JSON (encoding/json
// of the struct: fixed field order, omitted empty optional fields). The
// control plane and the agent compute it the same way to name a template
// version; an empty template hashes like OPCUA{}.
func (o OPCUA) Hash() string {
	if len(o.DataPoints) == 0 {
		o.DataPoints = nil // [] and null are the same template
	}
	b, _ := json.Marshal(o) // a struct of strings, numbers and bools cannot fail
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// ToPB converts the template to its protobuf form.
func (o OPCUA) ToPB() *gantryv1.OpcuaTemplate {
	out := &gantryv1.OpcuaTemplate{EndpointUrl: o.EndpointURL, SecurityMode: o.SecurityMode}
	for _, d := range o.DataPoints {
		out.DataPoints = append(out.DataPoints, &gantryv1.DataPoint{NodeId: d.NodeID, Name: d.Name, Unit: d.Unit,
			SamplingIntervalMs: d.SamplingIntervalMS, DeadbandType: d.DeadbandType, DeadbandValue: d.DeadbandValue, WarnAbove: d.WarnAbove, AlarmAbove: d.AlarmAbove,
			WarnBelow: d.WarnBelow, AlarmBelow: d.AlarmBelow, Hysteresis: d.Hysteresis, DelayMs: d.DelayMS, Role: d.Role, OpenCaseOnAlarm: d.OpenCaseOnAlarm})
	}
	return out
}

// OPCUAFromPB converts a protobuf template (nil: the empty template).
func OPCUAFromPB(o *gantryv1.OpcuaTemplate) OPCUA {
	if o == nil {
		return OPCUA{}
	}
	out := OPCUA{EndpointURL: o.EndpointUrl, SecurityMode: o.SecurityMode}
	for _, d := range o.DataPoints {
		if d == nil {
			continue
		}
		out.DataPoints = append(out.DataPoints, DataPoint{NodeID: d.NodeId, Name: d.Name, Unit: d.Unit,
			SamplingIntervalMS: d.SamplingIntervalMs, DeadbandType: d.DeadbandType, DeadbandValue: d.DeadbandValue, WarnAbove: d.WarnAbove, AlarmAbove: d.AlarmAbove,
			WarnBelow: d.WarnBelow, AlarmBelow: d.AlarmBelow, Hysteresis: d.Hysteresis, DelayMS: d.DelayMs, Role: d.Role, OpenCaseOnAlarm: d.OpenCaseOnAlarm})
	}
	return out
}
