package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gantry-iot/gantry/agent/collector"
	"github.com/gantry-iot/gantry/agent/config"
	"github.com/gantry-iot/gantry/agent/control"
	"github.com/gantry-iot/gantry/agent/enroll"
	"github.com/gantry-iot/gantry/agent/forward"
	"github.com/gantry-iot/gantry/agent/link"
	"github.com/gantry-iot/gantry/agent/queue"
	"github.com/gantry-iot/gantry/agent/tunnel"
	"github.com/gantry-iot/gantry/pkg/command"
	"github.com/gantry-iot/gantry/pkg/machinemodel"
	"github.com/gantry-iot/gantry/pkg/pprofserve"
	"github.com/gantry-iot/gantry/pkg/topics"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// loadConfig returns the configuration file's Config, or the defaults
// when no file is named.
func loadConfig(path string) (config.Config, error) {
	if path == "" {
		return config.Default(), nil
	}
	return config.Load(path)
}

// enrollCmd implements 'gantry-agent enroll'.
func enrollCmd(ctx context.Context, args []string, std stdio) error {
	fs := newFlags("enroll", "--server URL --token TOKEN [flags]", std)
	o := enroll.Options{AgentVersion: version}
	cfgFile := fs.String("config", "", "configuration file whose server, state_dir and server_ca_file are the defaults of the flags below")
	fs.StringVar(&o.Server, "server", "", "control plane URL, e.g. https://gantry.example.com (default: server of --config)")
	fs.StringVar(&o.Token, "token", "", "one-time enrollment token")
	fs.StringVar(&o.StateDir, "state-dir", "", "state directory (default: state_dir of --config, "+config.DefaultStateDir+")")
	fs.StringVar(&o.ServerCAFile, "server-ca", "", "PEM file to trust for the control plane's HTTPS certificate (private CA; default: server_ca_file of --config)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErrorf("enroll takes only flags, got %q", fs.Args())
	}
	cfg, err := loadConfig(*cfgFile)
	if err != nil {
		return err
	}
	if o.Server == "" {
		o.Server = cfg.Server
	}
	if o.StateDir == "" {
		o.StateDir = cfg.StateDir
	}
	if o.ServerCAFile == "" {
		o.ServerCAFile = cfg.ServerCAFile
	}
	st, err := enroll.Enroll(ctx, o)
	if err != nil {
		return err
	}
	fmt.Fprintf(std.out, "enrolled as device %s; broker %s; state in %s\n", st.DeviceID, st.MQTTURL, o.StateDir)
	return nil
}

// runCmd implements 'gantry-agent run'.
func runCmd(ctx context.Context, args []string, std stdio) error {
	fs := newFlags("run", "[flags]", std)
	cfgFile := fs.String("config", "", "configuration file (see firmware-config/); the flags below override it")
	dir := fs.String("state-dir", "", "state directory written by enroll (default: state_dir of the config, "+config.DefaultStateDir+")")
	metrics := fs.String("metrics-listen", "", "Prometheus metrics address, or off (default: metrics.listen of the config, "+config.DefaultMetricsListen+")")
	tplFile := fs.String("opcua-template", "", "local OPC-UA template (JSON: endpoint_url, security_mode, data_points) for tests and development: it wins over the template the control plane delivers, which is then refused (default: the delivered template persisted in the state directory)")
	simulate := fs.Float64("simulate", 0, "simulated agent: produce this many telemetry batches per second (a counter) instead of real machine data")
	pprofAddr := fs.String("pprof-listen", "", "serve Go profiles (net/http/pprof) on this address, e.g. 127.0.0.1:6060 (default: off)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErrorf("run takes only flags, got %q", fs.Args())
	}
	cfg, err := loadConfig(*cfgFile)
	if err != nil {
		return err
	}
	if *dir != "" {
		cfg.StateDir = *dir
	}
	if *metrics != "" {
		cfg.Metrics.Listen = *metrics
	}
	var tpl *machinemodel.OPCUA
	if *tplFile != "" {
		b, err := os.ReadFile(*tplFile)
		if err != nil {
			return err
		}
		var t machinemodel.OPCUA
		if err := json.Unmarshal(b, &t); err != nil {
			return fmt.Errorf("%s: %w", *tplFile, err)
		}
		if ps := t.Validate(); len(ps) > 0 {
			return fmt.Errorf("%s: %w", *tplFile, ps.Err())
		}
		tpl = &t
	}
	logger := cfg.Log.NewLogger(std.err).With("version", version)
	if *pprofAddr != "" {
		stop, err := pprofserve.Serve(*pprofAddr, logger)
		if err != nil {
			return err
		}
		defer stop()
	}
	return serve(ctx, cfg, *simulate, tpl, logger)
}

