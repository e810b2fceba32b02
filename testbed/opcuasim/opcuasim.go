// Package opcuasim is an OPC-UA server for tests and demos, built on
// gopcua's server package: machine profiles (a CNC machine with spindle
// speed, temperature, running state, energy counter and alarm word), N
// generated load variables, values changing at a set interval, and Stop /
// Start on the same port for fault tests.
//
// Node IDs are strings in the simulator's namespace: "<profile>.<Var>"
// for profile variables (e.g. ns=2;s=cnc1.SpindleSpeed, see NodeID) and
// "gen.<i>" for generated ones (GeneratedNodeID). Values are a
// deterministic function of the tick count.
//
// Limits of gopcua's server (v0.8): only security None with anonymous
// login is implemented, so username logins and Sign/SignAndEncrypt must be
// tested against another server (node-opcua); Config.Username is refused
// with that explanation instead of being faked.
package opcuasim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/server"
	"github.com/gopcua/opcua/ua"
)

// Config configures a simulator. It is usually read from a JSON file.
type Config struct {
	Host      string    `json:"host"`      // default 127.0.0.1
	Port      int       `json:"port"`      // 0: a free port
	Namespace string    `json:"namespace"` // default "urn:gantry:opcuasim"
	Profiles  []Profile `json:"profiles"`
	Generated int       `json:"generated"` // number of generated Double variables
	Interval  Duration  `json:"interval"`  // value update interval, default 1s
	Username  string    `json:"username,omitempty"`
}

// Profile is one simulated machine.
type Profile struct {
	Name string `json:"name"` // node ID prefix, e.g. "cnc1"
	Kind string `json:"kind"` // "cnc"
}

// Duration is a time.Duration written as "100ms" in JSON.
type Duration time.Duration

// UnmarshalJSON parses a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("interval: want a duration string like \"100ms\"")
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("interval: %q is not a duration like 100ms", s)
	}
	*d = Duration(v)
	return nil
}

// CNC variables.
var cncVars = []string{"SpindleSpeed", "Temperature", "Running", "EnergyCounter", "AlarmWord"}

// ParseConfig decodes and validates a JSON configuration.
func ParseConfig(b []byte) (Config, error) {
	var c Config
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Config{}, fmt.Errorf("opcuasim config: %w", err)
	}
	return c, c.Validate()
}

// Validate checks a configuration and fills defaults.
func (c *Config) Validate() error {
	var errs []error
	if c.Host == "" {
		c.Host = "127.0.0.1"
	}
	if c.Namespace == "" {
		c.Namespace = "urn:gantry:opcuasim"
	}
	if c.Interval == 0 {
		c.Interval = Duration(time.Second)
	}
	if time.Duration(c.Interval) < 10*time.Millisecond {
		errs = append(errs, fmt.Errorf("interval %v is below 10ms", time.Duration(c.Interval)))
	}
	if c.Port < 0 || c.Port > 65535 {
		errs = append(errs, fmt.Errorf("port %d is outside 0..65535", c.Port))
	}
	if c.Generated < 0 || c.Generated > 100000 {
		errs = append(errs, fmt.Errorf("generated %d is outside 0..100000", c.Generated))
	}
	seen := map[string]bool{}
	for i, p := range c.Profiles {
		switch {
		case p.Kind != "cnc":
			errs = append(errs, fmt.Errorf("profiles[%d].kind %q: the simulator knows \"cnc\"", i, p.Kind))
		case p.Name == "" || p.Name == "gen" || len(p.Name) > 40:
			errs = append(errs, fmt.Errorf("profiles[%d].name %q: use 1..40 characters, not \"gen\"", i, p.Name))
		case seen[p.Name]:
			errs = append(errs, fmt.Errorf("profiles[%d].name %q is used twice", i, p.Name))
		}
		seen[p.Name] = true
	}
	if c.Username != "" {
		errs = append(errs, errors.New("username: gopcua's server implements only anonymous logins; test username logins against node-opcua"))
	}
	return errors.Join(errs...)
}

