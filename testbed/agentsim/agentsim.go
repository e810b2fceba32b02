// Package agentsim runs many simulated edge agents in one process against
// a control plane, for load tests. Each simulated agent is a real device:
// it is registered and given a one-time enrollment token through the
// public API, enrolls with agent/enroll (key generated locally, CSR over
// gRPC), connects with agent/link (mTLS, will, retained online state),
// answers signed commands through agent/control, and publishes protobuf
// TelemetryBatch messages with QoS 1 at a given rate with jitter. A run
// reports enrollment and connection times, messages sent and acknowledged,
// publish latency (until PUBACK), errors by kind and the process's RSS and
// CPU time.
//
// Only the agent's transport is simulated at scale: there is no OPC-UA
// collector and no store-and-forward queue (a publish that fails is
// counted, not retried).
package agentsim

import (
	"context"
	crand "crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gantry-iot/gantry/agent/control"
	"github.com/gantry-iot/gantry/agent/enroll"
	"github.com/gantry-iot/gantry/agent/link"
	"github.com/gantry-iot/gantry/pkg/command"
	"github.com/gantry-iot/gantry/pkg/topics"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
	"github.com/gantry-iot/gantry/proto/gantry/v1/gantryv1connect"
)

// AgentVersion is what simulated agents report.
const AgentVersion = "agentsim"

// Config configures a run. Zero values of the optional fields take the
// defaults documented on them; Validate reports what is wrong.
type Config struct {
	Server   string // control plane URL, http://host:port (--dev) or https://
	ServerCA string // PEM file to trust for an https server with a private CA
	Email    string // user with Edge Devices = manage (needed unless every agent is already enrolled in StateDir)
	Password string

	Agents int           // number of simulated agents, ≥ 1
	Rate   float64       // telemetry messages per second per agent, > 0
	Batch  int           // samples per message, 1..10000
	Run    time.Duration // how long to publish after all agents connected; 0 = until the context ends

	Concurrency        int           // parallel enrollments; default 16
	ConnectConcurrency int           // parallel MQTT connects; default 256
	ConnectTimeout     time.Duration // per agent; default 60s
	PublishTimeout     time.Duration // wait for a PUBACK; default 10s
	Progress           time.Duration // progress log interval; default 5s, <0 disables

	// Light connects the agents with a small MQTT client (one goroutine
	// per agent, no reconnect; see lightConn) instead of the agent's own
	// link (paho), so that the load generator leaves more of a shared
	// machine to the control plane. Reconnect tests need the link.
	Light bool

	// StateDir keeps the agents' state directories (StateDir/agent-00000,
	// …) after the run; agents already enrolled there are reused without
	// touching the API. Empty: a temporary directory removed afterwards.
	StateDir string
}

// Validate checks cfg and fills defaults.
func (c *Config) Validate() error {
	var errs []error
	u, err := url.Parse(c.Server)
	if c.Server == "" {
		errs = append(errs, errors.New("--server is required (e.g. http://127.0.0.1:8080 for a --dev control plane)"))
	} else if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		errs = append(errs, fmt.Errorf("--server %q: want http(s)://host:port", c.Server))
	}
	if c.Agents < 1 {
		errs = append(errs, fmt.Errorf("--agents %d: want at least 1", c.Agents))
	}
	if !(c.Rate > 0) || math.IsInf(c.Rate, 0) || c.Rate > 1000 {
		errs = append(errs, fmt.Errorf("--rate %v: want messages per second per agent in (0, 1000]", c.Rate))
	}
	if c.Batch < 1 || c.Batch > 10000 {
		errs = append(errs, fmt.Errorf("--batch %d: want 1..10000 samples per message (the control plane refuses larger batches)", c.Batch))
	}
	if c.Run < 0 {
		errs = append(errs, fmt.Errorf("--duration %v: want ≥ 0 (0 runs until interrupted)", c.Run))
	}
	if c.Concurrency < 0 || c.ConnectConcurrency < 0 {
		errs = append(errs, errors.New("--concurrency and --connect-concurrency must be ≥ 1"))
	}
	if c.ConnectTimeout < 0 || c.PublishTimeout < 0 {
		errs = append(errs, errors.New("timeouts must be positive"))
	}
	if c.StateDir != "" {
		if fi, err := os.Stat(c.StateDir); err == nil && !fi.IsDir() {
			errs = append(errs, fmt.Errorf("--state %s is not a directory", c.StateDir))
		}
	}
	if c.Concurrency == 0 {
		c.Concurrency = 16
	}
	if c.ConnectConcurrency == 0 {
		c.ConnectConcurrency = 256
	}
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 60 * time.Second
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = 10 * time.Second
	}
	if c.Progress == 0 {
		c.Progress = 5 * time.Second
	}
	return errors.Join(errs...)
}