// totalsInterval is how often the running hours and energy totals are
// published as telemetry.
const totalsInterval = time.Minute

func serve(ctx context.Context, cfg config.Config, simulate float64, tpl *machinemodel.OPCUA, logger *slog.Logger) error {
	dir, metricsAddr := cfg.StateDir, cfg.Metrics.Listen
	st, cert, pool, err := enroll.Load(dir)
	if err != nil {
		return err
	}
	logger = logger.With("device", st.DeviceID)
	status := &statusPage{device: st.DeviceID}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	connected := prometheus.NewGauge(prometheus.GaugeOpts{Name: "gantry_agent_connected", Help: "1 while the MQTT session to the control plane is up."})
	commands := prometheus.NewCounter(prometheus.CounterOpts{Name: "gantry_agent_commands_received_total", Help: "Command messages received."})
	reg.MustRegister(connected, commands)
	if metricsAddr != config.MetricsOff {
		ln, err := net.Listen("tcp", metricsAddr)
		if err != nil {
			return fmt.Errorf("metrics: listen on %s: %w (choose another with --metrics-listen)", metricsAddr, err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.Handle("GET /status", status)
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)
		defer srv.Close()
		logger.Info("metrics listening", "addr", ln.Addr().String())
	}
	verifier, err := command.NewVerifier(st.CommandPublicKey, st.DeviceID, filepath.Join(dir, "nonces.json"), nil)
	if err != nil {
		return err
	}
	var consent func() error
	switch cfg.RemoteAccess.Consent.Mode {
	case config.ConsentFile:
		consent = tunnel.FileConsent(cfg.RemoteAccess.Consent.Path, false)
	case config.ConsentGPIO:
		consent = tunnel.FileConsent(cfg.RemoteAccess.Consent.Path, true)
	}
	// kernel_tun: New checks TUN, CAP_NET_ADMIN, nf_tables and ip_forward
	// and logs what is missing; the agent keeps running (no crash loop)
	// and refuses SSC grants with that error.
	tunnels := tunnel.New(tunnel.Options{Logger: logger.With("component", "tunnel"), Consent: consent, ListenPort: cfg.RemoteAccess.WireGuard.ListenPort,
		SSCMode: tunnel.SSCMode(cfg.RemoteAccess.SSCL3Mode)})
	defer tunnels.Close()
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gantry_agent_tunnels", Help: "Remote-access tunnels up (one per active grant)."}, func() float64 { return float64(len(tunnels.Active())) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gantry_agent_ssc_kernel_tun_unavailable", Help: "1 while ssc_l3_mode is kernel_tun but the host check failed (see the log: drop-in, sysctls); SSC grants are refused."}, func() float64 {
			if tunnels.KernelTUNErr() != nil {
				return 1
			}
			return 0
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "gantry_agent_tunnel_connections_total", Help: "Connections forwarded to machine-network targets."}, func() float64 { return float64(tunnels.Stats.ConnsOpened.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "gantry_agent_tunnel_refused_total", Help: "Tunnel connection requests refused (target not allowed, no consent, unreachable)."}, func() float64 { return float64(tunnels.Stats.ConnsRefused.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "gantry_agent_ssc_flows_total", Help: "Secure Service Connect flows (TCP, UDP, ICMP echo) routed to the machine network."}, func() float64 { return float64(tunnels.Stats.FlowsOpened.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "gantry_agent_ssc_flows_refused_total", Help: "Secure Service Connect flows refused (outside the grant's subnets or ports, no consent, unreachable)."}, func() float64 { return float64(tunnels.Stats.FlowsRefused.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "gantry_agent_tunnel_bytes_total", Help: "Bytes forwarded between tunnels and the machine network (both directions, data link, VNC and SSC)."}, func() float64 {
			return float64(tunnels.Stats.BytesToTarget.Load() + tunnels.Stats.BytesFromTarget.Load())
		}))
	// Commands may arrive as soon as the link is up, before the queue and
	// the collection exist: they wait for it.
	var colp atomic.Pointer[collection]
	collectionReady, serveDone := make(chan struct{}), make(chan struct{})
	defer close(serveDone)
	withCollection := func(f func(*collection) error) error {
		select {
		case <-collectionReady:
		case <-serveDone:
			return errors.New("the agent is stopping")
		}
		return f(colp.Load())
	}
	handler := control.New(verifier, control.Actions{
		TunnelUp:   tunnels.Up,
		TunnelDown: tunnels.Down,
		Browse: func(b *gantryv1.Browse) (*gantryv1.BrowseResult, error) {
			var res *gantryv1.BrowseResult
			err := withCollection(func(c *collection) error {
				var err error
				res, err = browse(ctx, b, c)
				return err
			})
			return res, err
		},
		ReloadConfig: func() error {
			_, _, _, err := enroll.Load(dir) // re-read and check the state directory
			return err
		},
		ApplyTemplate: func(t *gantryv1.DeviceTemplate) error {
			return withCollection(func(c *collection) error { return c.apply(t) })
		},
		RestartCollector: func() error {
			return withCollection(func(c *collection) error { return c.restart() })
		},
	}, logger)
	qdir := cfg.QueueDir()
	// The queue reads a zero SyncDelay as "default"; the config's 0s means
	// "do not wait", which the shortest window gives.
	q, err := queue.Open(qdir, queue.Options{MaxBytes: int64(cfg.Queue.MaxMB) << 20, SegmentBytes: int64(cfg.Queue.SegmentMB) << 20, SyncDelay: max(cfg.Queue.SyncInterval, time.Nanosecond), Logger: logger})
	if err != nil {
		return err
	}
	defer q.Close()
	// The collector and edge rules of the current template run from the
	// start, before and independent of the broker connection: with a
	// persisted template the agent collects into its queue while the
	// control plane is unreachable. Stopped (the rules' totals saved)
	// after the forwarder, before the queue closes.
	cctx, stopCollect := context.WithCancel(ctx)
	defer stopCollect()
	col := newCollection(cctx, cfg, st.DeviceID, q, status, logger)
	defer col.stop()
	if err := col.start(tpl); err != nil {
		return err
	}
	colp.Store(col)
	close(collectionReady)
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gantry_agent_opcua_template_version",
		Help: "Version of the delivered OPC-UA template the agent runs (0: none, or a local --opcua-template)."}, func() float64 {
		if t := status.template.Load(); t != nil {
			return float64(t.Version)
		}
		return 0
	}))
	var lnk atomic.Pointer[link.Link]
	l, err := link.Dial(ctx, link.Config{DeviceID: st.DeviceID, BrokerURL: st.MQTTURL, Certificate: cert, RootCAs: pool, AgentVersion: version,
		KeepAlive: cfg.MQTT.KeepAlive, ConnectTimeout: cfg.MQTT.ConnectTimeout, MaxBackoff: cfg.MQTT.Reconnect.Max, MinBackoff: cfg.MQTT.Reconnect.Min, Jitter: cfg.MQTT.Reconnect.Jitter,
		OnCommand: func(p []byte) {
			commands.Inc()
			ack := handler.Handle(p)
			if l := lnk.Load(); l != nil {
				pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				if err := l.Publish(pctx, topics.CmdAck, ack); err != nil {
					logger.Warn("command ack not sent", "err", err)
				}
			}
		}}, logger)
	if err != nil {
		return err
	}
	lnk.Store(l)
	connected.Set(1)
	status.connected.Store(true)
	pub := &countingPublisher{Publisher: l}
	dataPathMetrics(reg, status, pub)
	fw := forward.New(q, pub, cfg.MQTT.InflightWindow, logger)
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gantry_agent_queue_records", Help: "Records waiting in the store-and-forward queue."}, func() float64 { return float64(q.Stats().Records) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gantry_agent_queue_bytes", Help: "Bytes of the store-and-forward queue on disk."}, func() float64 { return float64(q.Stats().Bytes) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "gantry_agent_queue_dropped_total", Help: "Records dropped because the queue was full."}, func() float64 { return float64(q.Stats().Dropped) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "gantry_agent_messages_sent_total", Help: "Queued messages (telemetry and events) acknowledged by the broker."}, func() float64 { return float64(fw.Stats.Acked.Load()) }))
	// Goroutines below are owned by serve: on return it stops them and
	// waits (before the queue's close, which an earlier defer does).
	fctx, stopForward := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		stopForward()
		wg.Wait()
	}()
	wg.Go(func() {
		if err := fw.Run(fctx); err != nil && !errors.Is(err, context.Canceled) {
			logger.Error("forwarder stopped", "err", err)
		}
	})
	if simulate > 0 {
		wg.Go(func() { simulateTelemetry(fctx, q, simulate, logger) })
	}
	logger.Info("agent running", "queue", qdir, "simulate", simulate)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			logger.Info("agent stopping")
			stopForward()
			return l.Close()
		case <-tick.C:
			if l.Connected() {
				connected.Set(1)
				status.connected.Store(true)
			} else {
				connected.Set(0)
				status.connected.Store(false)
			}
		}
	}
}