// NodeID is the node ID string of a profile variable.
func NodeID(ns uint16, profile, variable string) string {
	return fmt.Sprintf("ns=%d;s=%s.%s", ns, profile, variable)
}

// GeneratedNodeID is the node ID string of generated variable i.
func GeneratedNodeID(ns uint16, i int) string { return fmt.Sprintf("ns=%d;s=gen.%d", ns, i) }

// Sim is a running simulator. Safe for concurrent use.
type Sim struct {
	cfg Config
	log *slog.Logger

	mu    sync.Mutex
	srv   *server.Server
	ns    *server.NodeNameSpace
	nodes map[string]*server.Node // by node ID string
	// values hold each node's current value. gopcua's Node has no locking,
	// so nodes read through a function from these atomics instead of
	// being changed with SetAttribute (which races with the server).
	values map[string]*atomic.Pointer[ua.DataValue]
	pinned map[string]bool // values set by Set, not overwritten by the updater
	energy map[string]float64
	tick   int64
	// produced counts the values the updater set (ticks the ticker
	// dropped on a busy machine produce nothing).
	produced atomic.Uint64
	cancel   context.CancelFunc
	done     chan struct{}
	port     int
}

// New validates cfg and returns a stopped simulator.
func New(cfg Config, logger *slog.Logger) (*Sim, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Sim{cfg: cfg, log: logger, port: cfg.Port, energy: map[string]float64{}, pinned: map[string]bool{}}, nil
}

// Endpoint is the server's URL.
func (s *Sim) Endpoint() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprintf("opc.tcp://%s:%d", s.cfg.Host, s.port)
}

// Namespace is the simulator's namespace index (valid after Start).
// Produced returns how many generated load variables' values the
// simulation has set so far: the rate actually produced, which falls short
// of Generated per Interval when the machine cannot keep up.
func (s *Sim) Produced() uint64 { return s.produced.Load() }

func (s *Sim) Namespace() uint16 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ns == nil {
		return 0
	}
	return s.ns.ID()
}

// Start serves on the configured (or, the first time, a free) port; after
// Stop it starts again on the same port.
func (s *Sim) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return errors.New("opcuasim: already running")
	}
	if s.port == 0 {
		l, err := net.Listen("tcp", net.JoinHostPort(s.cfg.Host, "0"))
		if err != nil {
			return fmt.Errorf("opcuasim: pick a port: %w", err)
		}
		s.port = l.Addr().(*net.TCPAddr).Port
		l.Close()
	}
	srv := server.New(
		server.EnableSecurity("None", ua.MessageSecurityModeNone),
		server.EnableAuthMode(ua.UserTokenTypeAnonymous),
		server.EndPoint(s.cfg.Host, s.port),
		server.SetLogger(s.log),
	)
	root, err := srv.Namespace(0)
	if err != nil {
		return err
	}
	ns := server.NewNodeNameSpace(srv, s.cfg.Namespace)
	objs := ns.Objects()
	root.Objects().AddRef(objs, id.HasComponent, true)
	s.nodes = map[string]*server.Node{}
	s.values = map[string]*atomic.Pointer[ua.DataValue]{}
	add := func(name string, v any) {
		cur := new(atomic.Pointer[ua.DataValue])
		cur.Store(dataValue(v, time.Now()))
		n := ns.AddNewVariableStringNode(name, func() *ua.DataValue { return cur.Load() })
		objs.AddRef(n, id.HasComponent, true)
		key := fmt.Sprintf("ns=%d;s=%s", ns.ID(), name)
		s.nodes[key] = n
		s.values[key] = cur
	}
	for _, p := range s.cfg.Profiles {
		for _, v := range cncVars {
			add(p.Name+"."+v, s.cncValue(p.Name, v, s.tick))
		}
	}
	for i := 0; i < s.cfg.Generated; i++ {
		add("gen."+strconv.Itoa(i), genValue(i, s.tick))
	}
	if err := srv.Start(ctx); err != nil {
		return fmt.Errorf("opcuasim: start on port %d: %w", s.port, err)
	}
	s.srv, s.ns = srv, ns
	uctx, cancel := context.WithCancel(context.Background())
	s.cancel, s.done = cancel, make(chan struct{})
	go s.update(uctx, s.done)
	return nil
}

