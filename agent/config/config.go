// Package config loads and validates the agent's configuration file. The
// JSON Schema in agent.schema.json (a byte-identical copy ships in
// firmware-config/) checks structure and types; Validate adds the checks
// a schema cannot express and reports every problem with its field path.
package config

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

//go:embed agent.schema.json
var schemaJSON []byte

// Schema returns the embedded JSON Schema.
func Schema() []byte { return append([]byte(nil), schemaJSON...) }

// Config is the typed agent configuration.
type Config struct {
	StateDir string
	Log      struct{ Level, Format string }
	Metrics  struct{ Listen string }
	MQTT     struct{ KeepAlive, MaxBackoff time.Duration }
	Queue    struct {
		Dir              string
		MaxMB, SegmentMB int
		SyncDelay        time.Duration
	}
	Consent struct{ Mode, Path string }
}

// file mirrors the JSON document.
type file struct {
	StateDir *string `json:"state_dir"`
	Log      *struct {
		Level  *string `json:"level"`
		Format *string `json:"format"`
	} `json:"log"`
	Metrics *struct {
		Listen *string `json:"listen"`
	} `json:"metrics"`
	MQTT *struct {
		KeepAlive  *string `json:"keepalive"`
		MaxBackoff *string `json:"max_backoff"`
	} `json:"mqtt"`
	Queue *struct {
		Dir       *string `json:"dir"`
		MaxMB     *int    `json:"max_mb"`
		SegmentMB *int    `json:"segment_mb"`
		SyncDelay *string `json:"sync_delay"`
	} `json:"queue"`
	RemoteAccess *struct {
		Consent *struct {
			Mode *string `json:"mode"`
			Path *string `json:"path"`
		} `json:"consent"`
	} `json:"remote_access"`
}

// Default returns the default configuration.
func Default() Config {
	var c Config
	c.StateDir = "/var/lib/gantry-agent"
	c.Log.Level, c.Log.Format = "info", "json"
	c.Metrics.Listen = "127.0.0.1:9101"
	c.MQTT.KeepAlive, c.MQTT.MaxBackoff = 30*time.Second, 60*time.Second
	c.Queue.MaxMB, c.Queue.SegmentMB, c.Queue.SyncDelay = 64, 8, 2*time.Millisecond
	c.Consent.Mode = "none"
	return c
}

// DefaultJSON is the documented default configuration file.
const DefaultJSON = `{
  "state_dir": "/var/lib/gantry-agent",
  "log": {"level": "info", "format": "json"},
  "metrics": {"listen": "127.0.0.1:9101"},
  "mqtt": {"keepalive": "30s", "max_backoff": "60s"},
  "queue": {"max_mb": 64, "segment_mb": 8, "sync_delay": "2ms"},
  "remote_access": {"consent": {"mode": "none"}}
}
`

// Problem is one finding, with a JSON-pointer-like path such as
// "/queue/max_mb".
type Problem struct {
	Path    string
	Message string
}

func (p Problem) String() string { return p.Path + ": " + p.Message }

var compiled = func() *jsonschema.Schema {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(schemaJSON))
	if err != nil {
		panic(fmt.Sprintf("config: embedded schema: %v", err))
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("agent.schema.json", doc); err != nil {
		panic(err)
	}
	return c.MustCompile("agent.schema.json")
}()

// Validate reports every problem of a configuration document.
func Validate(data []byte) []Problem {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return []Problem{{Path: "/", Message: fmt.Sprintf("not valid JSON: %v", err)}}
	}
	var ps []Problem
	if err := compiled.Validate(doc); err != nil {
		if ve, ok := err.(*jsonschema.ValidationError); ok {
			ps = append(ps, leaves(ve)...)
		} else {
			ps = append(ps, Problem{Path: "/", Message: err.Error()})
		}
	}
	if len(ps) > 0 {
		return sortProblems(ps)
	}
	_, ps = parse(data)
	return sortProblems(ps)
}

var printer = message.NewPrinter(language.English)

func leaves(ve *jsonschema.ValidationError) []Problem {
	if len(ve.Causes) == 0 {
		path := "/" + strings.Join(ve.InstanceLocation, "/")
		return []Problem{{Path: path, Message: ve.ErrorKind.LocalizedString(printer)}}
	}
	var out []Problem
	for _, c := range ve.Causes {
		out = append(out, leaves(c)...)
	}
	return out
}