// simulateTelemetry appends a batch with an increasing counter rate times
// per second, continuing from the queue's last sequence after a restart.
func simulateTelemetry(ctx context.Context, q *queue.Queue, rate float64, logger *slog.Logger) {
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			b, _ := proto.Marshal(&gantryv1.TelemetryBatch{Samples: []*gantryv1.Sample{{Point: "sim.counter", Value: float64(now.UnixNano()), At: timestamppb.New(now)}}})
			if _, err := q.Append(ctx, b); err != nil && ctx.Err() == nil {
				logger.Warn("simulated telemetry not queued", "err", err)
			}
		}
	}
}

// browse runs a Browse command: the endpoint defaults to the template's.
func browse(ctx context.Context, b *gantryv1.Browse, c *collection) (*gantryv1.BrowseResult, error) {
	r := collector.BrowseRequest{Endpoint: b.GetEndpointUrl(), Root: b.GetNodeId(), MaxDepth: int(b.GetMaxDepth()), MaxNodes: int(b.GetMaxNodes())}
	if r.Endpoint == "" {
		tpl, ok := c.template()
		if !ok {
			return nil, errNoTemplate
		}
		r.Endpoint = tpl.EndpointURL
	}
	bctx, cancel := context.WithTimeout(ctx, 25*time.Second)
	defer cancel()
	nodes, truncated, err := collector.Browse(bctx, r)
	if err != nil {
		return nil, err
	}
	out := &gantryv1.BrowseResult{Truncated: truncated}
	for _, n := range nodes {
		out.Nodes = append(out.Nodes, &gantryv1.BrowsedNode{NodeId: n.NodeID, ParentId: n.ParentID, BrowseName: n.BrowseName, DisplayName: n.DisplayName, NodeClass: n.NodeClass, Depth: uint32(n.Depth)})
	}
	return out, nil
}