// Stop closes the server and all client connections.
func (s *Sim) Stop() error {
	s.mu.Lock()
	srv, cancel, done := s.srv, s.cancel, s.done
	s.srv = nil
	s.mu.Unlock()
	if srv == nil {
		return nil
	}
	cancel()
	<-done
	return srv.Close()
}

func (s *Sim) cncValue(profile, v string, tick int64) any {
	t := float64(tick)
	running := (tick/50)%4 != 3 // runs 150 ticks, stops 50
	switch v {
	case "SpindleSpeed":
		if !running {
			return 0.0
		}
		return math.Round(8000 + 2000*math.Sin(t/10)) // rpm
	case "Temperature":
		return math.Round((40+10*math.Sin(t/30))*10) / 10 // °C
	case "Running":
		return running
	case "EnergyCounter":
		return math.Round(s.energy[profile]*1000) / 1000 // kWh
	case "AlarmWord":
		if 40+10*math.Sin(t/30) > 48 {
			return uint32(1) // over-temperature
		}
		return uint32(0)
	}
	return nil
}

func genValue(i int, tick int64) float64 { return float64(i) + float64(tick%1000)/10 }

func (s *Sim) update(ctx context.Context, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(time.Duration(s.cfg.Interval))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.mu.Lock()
			s.tick++
			for _, p := range s.cfg.Profiles {
				if s.cncValue(p.Name, "Running", s.tick).(bool) {
					s.energy[p.Name] += 15 * time.Duration(s.cfg.Interval).Hours() // 15 kW while running
				}
				for _, v := range cncVars {
					if id := NodeID(s.ns.ID(), p.Name, v); !s.pinned[id] {
						s.setLocked(id, s.cncValue(p.Name, v, s.tick), now)
					}
				}
			}
			n := 0
			for i := 0; i < s.cfg.Generated; i++ {
				if id := GeneratedNodeID(s.ns.ID(), i); !s.pinned[id] {
					s.setLocked(id, genValue(i, s.tick), now)
					n++
				}
			}
			s.mu.Unlock()
			s.produced.Add(uint64(n))
		}
	}
}

func (s *Sim) setLocked(nodeID string, v any, at time.Time) {
	n, ok := s.nodes[nodeID]
	if !ok || s.ns == nil {
		return
	}
	s.setNode(nodeID, n, v, at)
}

func (s *Sim) setNode(nodeID string, n *server.Node, v any, at time.Time) {
	s.values[nodeID].Store(dataValue(v, at))
	s.ns.ChangeNotification(n.ID())
}

func dataValue(v any, at time.Time) *ua.DataValue {
	return &ua.DataValue{Value: ua.MustVariant(v), SourceTimestamp: at, EncodingMask: ua.DataValueValue | ua.DataValueSourceTimestamp}
}

// Set changes a node's value now and pins it: the simulation no longer
// overwrites it until Release (tests), e.g. Set("ns=2;s=cnc1.Temperature", 90.0).
func (s *Sim) Set(nodeID string, v any) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.nodes[nodeID]; !ok {
		return fmt.Errorf("opcuasim: unknown node %s", nodeID)
	}
	s.pinned[nodeID] = true
	s.setLocked(nodeID, v, time.Now())
	return nil
}

// Release lets the simulation drive a node set with Set again.
func (s *Sim) Release(nodeID string) {
	s.mu.Lock()
	delete(s.pinned, nodeID)
	s.mu.Unlock()
}
