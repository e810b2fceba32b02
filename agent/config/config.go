// Package config defines the edge agent's configuration file: the typed
// Config, its defaults, and its validation.
//
// The file is JSON. Its structure is described by the JSON Schema
// agent.schema.json (draft 2020-12), which is embedded in the binary; the
// canonical copy lives in this package because go:embed cannot reach
// outside the package directory, and firmware-config/agent.schema.json is
// a byte-identical copy for device images and editors (a test keeps them
// equal). Validate checks a document against the schema and then applies
// the rules a schema cannot express (URLs, listen addresses, duration
// ranges, cross-field rules), reporting every problem with the JSON
// Pointer of the offending field. Parse returns the typed Config only for a
// document without problems.
//
// Every field of the file is optional; a missing field takes its default
// (see Default). A Config is a plain value: safe to copy and to read from
// several goroutines.
package config

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Defaults that other packages and the documentation refer to.
const (
	DefaultStateDir      = "/var/lib/gantry-agent"
	DefaultMetricsListen = "127.0.0.1:9101"
	// MetricsOff as Metrics.Listen disables the metrics endpoint.
	MetricsOff = "off"
	// MaxFileSize bounds the configuration file Load reads.
	MaxFileSize = 1 << 20
)

// Config is the agent's configuration. The zero value is not useful; start
// from Default or Parse.
type Config struct {
	// Server is the control-plane base URL (https). Empty: taken from the
	// enrollment state.
	Server string
	// ServerCAFile is a PEM bundle to trust for Server (private CA); empty
	// means the system roots.
	ServerCAFile string
	// DevAllowHTTP accepts an http:// Server (development only).
	DevAllowHTTP bool
	// StateDir holds the device identity written by enrollment.
	StateDir string

	Log          Log
	Metrics      Metrics
	MQTT         MQTT
	Queue        Queue
	OPCUA        OPCUA
	RemoteAccess RemoteAccess
	Rules        Rules
}

// Log configures structured logging.
type Log struct {
	Level  slog.Level // one of slog.LevelDebug, LevelInfo, LevelWarn, LevelError
	Format LogFormat
}

// LogFormat selects the slog handler.
type LogFormat string

// Log formats.
const (
	LogJSON LogFormat = "json"
	LogText LogFormat = "text"
)

// NewLogger returns a logger writing to w as configured.
func (l Log) NewLogger(w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: l.Level}
	if l.Format == LogText {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	Listen string // host:port, or MetricsOff
}

// MQTT configures the session to the control plane's broker.
type MQTT struct {
	KeepAlive      time.Duration
	ConnectTimeout time.Duration
	Reconnect      Backoff
	Batch          Batch
	InflightWindow int // QoS 1 publishes awaiting acknowledgement at once
}

// Backoff is the reconnect schedule (agent/link.Backoff): attempt n after
// a lost connection waits a random time in [(1−Jitter)·b, b] with
// b = Min·2^(n−1) capped at Max, and capped at min(8·Min, Max) during the
// first 2 minutes after losing a connection that was up (a restarted
// control plane is found within ~8 s by default).
type Backoff struct {
	Min, Max time.Duration
	Jitter   float64 // random fraction of each wait, [0, 1]; 1 = full jitter
}

// Batch bounds telemetry batches.
type Batch struct {
	MaxMessages int
	MaxDelay    time.Duration
}

// Queue configures the store-and-forward queue.
type Queue struct {
	Dir          string // empty: <StateDir>/queue, see Config.QueueDir
	MaxMB        int
	SegmentMB    int
	SyncInterval time.Duration // group-commit window; 0 syncs every append
}

// OPCUA holds local OPC-UA endpoints and data-point overrides, merged with
// the machine model's template.
type OPCUA struct {
	Endpoints []Endpoint // nil when none
	Overrides []Override // nil when none
}

// Endpoint is one OPC-UA server.
type Endpoint struct {
	Name           string
	URL            string // opc.tcp://host:port[/path]
	SecurityMode   SecurityMode
	SecurityPolicy SecurityPolicy
	Auth           Auth
}

// SecurityMode is the OPC-UA message security mode.
type SecurityMode string