// collectorSecurity reads how the agent meets the template's endpoint.
// The config's endpoint with the same URL gives the security policy, the
// login (username with password_file) and, when it is not None, the
// security mode (the site's setting wins over the template's). A secured
// mode uses the agent's OPC-UA client certificate, created in the state
// directory on first use, and pins the server's certificate there on
// first contact.
func collectorSecurity(cfg config.Config, tpl machinemodel.OPCUA, deviceID string) (machinemodel.OPCUA, collector.Security, error) {
	var sec collector.Security
	for _, ep := range cfg.OPCUA.Endpoints {
		if ep.URL != tpl.EndpointURL {
			continue
		}
		if ep.SecurityMode != "" && ep.SecurityMode != config.SecurityModeNone {
			tpl.SecurityMode = string(ep.SecurityMode)
		}
		if ep.SecurityPolicy != "" && ep.SecurityPolicy != config.SecurityPolicyNone {
			sec.Policy = string(ep.SecurityPolicy)
		}
		switch ep.Auth.Type {
		case config.AuthUsername:
			b, err := os.ReadFile(ep.Auth.PasswordFile)
			if err != nil {
				return tpl, sec, fmt.Errorf("opcua endpoint %s: password_file: %w", ep.Name, err)
			}
			sec.Username, sec.Password = ep.Auth.Username, strings.TrimRight(string(b), "\r\n")
		case config.AuthCertificate:
			uc, err := collector.LoadUserCertificate(ep.Auth.CertFile, ep.Auth.KeyFile)
			if err != nil {
				return tpl, sec, fmt.Errorf("opcua endpoint %s: %w", ep.Name, err)
			}
			sec.UserCert = uc
		}
		break
	}
	if tpl.SecurityMode != "None" {
		id, err := collector.LoadOrCreateIdentity(cfg.StateDir, "urn:gantry:agent:"+deviceID)
		if err != nil {
			return tpl, sec, err
		}
		sec.Identity = id
		sec.TrustDir = filepath.Join(cfg.StateDir, "opcua-trust")
	}
	return tpl, sec, nil
}

// statusPage serves GET /status on the metrics address: the MQTT link and
// the OPC-UA collector's connection and per-point states, as JSON, so a
// technician on site (or a monitoring system) sees why data is missing.
type statusPage struct {
	device    string
	connected atomic.Bool
	collector atomic.Pointer[collector.Collector]
	template  atomic.Pointer[templateStatus]
}

func (p *statusPage) setTemplate(t templateStatus) { p.template.Store(&t) }

func (p *statusPage) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	type opcuaStatus struct {
		Endpoint string                  `json:"endpoint"`
		State    string                  `json:"state"`
		Points   []collector.PointStatus `json:"points"`
	}
	out := struct {
		Device        string          `json:"device"`
		MQTTConnected bool            `json:"mqtt_connected"`
		Template      *templateStatus `json:"template,omitempty"`
		OPCUA         *opcuaStatus    `json:"opcua,omitempty"`
	}{Device: p.device, MQTTConnected: p.connected.Load(), Template: p.template.Load()}
	if c := p.collector.Load(); c != nil {
		out.OPCUA = &opcuaStatus{Endpoint: c.Endpoint(), State: c.State(), Points: c.Statuses()}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}
