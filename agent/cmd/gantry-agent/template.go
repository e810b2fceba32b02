package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/gantry-iot/gantry/agent/config"
	"github.com/gantry-iot/gantry/pkg/atomicfile"
	"github.com/gantry-iot/gantry/pkg/machinemodel"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
)

// TemplateFile is the name of the persisted OPC-UA template in the state
// directory: the last template the control plane delivered, as received
// (the site overrides of the config file are merged when it is applied,
// so a changed config file takes effect at the next start).
const TemplateFile = "opcua-template.json"

// TemplateEndpointName is the name a site endpoint in the config file
// (opcua.endpoints[].name) gives to replace the template's endpoint: its
// URL and security mode replace the template's (the machine sits at
// another address on this site).
const TemplateEndpointName = "machine"

// storedTemplateFormat is the version of the persisted document.
const storedTemplateFormat = 1

// storedTemplate is the persisted template document.
type storedTemplate struct {
	Format         int                `json:"format"`
	Version        uint64             `json:"version"`
	Hash           string             `json:"hash"`
	MachineModelID string             `json:"machine_model_id,omitempty"`
	ReceivedAt     time.Time          `json:"received_at"`
	OPCUA          machinemodel.OPCUA `json:"opcua"`
}

// ErrCorruptTemplate is returned for a persisted template that cannot be
// read (torn write, edited by hand, another format).
var ErrCorruptTemplate = errors.New("persisted OPC-UA template is corrupt")

// templateFromCommand checks a delivered template: its hash must match
// the content (the control plane and agent agree on what version N is)
// and the template must be valid. An error says what is wrong.
func templateFromCommand(t *gantryv1.DeviceTemplate) (storedTemplate, error) {
	tpl := machinemodel.OPCUAFromPB(t.GetOpcua())
	if t.GetVersion() == 0 {
		return storedTemplate{}, errors.New("template has no version; the control plane numbers templates from 1")
	}
	if ps := tpl.Validate(); len(ps) > 0 {
		return storedTemplate{}, fmt.Errorf("template v%d is invalid: %w; fix the machine model's OPC-UA template", t.GetVersion(), ps.Err())
	}
	if h := tpl.Hash(); h != t.GetHash() {
		return storedTemplate{}, fmt.Errorf("template v%d: hash %q does not match its content (%s); the control plane and agent disagree on the template encoding, update the agent", t.GetVersion(), t.GetHash(), h)
	}
	return storedTemplate{Format: storedTemplateFormat, Version: t.GetVersion(), Hash: t.GetHash(), MachineModelID: t.GetMachineModelId(), OPCUA: tpl}, nil
}

// loadTemplate reads the persisted template of state directory dir. No
// file gives (nil, nil). A file that cannot be decoded or whose content
// does not match its hash gives an error wrapping ErrCorruptTemplate.
func loadTemplate(dir string) (*storedTemplate, error) {
	path := filepath.Join(dir, TemplateFile)
	// A leftover temp file is a save that did not complete; the file itself
	// is the previous, complete one.
	_ = os.Remove(path + ".tmp")
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the persisted OPC-UA template: %w", err)
	}
	var st storedTemplate
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	err = dec.Decode(&st)
	switch {
	case err != nil:
	case dec.More():
		err = errors.New("trailing data after the JSON document")
	case st.Format != storedTemplateFormat:
		err = fmt.Errorf("format %d; this agent reads format %d", st.Format, storedTemplateFormat)
	case st.OPCUA.Hash() != st.Hash:
		err = fmt.Errorf("content does not match its hash %s", st.Hash)
	default:
		if ps := st.OPCUA.Validate(); len(ps) > 0 {
			err = ps
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v; the agent runs without it until the control plane sends the template again (gantryctl devices command DEVICE reload_config)", ErrCorruptTemplate, path, err)
	}
	return &st, nil
}

// saveTemplate persists t atomically (0600, temp file, fsync, rename,
// fsync of the directory): a crash leaves the old or the new template.
func saveTemplate(dir string, t storedTemplate) error {
	b, err := json.MarshalIndent(t, "", "  ")
	if err != nil {
		return fmt.Errorf("encode the OPC-UA template: %w", err)
	}
	path := filepath.Join(dir, TemplateFile)
	if err := atomicfile.Write(path, append(b, '\n')); err != nil {
		return fmt.Errorf("persist the OPC-UA template in %s: %w (is the state directory writable?)", path, err)
	}
	return nil
}

// mergeTemplate applies the site side of the config file to a template:
//
//   - a site endpoint named TemplateEndpointName replaces the template's
//     endpoint URL and security mode (its policy and login then apply as
//     for any endpoint with the template's URL, see collectorSecurity);
//   - opcua.overrides change a data point's sampling interval or deadband
//     by node ID, or drop it (disabled).
//
// Overrides of nodes the template does not have are returned as notes
// (the template may have dropped them; the site config is not wrong).
func mergeTemplate(tpl machinemodel.OPCUA, site config.OPCUA) (machinemodel.OPCUA, []string, error) {
	var notes []string
	if tpl.IsEmpty() {
		return tpl, nil, nil
	}
	for _, ep := range site.Endpoints {
		if ep.Name == TemplateEndpointName {
			tpl.EndpointURL = ep.URL
			tpl.SecurityMode = string(ep.SecurityMode)
			if tpl.SecurityMode == "" {
				tpl.SecurityMode = string(config.SecurityModeNone)
			}
		}
	}
	byNode := map[string]config.Override{}
	for _, o := range site.Overrides {
		byNode[o.NodeID] = o
	}
	seen := map[string]bool{}
	points := make([]machinemodel.DataPoint, 0, len(tpl.DataPoints))
	for _, d := range tpl.DataPoints {
		o, ok := byNode[d.NodeID]
		if !ok {
			points = append(points, d)
			continue
		}
		seen[d.NodeID] = true
		if o.Disabled {
			continue
		}
		if o.SamplingInterval > 0 {
			ms := o.SamplingInterval.Milliseconds()
			if ms < 1 || ms > math.MaxUint32 {
				return tpl, nil, fmt.Errorf("opcua.overrides %s: sampling_interval %s is out of range", o.NodeID, o.SamplingInterval)
			}
			d.SamplingIntervalMS = uint32(ms)
		}
		if o.Deadband != nil {
			d.DeadbandType, d.DeadbandValue = string(o.Deadband.Type), o.Deadband.Value
		}
		points = append(points, d)
	}
	for _, o := range site.Overrides {
		if !seen[o.NodeID] {
			notes = append(notes, fmt.Sprintf("opcua.overrides: node %s is not in the template; override ignored", o.NodeID))
		}
	}
	tpl.DataPoints = points
	if ps := tpl.Validate(); len(ps) > 0 {
		return tpl, notes, fmt.Errorf("the template merged with the site config is invalid: %w; fix opcua.endpoints/opcua.overrides in the config file", ps.Err())
	}
	return tpl, notes, nil
}