// Security modes.
const (
	SecurityModeNone           SecurityMode = "None"
	SecurityModeSign           SecurityMode = "Sign"
	SecurityModeSignAndEncrypt SecurityMode = "SignAndEncrypt"
)

// SecurityPolicy is the OPC-UA security policy.
type SecurityPolicy string

// Security policies.
const (
	SecurityPolicyNone           SecurityPolicy = "None"
	SecurityPolicyBasic256Sha256 SecurityPolicy = "Basic256Sha256"
)

// Auth is how the agent authenticates to an OPC-UA server.
type Auth struct {
	Type         AuthType
	Username     string // AuthUsername
	PasswordFile string // AuthUsername: file holding the password
	CertFile     string // AuthCertificate
	KeyFile      string // AuthCertificate
}

// AuthType selects the OPC-UA user identity.
type AuthType string

// Auth types.
const (
	AuthAnonymous   AuthType = "anonymous"
	AuthUsername    AuthType = "username"
	AuthCertificate AuthType = "certificate"
)

// Override changes one data point of the template.
type Override struct {
	NodeID           string
	SamplingInterval time.Duration // 0: the template's
	Deadband         *Deadband     // nil: the template's
	Disabled         bool
}

// Deadband suppresses small changes.
type Deadband struct {
	Type  DeadbandType
	Value float64
}

// DeadbandType is absolute (in the point's unit) or percent (of EURange).
type DeadbandType string

// Deadband types.
const (
	DeadbandAbsolute DeadbandType = "absolute"
	DeadbandPercent  DeadbandType = "percent"
)

// RemoteAccess configures on-demand tunnels.
type RemoteAccess struct {
	Consent   Consent
	WireGuard WireGuard
	SSCL3Mode SSCL3Mode
}

// Consent is the optional local consent for remote access.
type Consent struct {
	Mode ConsentMode
	Path string // file or GPIO value that must read "on"; empty for ConsentNone
}

// ConsentMode selects the consent source.
type ConsentMode string

// Consent modes.
const (
	ConsentNone ConsentMode = "none"
	ConsentFile ConsentMode = "file"
	ConsentGPIO ConsentMode = "gpio"
)

// WireGuard configures the device side of WireGuard tunnels.
type WireGuard struct {
	ListenPort int // 0: any free port
}

// SSCL3Mode selects how Secure Service Connect routes layer 3.
type SSCL3Mode string

// SSC layer-3 modes.
const (
	SSCUserspace SSCL3Mode = "userspace"  // no privileges needed
	SSCKernelTUN SSCL3Mode = "kernel_tun" // needs CAP_NET_ADMIN
)

// Rules configures edge rules.
type Rules struct {
	RunningHoursStateFile string // empty: <StateDir>/running-hours.json
}

// Default returns the default configuration: what an empty file ("{}")
// parses to.
func Default() Config {
	return Config{
		StateDir: DefaultStateDir,
		Log:      Log{Level: slog.LevelInfo, Format: LogJSON},
		Metrics:  Metrics{Listen: DefaultMetricsListen},
		MQTT: MQTT{
			KeepAlive:      30 * time.Second,
			ConnectTimeout: 10 * time.Second,
			Reconnect:      Backoff{Min: time.Second, Max: time.Minute, Jitter: 1},
			Batch:          Batch{MaxMessages: 5000, MaxDelay: 250 * time.Millisecond},
			InflightWindow: 64,
		},
		Queue:        Queue{MaxMB: 64, SegmentMB: 8, SyncInterval: 2 * time.Millisecond},
		RemoteAccess: RemoteAccess{Consent: Consent{Mode: ConsentNone}, SSCL3Mode: SSCUserspace},
	}
}

// QueueDir is Queue.Dir, or <StateDir>/queue when that is empty.
func (c Config) QueueDir() string {
	if c.Queue.Dir != "" {
		return c.Queue.Dir
	}
	return filepath.Join(c.StateDir, "queue")
}

// RunningHoursFile is Rules.RunningHoursStateFile, or
// <StateDir>/running-hours.json when that is empty.
func (c Config) RunningHoursFile() string {
	if c.Rules.RunningHoursStateFile != "" {
		return c.Rules.RunningHoursStateFile
	}
	return filepath.Join(c.StateDir, "running-hours.json")
}