// Summary is the outcome of a run.
type Summary struct {
	Agents         int
	Reused         int // already enrolled in StateDir
	Enrolled       int // newly enrolled in this run
	EnrollTime     time.Duration
	Connected      int
	ConnectTime    time.Duration // from the first connect attempt until every agent is connected
	RunTime        time.Duration // publishing phase
	Sent, Acked    int64         // telemetry messages; Acked got their PUBACK
	Values         int64         // samples in acknowledged messages
	Commands       int64         // commands received
	P50, P99       time.Duration // publish latency until PUBACK
	Errors         map[string]int64
	RSS            int64 // bytes, at the end of the publishing phase
	CPU            time.Duration
	EnrolledPerSec float64
	AckedPerSec    float64
}

// Sim is one run of simulated agents.
type Sim struct {
	cfg Config
	log *slog.Logger
	c   counters
	lat latencies

	ready    chan struct{}
	mu       sync.Mutex
	devices  []string
	live     []*agent
	attempts []Attempt
}

// Connected counts the agents whose MQTT session is up now, as the agents
// see it (valid after Ready).
func (s *Sim) Connected() int {
	s.mu.Lock()
	live := s.live
	s.mu.Unlock()
	n := 0
	for _, a := range live {
		if l := a.conn(); l != nil && l.Connected() {
			n++
		}
	}
	return n
}

// Attempt is one reconnect attempt of an agent's link (after a lost
// connection), recorded when it starts.
type Attempt struct {
	Agent int
	N     int // attempt number in this outage
	At    time.Time
}

// Reconnect schedule of the simulated agents: the agent's defaults
// (agent/config: mqtt.reconnect).
const (
	ReconnectMin    = time.Second
	ReconnectMax    = time.Minute
	ReconnectJitter = 1.0
)

// Attempts returns the reconnect attempts so far.
func (s *Sim) Attempts() []Attempt {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Attempt(nil), s.attempts...)
}

// New returns a Sim for a validated cfg. logger may be nil.
func New(cfg Config, logger *slog.Logger) (*Sim, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Sim{cfg: cfg, log: logger, ready: make(chan struct{})}, nil
}

// Ready is closed when every agent that could connect is connected and
// publishing has started.
func (s *Sim) Ready() <-chan struct{} { return s.ready }

// DeviceIDs returns the IDs of the connected agents (valid after Ready).
func (s *Sim) DeviceIDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.devices...)
}

type agent struct {
	i    int
	dir  string
	st   enroll.State
	cert tls.Certificate
	pool *x509.CertPool
	ref  atomic.Pointer[connRef]
	h    *control.Handler
}

type connRef struct{ c conn }

// conn returns the agent's MQTT session (nil before it connected).
func (a *agent) conn() conn {
	if r := a.ref.Load(); r != nil {
		return r.c
	}
	return nil
}