func sortProblems(ps []Problem) []Problem {
	sort.SliceStable(ps, func(i, j int) bool { return ps[i].Path < ps[j].Path })
	return ps
}

// Parse validates data and returns the configuration, or an error listing
// every problem.
func Parse(data []byte) (Config, error) {
	if ps := Validate(data); len(ps) > 0 {
		msgs := make([]string, len(ps))
		for i, p := range ps {
			msgs[i] = p.String()
		}
		return Config{}, fmt.Errorf("invalid agent configuration:\n  %s", strings.Join(msgs, "\n  "))
	}
	c, _ := parse(data)
	return c, nil
}

// Load reads and parses a configuration file.
func Load(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(b)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// parse fills a Config from a schema-valid document and reports semantic
// problems.
func parse(data []byte) (Config, []Problem) {
	c := Default()
	var f file
	var ps []Problem
	if err := json.Unmarshal(data, &f); err != nil {
		return c, []Problem{{Path: "/", Message: err.Error()}}
	}
	dur := func(path string, s *string, dst *time.Duration, min, max time.Duration) {
		if s == nil {
			return
		}
		d, err := time.ParseDuration(*s)
		switch {
		case err != nil:
			ps = append(ps, Problem{path, fmt.Sprintf("%q is not a duration like 30s or 2ms", *s)})
		case d < min || d > max:
			ps = append(ps, Problem{path, fmt.Sprintf("%v is outside %v..%v", d, min, max)})
		default:
			*dst = d
		}
	}
	if f.StateDir != nil {
		if !filepath.IsAbs(*f.StateDir) {
			ps = append(ps, Problem{"/state_dir", "must be an absolute path"})
		}
		c.StateDir = *f.StateDir
	}
	if f.Log != nil {
		if f.Log.Level != nil {
			c.Log.Level = *f.Log.Level
		}
		if f.Log.Format != nil {
			c.Log.Format = *f.Log.Format
		}
	}
	if f.Metrics != nil && f.Metrics.Listen != nil {
		c.Metrics.Listen = *f.Metrics.Listen
		if c.Metrics.Listen != "off" {
			if _, _, err := net.SplitHostPort(c.Metrics.Listen); err != nil {
				ps = append(ps, Problem{"/metrics/listen", fmt.Sprintf("%q is not host:port or off", c.Metrics.Listen)})
			}
		}
	}
	if f.MQTT != nil {
		dur("/mqtt/keepalive", f.MQTT.KeepAlive, &c.MQTT.KeepAlive, 5*time.Second, 20*time.Minute)
		dur("/mqtt/max_backoff", f.MQTT.MaxBackoff, &c.MQTT.MaxBackoff, time.Second, time.Hour)
	}
	if f.Queue != nil {
		if f.Queue.Dir != nil {
			c.Queue.Dir = *f.Queue.Dir
		}
		if f.Queue.MaxMB != nil {
			c.Queue.MaxMB = *f.Queue.MaxMB
		}
		if f.Queue.SegmentMB != nil {
			c.Queue.SegmentMB = *f.Queue.SegmentMB
		}
		if c.Queue.SegmentMB > c.Queue.MaxMB {
			ps = append(ps, Problem{"/queue/segment_mb", fmt.Sprintf("%d is larger than max_mb (%d); segments must fit in the queue", c.Queue.SegmentMB, c.Queue.MaxMB)})
		}
		dur("/queue/sync_delay", f.Queue.SyncDelay, &c.Queue.SyncDelay, 0, time.Second)
	}
	if c.Queue.Dir == "" {
		c.Queue.Dir = filepath.Join(c.StateDir, "queue")
	}
	if f.RemoteAccess != nil && f.RemoteAccess.Consent != nil {
		if f.RemoteAccess.Consent.Mode != nil {
			c.Consent.Mode = *f.RemoteAccess.Consent.Mode
		}
		if f.RemoteAccess.Consent.Path != nil {
			c.Consent.Path = *f.RemoteAccess.Consent.Path
		}
		if c.Consent.Mode != "none" && c.Consent.Path == "" {
			ps = append(ps, Problem{"/remote_access/consent/path", fmt.Sprintf("consent mode %q needs the path of the file or GPIO value to read", c.Consent.Mode)})
		}
	}
	return c, ps
}