// Parse checks a configuration document and returns its Config. When the
// document has problems the error is an *InvalidError listing all of them
// (it wraps ErrInvalid).
func Parse(data []byte) (Config, error) {
	c, ps := check(data)
	if len(ps) > 0 {
		return Config{}, &InvalidError{Problems: ps}
	}
	return c, nil
}

// Load reads and parses the configuration file at path.
func Load(path string) (Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return Config{}, fmt.Errorf("config.Load: %w (pass the path of an existing file; 'gantry-agent config default' prints one to start from)", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return Config{}, fmt.Errorf("config.Load: read %s: %w", path, err)
	}
	if len(data) > MaxFileSize {
		return Config{}, fmt.Errorf("config.Load %s: %w: more than %d bytes; is this the right file?", path, ErrTooLarge, MaxFileSize)
	}
	c, err := Parse(data)
	if err != nil {
		return Config{}, fmt.Errorf("config.Load %s: %w", path, err)
	}
	return c, nil
}

// UnmarshalJSON parses data like Parse, so that a Config embedded in
// another JSON document gets the same validation.
func (c *Config) UnmarshalJSON(data []byte) error {
	v, err := Parse(data)
	if err != nil {
		return err
	}
	*c = v
	return nil
}

// MarshalJSON writes c in the file format, every field present; Parse of
// the result yields c again.
func (c Config) MarshalJSON() ([]byte, error) {
	level, ok := levelNames[c.Log.Level]
	if !ok {
		return nil, fmt.Errorf("config.Config.MarshalJSON: log level %v has no name in the file format; use debug, info, warn or error", c.Log.Level)
	}
	f := fileConfig{
		Server:       c.Server,
		ServerCAFile: c.ServerCAFile,
		DevAllowHTTP: c.DevAllowHTTP,
		StateDir:     c.StateDir,
		Log:          fileLog{Level: level, Format: string(c.Log.Format)},
		Metrics:      fileMetrics{Listen: c.Metrics.Listen},
		MQTT: fileMQTT{
			KeepAlive:      dur(c.MQTT.KeepAlive),
			ConnectTimeout: dur(c.MQTT.ConnectTimeout),
			Reconnect:      fileBackoff{MinBackoff: dur(c.MQTT.Reconnect.Min), MaxBackoff: dur(c.MQTT.Reconnect.Max), Jitter: c.MQTT.Reconnect.Jitter},
			Batch:          fileBatch{MaxMessages: c.MQTT.Batch.MaxMessages, MaxDelay: dur(c.MQTT.Batch.MaxDelay)},
			InflightWindow: c.MQTT.InflightWindow,
		},
		Queue: fileQueue{Dir: c.Queue.Dir, MaxMB: c.Queue.MaxMB, SegmentMB: c.Queue.SegmentMB, SyncInterval: dur(c.Queue.SyncInterval)},
		OPCUA: fileOPCUA{Endpoints: []fileEndpoint{}, Overrides: []fileOverride{}},
		RemoteAccess: fileRemoteAccess{
			Consent:   fileConsent{Mode: string(c.RemoteAccess.Consent.Mode), Path: c.RemoteAccess.Consent.Path},
			WireGuard: fileWireGuard{ListenPort: c.RemoteAccess.WireGuard.ListenPort},
			SSCL3Mode: string(c.RemoteAccess.SSCL3Mode),
		},
		Rules: fileRules{RunningHoursStateFile: c.Rules.RunningHoursStateFile},
	}
	for _, e := range c.OPCUA.Endpoints {
		f.OPCUA.Endpoints = append(f.OPCUA.Endpoints, fileEndpoint{
			Name: e.Name, URL: e.URL, SecurityMode: string(e.SecurityMode), SecurityPolicy: string(e.SecurityPolicy),
			Auth: fileAuth{Type: string(e.Auth.Type), Username: e.Auth.Username, PasswordFile: e.Auth.PasswordFile, CertFile: e.Auth.CertFile, KeyFile: e.Auth.KeyFile},
		})
	}
	for _, o := range c.OPCUA.Overrides {
		fo := fileOverride{NodeID: o.NodeID, Disabled: o.Disabled}
		if o.SamplingInterval != 0 {
			fo.SamplingInterval = dur(o.SamplingInterval)
		}
		if o.Deadband != nil {
			fo.Deadband = &fileDeadband{Type: string(o.Deadband.Type), Value: o.Deadband.Value}
		}
		f.OPCUA.Overrides = append(f.OPCUA.Overrides, fo)
	}
	return json.Marshal(f)
}