// Run enrolls, connects and runs the agents until cfg.Run has passed or
// ctx ends, then stops them cleanly (in-flight publishes finish, every
// agent publishes its offline state and disconnects). A cancelled ctx is a
// clean stop, not an error; Run fails only if no agent could connect.
func (s *Sim) Run(ctx context.Context) (Summary, error) {
	sum := Summary{Agents: s.cfg.Agents}
	root := s.cfg.StateDir
	if root == "" {
		d, err := os.MkdirTemp("", "agentsim-")
		if err != nil {
			return sum, fmt.Errorf("agentsim: state dir: %w", err)
		}
		defer os.RemoveAll(d)
		root = d
	} else if err := os.MkdirAll(root, 0o700); err != nil {
		return sum, fmt.Errorf("agentsim: state dir: %w", err)
	}

	agents, err := s.provision(ctx, root, &sum)
	if sum.EnrollTime > 0 {
		sum.EnrolledPerSec = float64(sum.Enrolled) / sum.EnrollTime.Seconds()
	}
	s.log.Info("enrollment done", "reused", sum.Reused, "enrolled", sum.Enrolled, "of", s.cfg.Agents, "took", sum.EnrollTime.Round(time.Millisecond), "per_second", round1(sum.EnrolledPerSec))
	if err != nil {
		s.finish(&sum)
		if ctx.Err() != nil {
			return sum, nil // interrupted: a clean stop
		}
		return sum, err
	}

	start := time.Now()
	live := s.connect(ctx, agents)
	sum.ConnectTime = time.Since(start)
	sum.Connected = len(live)
	s.log.Info("connect done", "connected", len(live), "of", len(agents), "took", sum.ConnectTime.Round(time.Millisecond))
	if len(live) == 0 {
		s.finish(&sum)
		if ctx.Err() != nil {
			return sum, nil
		}
		return sum, errors.New("agentsim: no agent could connect to the broker")
	}
	ids := make([]string, len(live))
	for i, a := range live {
		ids[i] = a.st.DeviceID
	}
	s.mu.Lock()
	s.devices, s.live = ids, live
	s.mu.Unlock()

	runCtx, stop := context.WithCancel(ctx)
	if s.cfg.Run > 0 {
		runCtx, stop = context.WithTimeout(ctx, s.cfg.Run)
	}
	defer stop()
	start = time.Now()
	var wg sync.WaitGroup
	points := make([]string, s.cfg.Batch)
	for i := range points {
		points[i] = "sim.p" + strconv.Itoa(i)
	}
	for _, a := range live {
		wg.Go(func() { s.publish(runCtx, a, points) })
	}
	progressDone := make(chan struct{})
	go func() { defer close(progressDone); s.progress(runCtx, live) }()
	close(s.ready)
	<-runCtx.Done()
	wg.Wait()
	sum.RunTime = time.Since(start)
	<-progressDone
	sum.RSS = ProcRSS(0)
	s.log.Info("stopping agents", "agents", len(live))
	var cw sync.WaitGroup
	for _, a := range live {
		cw.Go(func() {
			if l := a.conn(); l != nil {
				_ = l.Close()
			}
		})
	}
	cw.Wait()
	s.finish(&sum)
	return sum, nil
}

func (s *Sim) finish(sum *Summary) {
	sum.Sent, sum.Acked, sum.Values, sum.Commands = s.c.sent.Load(), s.c.acked.Load(), s.c.values.Load(), s.c.commands.Load()
	sum.P50, sum.P99 = s.lat.total()
	sum.Errors = s.c.errors()
	if sum.RSS == 0 {
		sum.RSS = ProcRSS(0)
	}
	sum.CPU = ProcCPU(0)
	if sum.RunTime > 0 {
		sum.AckedPerSec = float64(sum.Acked) / sum.RunTime.Seconds()
	}
}