// DefaultJSON returns the default configuration as an indented file,
// identical to firmware-config/agent.default.json.
func DefaultJSON() []byte {
	b, err := json.MarshalIndent(Default(), "", "  ")
	if err != nil {
		panic(fmt.Sprintf("config.DefaultJSON: %v", err)) // Default is a constant; a test covers it
	}
	return append(b, '\n')
}

var levelNames = map[slog.Level]string{
	slog.LevelDebug: "debug",
	slog.LevelInfo:  "info",
	slog.LevelWarn:  "warn",
	slog.LevelError: "error",
}

// dur formats d as a Go duration without zero tails: "1m", not "1m0s".
func dur(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// fileConfig and the types below are the file format, for MarshalJSON.
// Reading goes through the validating walker in check.go instead.
type fileConfig struct {
	Server       string           `json:"server"`
	ServerCAFile string           `json:"server_ca_file"`
	DevAllowHTTP bool             `json:"dev_allow_http"`
	StateDir     string           `json:"state_dir"`
	Log          fileLog          `json:"log"`
	Metrics      fileMetrics      `json:"metrics"`
	MQTT         fileMQTT         `json:"mqtt"`
	Queue        fileQueue        `json:"queue"`
	OPCUA        fileOPCUA        `json:"opcua"`
	RemoteAccess fileRemoteAccess `json:"remote_access"`
	Rules        fileRules        `json:"rules"`
}

type fileLog struct {
	Level  string `json:"level"`
	Format string `json:"format"`
}

type fileMetrics struct {
	Listen string `json:"listen"`
}

type fileMQTT struct {
	KeepAlive      string      `json:"keepalive"`
	ConnectTimeout string      `json:"connect_timeout"`
	Reconnect      fileBackoff `json:"reconnect"`
	Batch          fileBatch   `json:"batch"`
	InflightWindow int         `json:"inflight_window"`
}

type fileBackoff struct {
	MinBackoff string  `json:"min_backoff"`
	MaxBackoff string  `json:"max_backoff"`
	Jitter     float64 `json:"jitter"`
}

type fileBatch struct {
	MaxMessages int    `json:"max_messages"`
	MaxDelay    string `json:"max_delay"`
}

type fileQueue struct {
	Dir          string `json:"dir"`
	MaxMB        int    `json:"max_mb"`
	SegmentMB    int    `json:"segment_mb"`
	SyncInterval string `json:"sync_interval"`
}

type fileOPCUA struct {
	Endpoints []fileEndpoint `json:"endpoints"`
	Overrides []fileOverride `json:"overrides"`
}

type fileEndpoint struct {
	Name           string   `json:"name"`
	URL            string   `json:"url"`
	SecurityMode   string   `json:"security_mode"`
	SecurityPolicy string   `json:"security_policy"`
	Auth           fileAuth `json:"auth"`
}

type fileAuth struct {
	Type         string `json:"type"`
	Username     string `json:"username,omitempty"`
	PasswordFile string `json:"password_file,omitempty"`
	CertFile     string `json:"cert_file,omitempty"`
	KeyFile      string `json:"key_file,omitempty"`
}

type fileOverride struct {
	NodeID           string        `json:"node_id"`
	SamplingInterval string        `json:"sampling_interval,omitempty"`
	Deadband         *fileDeadband `json:"deadband,omitempty"`
	Disabled         bool          `json:"disabled,omitempty"`
}

type fileDeadband struct {
	Type  string  `json:"type"`
	Value float64 `json:"value"`
}

type fileRemoteAccess struct {
	Consent   fileConsent   `json:"consent"`
	WireGuard fileWireGuard `json:"wireguard"`
	SSCL3Mode string        `json:"ssc_l3_mode"`
}

type fileConsent struct {
	Mode string `json:"mode"`
	Path string `json:"path"`
}

type fileWireGuard struct {
	ListenPort int `json:"listen_port"`
}

type fileRules struct {
	RunningHoursStateFile string `json:"running_hours_state_file"`
}