// provision loads already enrolled agents from root and enrolls the rest.
func (s *Sim) provision(ctx context.Context, root string, sum *Summary) ([]*agent, error) {
	agents := make([]*agent, s.cfg.Agents)
	var todo []*agent
	for i := range agents {
		a := &agent{i: i, dir: filepath.Join(root, fmt.Sprintf("agent-%05d", i))}
		agents[i] = a
		if st, cert, pool, err := enroll.Load(a.dir); err == nil {
			a.st, a.cert, a.pool = st, cert, pool
			sum.Reused++
			continue
		}
		todo = append(todo, a)
	}
	if len(todo) == 0 {
		return agents, nil
	}
	api, closeAPI, err := s.login(ctx)
	if err != nil {
		return nil, err
	}
	defer closeAPI()
	run := make([]byte, 3)
	_, _ = crand.Read(run)
	prefix := "agentsim-" + hex.EncodeToString(run)
	start := time.Now()
	jobs := make(chan *agent)
	var wg sync.WaitGroup
	for range min(s.cfg.Concurrency, len(todo)) {
		wg.Go(func() {
			for a := range jobs {
				if err := s.enrollOne(ctx, api, prefix, a); err != nil {
					s.log.Warn("agent not enrolled", "agent", a.i, "err", err)
					continue
				}
				s.c.enrolled.Add(1)
			}
		})
	}
feed:
	for _, a := range todo {
		select {
		case jobs <- a:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	sum.EnrollTime = time.Since(start)
	sum.Enrolled = int(s.c.enrolled.Load())
	ok := agents[:0]
	for _, a := range agents {
		if a.st.DeviceID != "" {
			ok = append(ok, a)
		}
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if len(ok) == 0 {
		return nil, errors.New("agentsim: no agent could enroll (see the warnings above)")
	}
	return ok, nil
}

func (s *Sim) enrollOne(ctx context.Context, api gantryv1connect.DeviceServiceClient, prefix string, a *agent) error {
	name := fmt.Sprintf("%s-%05d", prefix, a.i)
	dev, err := api.CreateDevice(ctx, connect.NewRequest(&gantryv1.CreateDeviceRequest{Name: name, SerialNumber: name, Model: "agentsim"}))
	if err != nil {
		s.c.fail(ErrKindCreateDevice)
		return fmt.Errorf("create device: %w", err)
	}
	tok, err := api.CreateEnrollmentToken(ctx, connect.NewRequest(&gantryv1.CreateEnrollmentTokenRequest{DeviceId: dev.Msg.Device.Id}))
	if err != nil {
		s.c.fail(ErrKindToken)
		return fmt.Errorf("enrollment token: %w", err)
	}
	if _, err := enroll.Enroll(ctx, enroll.Options{Server: s.cfg.Server, Token: tok.Msg.Token, StateDir: a.dir, ServerCAFile: s.cfg.ServerCA, AgentVersion: AgentVersion}); err != nil {
		s.c.fail(ErrKindEnroll)
		return err
	}
	st, cert, pool, err := enroll.Load(a.dir)
	if err != nil {
		s.c.fail(ErrKindLoadState)
		return err
	}
	a.st, a.cert, a.pool = st, cert, pool
	return nil
}

// login returns a DeviceService client authenticated as cfg.Email and a
// function that closes its idle connections.
func (s *Sim) login(ctx context.Context) (gantryv1connect.DeviceServiceClient, func(), error) {
	if s.cfg.Email == "" || s.cfg.Password == "" {
		return nil, nil, errors.New("agentsim: --email and --password (or GANTRY_PASSWORD) of a user with Edge Devices = manage are needed to register devices")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = s.cfg.Concurrency
	if s.cfg.ServerCA != "" {
		b, err := os.ReadFile(s.cfg.ServerCA)
		if err != nil {
			return nil, nil, fmt.Errorf("agentsim: --server-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			return nil, nil, fmt.Errorf("agentsim: --server-ca %s holds no PEM certificate", s.cfg.ServerCA)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	hc := &http.Client{Transport: tr, Timeout: 60 * time.Second}
	r, err := gantryv1connect.NewSessionServiceClient(hc, s.cfg.Server).Login(ctx, connect.NewRequest(&gantryv1.LoginRequest{Email: s.cfg.Email, Password: s.cfg.Password}))
	if err != nil {
		tr.CloseIdleConnections()
		return nil, nil, fmt.Errorf("agentsim: login as %s: %w", s.cfg.Email, err)
	}
	tok := r.Msg.Token
	auth := connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			req.Header().Set("Authorization", "Bearer "+tok)
			return next(ctx, req)
		}
	})
	return gantryv1connect.NewDeviceServiceClient(hc, s.cfg.Server, connect.WithInterceptors(auth)), tr.CloseIdleConnections, nil
}

// connect dials every agent's MQTT session and returns those connected.
func (s *Sim) connect(ctx context.Context, agents []*agent) []*agent {
	linkLog := slog.New(newLimitedHandler(s.log.Handler(), slog.LevelWarn, 10*time.Second)).With("component", "link")
	jobs := make(chan *agent)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var live []*agent
	for range min(s.cfg.ConnectConcurrency, len(agents)) {
		wg.Go(func() {
			for a := range jobs {
				if err := s.connectOne(ctx, a, linkLog); err != nil {
					if ctx.Err() == nil {
						s.c.fail(ErrKindConnect)
						s.log.Warn("agent not connected", "agent", a.i, "device", a.st.DeviceID, "err", err)
					}
					continue
				}
				s.c.connected.Add(1)
				mu.Lock()
				live = append(live, a)
				mu.Unlock()
			}
		})
	}
feed:
	for _, a := range agents {
		select {
		case jobs <- a:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	return live
}

func (s *Sim) connectOne(ctx context.Context, a *agent, logger *slog.Logger) error {
	v, err := command.NewVerifier(a.st.CommandPublicKey, a.st.DeviceID, "", nil)
	if err != nil {
		return err
	}
	a.h = control.New(v, control.Actions{}, logger)
	dctx, cancel := context.WithTimeout(ctx, s.cfg.ConnectTimeout)
	defer cancel()
	if s.cfg.Light {
		u, err := url.Parse(a.st.MQTTURL)
		if err != nil {
			return fmt.Errorf("agentsim: broker URL %q: %w", a.st.MQTTURL, err)
		}
		tc := &tls.Config{Certificates: []tls.Certificate{a.cert}, RootCAs: a.pool, ServerName: u.Hostname(), MinVersion: tls.VersionTLS12,
			ClientSessionCache: tls.NewLRUClientSessionCache(1)}
		c, err := dialLight(dctx, a.st.DeviceID, a.st.MQTTURL, AgentVersion, tc, func(p []byte) { s.command(a, p) })
		if err != nil {
			return err
		}
		a.ref.Store(&connRef{c})
		return nil
	}
	// Each agent's link keeps its own TLS session cache, so a restarted
	// control plane (same ticket keys) resumes the sessions.
	l, err := link.Dial(dctx, link.Config{DeviceID: a.st.DeviceID, BrokerURL: a.st.MQTTURL, Certificate: a.cert, RootCAs: a.pool, AgentVersion: AgentVersion,
		MinBackoff: ReconnectMin, MaxBackoff: ReconnectMax, Jitter: ReconnectJitter,
		OnAttempt: func(n int) {
			at := time.Now()
			s.mu.Lock()
			s.attempts = append(s.attempts, Attempt{Agent: a.i, N: n, At: at})
			s.mu.Unlock()
		},
		OnCommand: func(p []byte) { s.command(a, p) }}, logger)
	if err != nil {
		return err
	}
	a.ref.Store(&connRef{l})
	return nil
}

// command verifies and answers one command like the real agent does.
func (s *Sim) command(a *agent, payload []byte) {
	s.c.commands.Add(1)
	rejected := a.h.Stats.Rejected.Load()
	ack := a.h.Handle(payload)
	if a.h.Stats.Rejected.Load() != rejected {
		s.c.fail(ErrKindCommand)
	}
	l := a.conn()
	if l == nil {
		s.c.fail(ErrKindAck)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.PublishTimeout)
	defer cancel()
	if err := l.Publish(ctx, topics.CmdAck, ack); err != nil {
		s.c.fail(ErrKindAck)
	}
}

// publish sends telemetry for one agent at cfg.Rate with ±10 % jitter,
// starting at a random phase so agents do not publish in lockstep. Each
// publish waits for its PUBACK; ticks missed meanwhile are counted as
// behind schedule, not sent later.
func (s *Sim) publish(ctx context.Context, a *agent, points []string) {
	l := a.conn()
	interval := time.Duration(float64(time.Second) / s.cfg.Rate)
	rng := rand.New(rand.NewPCG(uint64(a.i), uint64(time.Now().UnixNano())))
	// Sequence numbers grow across runs that reuse a state dir, so a
	// running control plane does not count them as redeliveries.
	seq := uint64(time.Now().UnixMicro())
	next := time.Now().Add(time.Duration(rng.Int64N(int64(interval))))
	t := time.NewTimer(time.Until(next))
	defer t.Stop()
	samples := make([]*gantryv1.Sample, len(points))
	for i, p := range points {
		samples[i] = &gantryv1.Sample{Point: p}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		seq++
		now := time.Now()
		ts := timestamppb.New(now)
		for i, sm := range samples {
			sm.Value = 50 + 10*math.Sin(float64(seq)/10+float64(i))
			sm.At = ts
		}
		payload, _ := proto.Marshal(&gantryv1.TelemetryBatch{Seq: seq, Samples: samples})
		s.c.sent.Add(1)
		// In-flight publishes finish after ctx ends (bounded by the
		// timeout), so acknowledged counts stay exact on a clean stop.
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.PublishTimeout)
		err := l.Publish(pctx, topics.Telemetry, payload)
		cancel()
		switch {
		case err == nil:
			s.lat.add(time.Since(now))
			s.c.acked.Add(1)
			s.c.values.Add(int64(len(samples)))
		case errors.Is(err, context.DeadlineExceeded):
			s.c.fail(ErrKindTimeout)
		default:
			s.c.fail(ErrKindPublish)
		}
		jitter := time.Duration((rng.Float64()*0.2 - 0.1) * float64(interval))
		next = next.Add(interval + jitter)
		if late := time.Since(next); late > 0 {
			missed := int64(late/interval) + 1
			for range missed {
				s.c.fail(ErrKindBehind)
			}
			next = next.Add(time.Duration(missed) * interval)
		}
		t.Reset(time.Until(next))
	}
}

// progress logs the live figures every cfg.Progress until ctx ends.
func (s *Sim) progress(ctx context.Context, agents []*agent) {
	if s.cfg.Progress < 0 {
		<-ctx.Done()
		return
	}
	t := time.NewTicker(s.cfg.Progress)
	defer t.Stop()
	lastAcked, last := s.c.acked.Load(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			connected := 0
			for _, a := range agents {
				if l := a.conn(); l != nil && l.Connected() {
					connected++
				}
			}
			acked := s.c.acked.Load()
			p50, p99 := s.lat.takeWindow()
			errs := int64(0)
			for _, n := range s.c.errors() {
				errs += n
			}
			s.log.Info("progress", "connected", connected, "sent", s.c.sent.Load(), "acked", acked,
				"acked_per_second", round1(float64(acked-lastAcked)/now.Sub(last).Seconds()),
				"p50_ms", ms(p50), "p99_ms", ms(p99), "errors", errs, "commands", s.c.commands.Load(), "rss_mib", s.rssMiB())
			lastAcked, last = acked, now
		}
	}
}

func (s *Sim) rssMiB() int64 { return ProcRSS(0) >> 20 }

func ms(d time.Duration) float64 { return round1(float64(d) / float64(time.Millisecond)) }

func round1(f float64) float64 { return math.Round(f*10) / 10 }
