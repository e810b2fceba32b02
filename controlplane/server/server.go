// Package server assembles the control plane: store, identity and API
// services, HTTP listener (portal, JSON API and gRPC on one port),
// Prometheus metrics and, in dev mode, demo data.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gantry-iot/gantry/controlplane/api"
	"github.com/gantry-iot/gantry/controlplane/authz"
	"github.com/gantry-iot/gantry/controlplane/broker"
	"github.com/gantry-iot/gantry/controlplane/cases"
	"github.com/gantry-iot/gantry/controlplane/commands"
	"github.com/gantry-iot/gantry/controlplane/errkind"
	"github.com/gantry-iot/gantry/controlplane/extbroker"
	"github.com/gantry-iot/gantry/controlplane/fleet"
	"github.com/gantry-iot/gantry/controlplane/identity"
	"github.com/gantry-iot/gantry/controlplane/notify"
	"github.com/gantry-iot/gantry/controlplane/pki"
	portalpkg "github.com/gantry-iot/gantry/controlplane/portal"
	"github.com/gantry-iot/gantry/controlplane/presence"
	"github.com/gantry-iot/gantry/controlplane/remote"
	"github.com/gantry-iot/gantry/controlplane/revocation"
	"github.com/gantry-iot/gantry/controlplane/store"
	"github.com/gantry-iot/gantry/controlplane/telemetry"
	"github.com/gantry-iot/gantry/pkg/topics"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/protobuf/proto"
)

// Config is the validated configuration of a control-plane process.
type Config struct {
	Dev       bool   // plain HTTP on loopback, demo data
	Listen    string // host:port; ":0" picks a free port
	DataDir   string // SQLite file and other state
	StoreDSN  string // empty: SQLite in DataDir; postgres://… for PostgreSQL
	PortalURL string // external base URL; empty: derived from the listener
	TLSCert   string // PEM files for HTTPS (required outside dev mode)
	TLSKey    string
	Demo      bool // seed demo data into an empty store
	// ConferenceURL is the conferencing provider's base URL for case rooms.
	ConferenceURL string
	// MQTTListen is the embedded broker's TLS address; "off" disables it.
	MQTTListen string
	// MQTTPublicURL is the broker URL handed to devices (default: the
	// embedded broker's address, or MQTTExternal).
	MQTTPublicURL string
	// MQTTExternal, tls://host:port, makes the control plane use an
	// external broker (Mosquitto, deploy/mosquitto) instead of the
	// embedded one, connecting with its own client certificate (CN
	// gantry-controlplane) from its CA. Requires MQTTCRLFile.
	MQTTExternal string
	// MQTTCRLFile is where the CRL of revoked device certificates is
	// written (PEM) for the external broker's crlfile.
	MQTTCRLFile string
	// MQTTCRLReload is a command (split at spaces, no shell) run after each
	// CRL rewrite so the broker loads it, e.g. "systemctl reload mosquitto".
	MQTTCRLReload string
	// MQTTIngestClients is the number of shared-subscription clients that
	// receive telemetry from the external broker (0: 4).
	MQTTIngestClients int
	// PresenceInterval is how often coalesced online states are written
	// (0: 150 ms).
	PresenceInterval time.Duration
	// MQTTTicketKeyPeriod is how often the embedded broker's TLS
	// session-ticket key (DataDir/pki/session-ticket-keys.pem) is replaced;
	// the previous key still decrypts. 0: pki.DefaultTicketKeyPeriod.
	MQTTTicketKeyPeriod time.Duration
	// HistoryRetention bounds the stored value history (default 7 days).
	HistoryRetention time.Duration
	// IngestMaxGroup is the most telemetry batches stored in one
	// transaction (0: telemetry's default).
	IngestMaxGroup int
	// IngestWriters is how many telemetry transactions run at once (0:
	// 1 on SQLite, DefaultPostgresWriters on PostgreSQL).
	IngestWriters int
	// NotificationRetention bounds stored edge-rule notifications
	// (default 90 days); those tied to an open case are kept.
	NotificationRetention time.Duration
	// WGPort is the WireGuard hub's UDP port (0: a free port); the hub
	// runs with the embedded broker, which carries its commands.
	WGPort int
	// WGPublicHost is the hub's host as agents reach it (default: the
	// portal URL's host).
	WGPublicHost string

	// Store, when set, is used instead of opening StoreDSN (tests). The
	// server closes it on Close.
	Store store.Store
}

// Validate checks the configuration and fills defaults.
func (c *Config) Validate() error {
	if c.Listen == "" {
		if c.Dev {
			c.Listen = "127.0.0.1:8080"
		} else {
			c.Listen = ":8443"
		}
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("--listen %q: want host:port, e.g. 127.0.0.1:8080", c.Listen)
	}
	if c.DataDir == "" {
		return errors.New("--data-dir is required (where the SQLite store and state live)")
	}
	if c.MQTTExternal != "" {
		u, err := url.Parse(c.MQTTExternal)
		if err != nil || u.Scheme != "tls" || u.Hostname() == "" || u.Port() == "" {
			return fmt.Errorf("--mqtt-external %q: want tls://host:port (the broker requires TLS with client certificates)", c.MQTTExternal)
		}
		if c.MQTTListen != "" && c.MQTTListen != "off" {
			return fmt.Errorf("--mqtt-listen %q and --mqtt-external %q: use either the embedded broker or an external one", c.MQTTListen, c.MQTTExternal)
		}
		c.MQTTListen = "off"
		if c.MQTTCRLFile == "" {
			return errors.New("--mqtt-external needs --mqtt-crl-file: the external broker learns of revoked device certificates only from that CRL (its crlfile)")
		}
	}
	if c.MQTTCRLReload != "" && c.MQTTCRLFile == "" {
		return errors.New("--mqtt-crl-reload without --mqtt-crl-file: the reload command runs after the CRL file is rewritten")
	}
	if c.IngestWriters < 0 || c.IngestWriters > 64 {
		return fmt.Errorf("--ingest-writers %d: want 1 to 64 (0: the default)", c.IngestWriters)
	}
	if c.IngestMaxGroup < 0 || c.IngestMaxGroup > 65536 {
		return fmt.Errorf("--ingest-max-group %d: want 1 to 65536 batches per transaction (0: the default)", c.IngestMaxGroup)
	}
	if c.MQTTIngestClients < 0 || c.MQTTIngestClients > 64 {
		return fmt.Errorf("--mqtt-ingest-clients %d: want 1..64 (0: 4)", c.MQTTIngestClients)
	}
	if c.MQTTListen == "" {
		if c.Dev {
			c.MQTTListen = "127.0.0.1:8883"
		} else {
			c.MQTTListen = ":8883"
		}
	}
	if c.MQTTListen != "off" {
		if _, _, err := net.SplitHostPort(c.MQTTListen); err != nil {
			return fmt.Errorf("--mqtt-listen %q: want host:port or off", c.MQTTListen)
		}
	}
	if c.WGPort < 0 {
		c.WGPort = 51820
		if c.Dev {
			c.WGPort = 0 // agents learn the port from each TunnelUp
		}
	}
	if c.WGPort > 65535 {
		return fmt.Errorf("--wg-port %d: want a UDP port 0..65535", c.WGPort)
	}
	if c.HistoryRetention <= 0 {
		c.HistoryRetention = 7 * 24 * time.Hour
	}
	if c.NotificationRetention <= 0 {
		c.NotificationRetention = 90 * 24 * time.Hour
	}
	if !c.Dev && (c.TLSCert == "" || c.TLSKey == "") {
		return errors.New("outside --dev the portal and API are served over HTTPS: give --tls-cert and --tls-key (PEM files)")
	}
	return nil
}

// Server is a running control plane.
type Server struct {
	cfg      Config
	log      *slog.Logger
	Store    store.Store
	Identity *identity.Service
	Fleet    *fleet.Service
	Cases    *cases.Service
	CA       *pki.CA
	Broker   *broker.Broker    // nil when disabled or external
	External *extbroker.Client // nil unless MQTTExternal
	Revoked  *revocation.Checker
	ingest   *telemetry.Ingest
	presence *presence.Writer
	reg      *prometheus.Registry
	ln       net.Listener
	http     *http.Server
	URL      string

	// Remote access (nil without the embedded broker).
	Hub      *remote.Hub
	Tunnels  *remote.Tunnels
	Sessions *remote.Sessions
	tunnels  atomic.Pointer[remote.Tunnels]

	stopTickets chan struct{} // ends rotateTicketKeys
	// OPC-UA template delivery (nil without a broker).
	templates atomic.Pointer[commands.Templates]
	// Devices that came online before templates existed (the broker
	// starts first); they get their template once it does.
	earlyMu     sync.Mutex
	earlyOnline map[string]bool
}

// New opens the store and builds the services; it listens but does not serve yet.
func New(ctx context.Context, cfg Config, logger *slog.Logger) (*Server, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	// Startup steps are timed: after a restart every device waits for the
	// broker, so the time until it accepts is logged.
	began, step := time.Now(), time.Now()
	var timings []any
	lap := func(name string) {
		now := time.Now()
		timings = append(timings, slog.Duration(name, now.Sub(step).Round(time.Millisecond)))
		step = now
	}
	st := cfg.Store
	if st == nil {
		dsn := cfg.StoreDSN
		if dsn == "" {
			dsn = filepath.Join(cfg.DataDir, "gantry.db")
		}
		var err error
		if st, err = store.Open(ctx, dsn, logger); err != nil {
			return nil, err
		}
	}
	lap("store")
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("listen on %s: %w (is another process using the port? pick one with --listen)", cfg.Listen, err)
	}
	scheme := "https"
	if cfg.Dev {
		scheme = "http"
	}
	url := fmt.Sprintf("%s://%s", scheme, ln.Addr().String())
	portal := cfg.PortalURL
	if portal == "" {
		portal = url
	}
	s := &Server{cfg: cfg, log: logger, Store: st, ln: ln, URL: url}
	reg := prometheus.NewRegistry()
	s.reg = reg
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// The broker starts first: after a restart every device is waiting
	// for it, and the services below take seconds (identity computes an
	// argon2id hash). Devices online before the remote-access services
	// exist get their tunnels from the tunnel manager's first pass.
	if s.CA, err = pki.LoadOrCreateCA(filepath.Join(cfg.DataDir, "pki"), "Gantry control plane CA"); err != nil {
		s.Close()
		return nil, err
	}
	cmdKey, err := pki.LoadOrCreateSigningKey(filepath.Join(cfg.DataDir, "pki"))
	if err != nil {
		s.Close()
		return nil, err
	}
	lap("pki")
	s.Revoked, err = revocation.New(ctx, st, revocation.Config{CA: s.CA, CRLFile: cfg.MQTTCRLFile, ReloadCommand: strings.Fields(cfg.MQTTCRLReload)}, reg, logger.With("component", "revocation"))
	if err != nil {
		s.Close()
		return nil, err
	}
	lap("revocation")
	mqttURL := ""
	var msg commands.Broker
	switch {
	case cfg.MQTTExternal != "":
		if err := s.startExternal(ctx, cfg, logger); err != nil {
			s.Close()
			return nil, err
		}
		mqttURL, msg = cfg.MQTTExternal, s.External
	case cfg.MQTTListen != "off":
		if err := s.startBroker(ctx, cfg, logger); err != nil {
			s.Close()
			return nil, err
		}
		mqttURL, msg = "tls://"+s.Broker.Addr().String(), s.Broker
	}
	lap("broker")
	// fleet locates scope nodes for identity, and identity invites the
	// first admin of customer tenants for fleet: build fleet with a nil
	// identity first, then wire both ways.
	locator := &lazyLocator{}
	id, err := identity.New(st, locator, identity.Config{PortalURL: portal}, logger)
	if err != nil {
		s.Close()
		return nil, err
	}
	fl := fleet.New(st, id, logger)
	locator.fleet = fl
	cs := cases.New(st, fl, cases.Config{ConferenceBaseURL: cfg.ConferenceURL}, logger)
	s.Identity, s.Fleet, s.Cases = id, fl, cs

	mux := http.NewServeMux()
	apiSrv := api.New(id, fl, cs, portal, logger)
	pt, err := portalpkg.New(id, fl, cs, !cfg.Dev, logger)
	if err != nil {
		s.Close()
		return nil, err
	}
	pt.Mount(mux)
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })

	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	if cfg.Dev {
		protocols.SetUnencryptedHTTP2(true) // gRPC clients over h2c on loopback
	}
	s.http = &http.Server{
		Handler:           mux,
		Protocols:         &protocols,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	lap("services")
	if cfg.MQTTPublicURL != "" && msg != nil {
		mqttURL = cfg.MQTTPublicURL
	}
	if msg != nil {
		d, err := commands.New(msg, cmdKey, logger)
		if err != nil {
			s.Close()
			return nil, err
		}
		apiSrv.WithCommands(d)
		tpls := commands.NewTemplates(st, d, reg, logger.With("component", "templates"))
		apiSrv.WithTemplates(tpls)
		fl.SetHooks(fleet.Hooks{
			DeviceLinked:   tpls.DeviceLinked,
			ModelUpdated:   func(id string) { go tpls.ModelUpdated(context.WithoutCancel(ctx), id) },
			MachineChanged: func(id string) { go tpls.MachineChanged(context.WithoutCancel(ctx), id) },
		})
		s.templates.Store(tpls)
		s.earlyMu.Lock()
		early := s.earlyOnline
		s.earlyOnline = nil
		s.earlyMu.Unlock()
		for id := range early {
			tpls.DeviceOnline(id)
		}
		if err := s.startRemote(cfg, d, apiSrv, mux, logger); err != nil {
			s.Close()
			return nil, err
		}
		pt.WithRemote(remoteHooks{s.Sessions, s.Tunnels})
		pt.WithSSC(portalSSC{sscIssuer{s.Hub}})
	}
	apiSrv.WithEnrollment(api.Enrollment{Repo: s.Revoked.EnrollRepo(st), CA: s.CA, CommandKey: cmdKey, MQTTURL: mqttURL}).Mount(mux)
	if cfg.Demo {
		if err := SeedDemo(ctx, id, st, filepath.Join(cfg.DataDir, "demo-agent.token")); err != nil {
			s.Close()
			return nil, fmt.Errorf("demo data: %w", err)
		}
	}
	lap("rest")
	logger.Info("control plane started", append(timings, slog.Duration("total", time.Since(began).Round(time.Millisecond)))...)
	return s, nil
}

// Serve serves until ctx ends, then shuts down gracefully: long-lived
// streams (chat, tunnels) end when it starts shutting down.
func (s *Server) Serve(ctx context.Context) error {
	base, stopStreams := context.WithCancel(context.Background())
	defer stopStreams()
	var bg sync.WaitGroup
	defer func() { stopStreams(); bg.Wait() }()
	if s.ingest != nil {
		bg.Go(func() { s.retain(base, time.Hour) })
	}
	if t := s.templates.Load(); t != nil {
		bg.Go(func() { t.Run(base) })
	}
	if s.Tunnels != nil {
		bg.Go(func() { s.Tunnels.Run(base) })
		bg.Go(func() { s.Sessions.Run(base) })
	}
	s.http.BaseContext = func(net.Listener) context.Context { return base }
	errc := make(chan error, 1)
	go func() {
		var err error
		if s.cfg.Dev {
			err = s.http.Serve(s.ln)
		} else {
			err = s.http.ServeTLS(s.ln, s.cfg.TLSCert, s.cfg.TLSKey)
		}
		errc <- err
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	stopStreams()
	shctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.http.Shutdown(shctx)
	<-errc
	return err
}

// Close releases the broker, the telemetry writer, the store and the listener.
func (s *Server) Close() error {
	if s.Hub != nil {
		s.Hub.Close()
	}
	if s.Broker != nil {
		s.Broker.Close()
	}
	if s.stopTickets != nil {
		close(s.stopTickets)
		s.stopTickets = nil
	}
	if s.External != nil {
		s.External.Close()
	}
	if s.ingest != nil {
		s.ingest.Close() // after the broker: no new batches; waits for those in flight
	}
	if s.presence != nil {
		s.presence.Close() // after the broker: the last disconnects are written
	}
	s.ln.Close()
	return s.Store.Close()
}

// startPresence starts the coalescing online-state writer.
func (s *Server) startPresence(ctx context.Context, cfg Config, logger *slog.Logger) {
	s.presence = presence.New(s.Store, cfg.PresenceInterval, s.reg, logger.With("component", "presence"))
	go s.presence.Run(context.WithoutCancel(ctx))
}

// DefaultPostgresWriters is how many telemetry transactions run at once
// on PostgreSQL (SQLite: one).
const DefaultPostgresWriters = 4

func isPostgres(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// startIngest starts the telemetry writer; it must run before telemetry
// can arrive (retained messages are delivered at subscription).
func (s *Server) startIngest(ctx context.Context, logger *slog.Logger) {
	writers := s.cfg.IngestWriters
	if writers == 0 && isPostgres(s.cfg.StoreDSN) {
		writers = DefaultPostgresWriters
	}
	s.ingest = telemetry.New(s.Store, telemetry.Config{MaxGroup: s.cfg.IngestMaxGroup, Writers: writers}, s.reg, logger)
	go s.ingest.Run(context.WithoutCancel(ctx))
}

// onState handles retained states and wills: they drive online status.
// The time recorded is the arrival time, not the payload's: a will carries
// the time its connection began, older than the "online" that followed.
func (s *Server) onState(logger *slog.Logger) func(topic string, payload []byte) {
	return func(topic string, payload []byte) {
		id, _, err := topics.Parse(topic)
		if err != nil {
			return
		}
		var st gantryv1.DeviceState
		if err := proto.Unmarshal(payload, &st); err != nil {
			logger.Warn("bad device state payload", "device", id, "err", err)
			return
		}
		s.presence.Set(id, st.Online, time.Now())
		// Agents announce "online" after subscribing to their commands:
		// the moment to (re)send their tunnels.
		if t := s.tunnels.Load(); t != nil && st.Online {
			t.DeviceOnline(id)
		}
		// ... and to deliver their OPC-UA template if they do not run it.
		if st.Online {
			s.templateOnline(id)
		}
	}
}

// templateOnline delivers a device's template if it does not run it, or
// remembers the device until template delivery exists.
func (s *Server) templateOnline(id string) {
	if t := s.templates.Load(); t != nil {
		t.DeviceOnline(id)
		return
	}
	s.earlyMu.Lock()
	defer s.earlyMu.Unlock()
	if t := s.templates.Load(); t != nil { // stored meanwhile
		t.DeviceOnline(id)
		return
	}
	if s.earlyOnline == nil {
		s.earlyOnline = map[string]bool{}
	}
	s.earlyOnline[id] = true
}

// startBroker runs the embedded MQTT broker: TLS with a server certificate
// from the control plane's CA, device certificates required; a device's
// certificate is valid only while it is the device's current one (so
// re-enrollment revokes the previous certificate), checked from memory by
// s.Revoked.
func (s *Server) startBroker(ctx context.Context, cfg Config, logger *slog.Logger) error {
	host, _, _ := net.SplitHostPort(cfg.MQTTListen)
	hosts := []string{"localhost", "127.0.0.1"}
	if host != "" && host != "0.0.0.0" && host != "::" {
		hosts = append([]string{host}, hosts...)
	}
	cert, err := s.CA.IssueServer(hosts, 365*24*time.Hour)
	if err != nil {
		return err
	}
	// Session-ticket keys that survive a restart: reconnecting devices
	// resume their TLS sessions instead of ~10,000 full mTLS handshakes.
	tickets, err := pki.LoadOrCreateTicketKeys(filepath.Join(cfg.DataDir, "pki"), time.Now())
	if err != nil {
		return err
	}
	period := cfg.MQTTTicketKeyPeriod
	if period <= 0 {
		period = pki.DefaultTicketKeyPeriod
	}
	if _, err := tickets.Rotate(time.Now(), period); err != nil {
		return err
	}
	s.startPresence(ctx, cfg, logger)
	b, err := broker.New(broker.Config{
		SessionTicketKeys: tickets.Keys(),
		Listen:            cfg.MQTTListen,
		Certificate:       cert,
		ClientCAs:         s.CA.Pool(),
		IsRevoked:         s.Revoked.IsRevoked,
		OnConnect:         func(id string, at time.Time) { s.presence.Set(id, true, at) },
		OnDisconnect:      func(id string, at time.Time) { s.presence.Set(id, false, at) },
	}, logger)
	if err != nil {
		return err
	}
	s.Broker = b
	s.stopTickets = make(chan struct{})
	go s.rotateTicketKeys(tickets, period, s.stopTickets, logger)
	// Telemetry is stored before the PUBACK, and a batch the store refuses
	// is not acknowledged: the agent keeps it and sends it again.
	s.startIngest(ctx, logger)
	if err := b.Intercept(topics.Telemetry, s.ingest.Ingest); err != nil {
		return err
	}
	if err := b.Start(); err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	s.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gantry_mqtt_connected_devices", Help: "Devices connected to the embedded broker."},
			func() float64 { return float64(b.Stats.Connected.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "gantry_mqtt_auth_denied_total", Help: "Refused MQTT connections (no/foreign/revoked certificate, wrong client ID)."},
			func() float64 { return float64(b.Stats.AuthDenied.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "gantry_mqtt_publish_denied_total", Help: "Publishes refused by the per-device ACL."},
			func() float64 { return float64(b.Stats.PublishDenied.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "gantry_mqtt_subscribe_denied_total", Help: "Subscriptions refused by the per-device ACL."},
			func() float64 { return float64(b.Stats.SubDenied.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "gantry_mqtt_tls_resumed_total", Help: "Device connections on a resumed TLS session (session ticket, no full mTLS handshake)."},
			func() float64 { return float64(b.Stats.Resumed.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "gantry_mqtt_tls_full_handshakes_total", Help: "Device connections on a full mTLS handshake."},
			func() float64 { return float64(b.Stats.FullTLS.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "gantry_mqtt_not_acked_total", Help: "Device publishes not acknowledged because they could not be processed (e.g. telemetry not stored); the device resends them."},
			func() float64 { return float64(b.Stats.NotAcked.Load()) }))
	// Edge-rule events become notifications (and, optionally, cases).
	if err := b.Subscribe(topics.Wildcard(topics.Events), notify.New(s.Store, s.reg, logger).Handle); err != nil {
		return err
	}
	// Retained state and the agents' wills drive online status.
	return b.Subscribe(topics.Wildcard(topics.State), s.onState(logger))
}

// rotateTicketKeys replaces the broker's session-ticket key every period
// (checked every period/24, at most hourly) until stop closes.
func (s *Server) rotateTicketKeys(keys *pki.TicketKeys, period time.Duration, stop <-chan struct{}, logger *slog.Logger) {
	every := min(period/24, time.Hour)
	t := time.NewTicker(max(every, time.Second))
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			rotated, err := keys.Rotate(now, period)
			if err != nil {
				logger.Error("session ticket key not rotated; the current key stays in use", "err", err)
				continue
			}
			if rotated {
				if err := s.Broker.SetSessionTicketKeys(keys.Keys()); err != nil {
					logger.Error("session ticket key not applied", "err", err)
					continue
				}
				logger.Info("mqtt session ticket key rotated", "keys", pki.TicketKeysKept)
			}
		}
	}
}

// startExternal connects to an external broker (see package extbroker)
// with a client certificate for gantry-controlplane from the CA: telemetry
// and events through shared subscriptions, states in order on the main
// client. It does not wait for the broker: the clients keep retrying, so
// the control plane and its broker can start in any order.
func (s *Server) startExternal(ctx context.Context, cfg Config, logger *slog.Logger) error {
	cert, err := s.CA.IssueClient(extbroker.DefaultClientID, 365*24*time.Hour)
	if err != nil {
		return err
	}
	s.startPresence(ctx, cfg, logger)
	s.startIngest(ctx, logger)
	c, err := extbroker.New(extbroker.Config{
		URL:           cfg.MQTTExternal,
		TLS:           &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: s.CA.Pool()},
		IngestClients: cfg.MQTTIngestClients,
	}, logger.With("component", "mqtt-external"))
	if err != nil {
		return err
	}
	s.External = c
	s.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gantry_mqtt_external_clients_connected", Help: "Control-plane clients connected to the external broker."},
		func() float64 { return float64(c.Connected()) }))
	if err := c.SubscribeShared(topics.Wildcard(topics.Telemetry), s.ingest.Ingest); err != nil {
		return err
	}
	events := notify.New(s.Store, s.reg, logger).Handle
	if err := c.SubscribeShared(topics.Wildcard(topics.Events), func(topic string, payload []byte) error {
		events(topic, payload)
		return nil
	}); err != nil {
		return err
	}
	if err := c.Subscribe(topics.Wildcard(topics.State), s.onState(logger)); err != nil {
		return err
	}
	c.Start() // the command dispatcher subscribes to acks later, on a clean session
	return nil
}

// lazyLocator breaks the construction cycle between identity and fleet.
type lazyLocator struct{ fleet *fleet.Service }

func (l *lazyLocator) Locate(ctx context.Context, tenantID string, s authz.Scope) (authz.Location, error) {
	return l.fleet.Locate(ctx, tenantID, s)
}

// startRemote starts the WireGuard hub, the tunnel manager and the session
// broker, and mounts the sessions' WebSocket.
func (s *Server) startRemote(cfg Config, d *commands.Dispatcher, apiSrv *api.Server, mux *http.ServeMux, logger *slog.Logger) error {
	host := cfg.WGPublicHost
	if host == "" {
		if u, err := url.Parse(s.URL); err == nil && u.Hostname() != "" {
			host = u.Hostname()
		}
	}
	hub, err := remote.NewHub(remote.HubConfig{ListenPort: cfg.WGPort, PublicHost: host, Logger: logger.With("component", "wg-hub"), Registry: s.reg,
		SSCAudit: func(ss remote.SSCSession) {
			if err := s.Store.AppendAudit(context.Background(), store.AuditEvent{TenantID: ss.TenantID, ActorID: ss.UserID, Action: "remote_access.ssc_session",
				Target: ss.CaseID, Detail: ss.Detail(20), At: ss.Ended.UTC()}); err != nil {
				logger.Error("audit append failed", "action", "remote_access.ssc_session", "err", err)
			}
		}})
	if err != nil {
		return fmt.Errorf("%w (choose another UDP port with --wg-port)", err)
	}
	s.Hub = hub
	var sessions *remote.Sessions
	tunnels := remote.NewTunnels(hub, grantSource{s.Store, s.Cases}, d, func(grantID, reason string) {
		sessions.EndGrant(grantID, reason)
	}, logger.With("component", "tunnels"))
	sessions = remote.NewSessions(remote.SessionsConfig{
		Tunnels: tunnels,
		Hub:     hub,
		Recheck: s.recheckUse,
		Audit: func(ctx context.Context, u cases.Use, action, detail string) {
			if err := s.Store.AppendAudit(ctx, store.AuditEvent{TenantID: u.CaseTenantID, ActorID: u.UserID, Action: action, Target: u.CaseID, Detail: detail, At: time.Now().UTC()}); err != nil {
				logger.Error("audit append failed", "action", action, "err", err)
			}
		},
		Logger:   logger.With("component", "sessions"),
		Registry: s.reg,
	})
	s.Tunnels, s.Sessions = tunnels, sessions
	s.tunnels.Store(tunnels)
	apiSrv.WithRemote(remoteHooks{sessions, tunnels})
	apiSrv.WithSSC(sscIssuer{hub})
	mux.Handle("GET "+remote.WebSocketPath, sessions)
	return nil
}

// recheckUse re-authorizes a live session with the user's current roles,
// the case's state and the grant. Only a decisive answer (denied, not
// found, precondition) ends a session; a store hiccup does not.
func (s *Server) recheckUse(ctx context.Context, u cases.Use) error {
	c, err := s.Identity.CallerFor(ctx, u.UserID)
	if errors.Is(err, store.ErrNotFound) {
		return errors.New("the user no longer exists")
	}
	if err != nil {
		s.log.Warn("session recheck failed", "err", err)
		return nil
	}
	now, err := s.Cases.AuthorizeUse(ctx, c, u.CaseID, u.ConnectionType, u.Target, false)
	if err != nil {
		switch errkind.Of(err) {
		case errkind.Denied, errkind.NotFound, errkind.Precondition, errkind.Invalid:
			return err
		}
		s.log.Warn("session recheck failed", "err", err)
		return nil
	}
	if now.GrantID != u.GrantID {
		return errors.New("the grant this session used has ended")
	}
	return nil
}

type grantSource struct {
	st store.Store
	cs *cases.Service
}

func (g grantSource) ListActiveGrants(ctx context.Context, now time.Time) ([]store.Grant, error) {
	return g.st.ListActiveGrants(ctx, now)
}

func (g grantSource) GrantTargets(ctx context.Context, gr store.Grant) ([]string, error) {
	return g.cs.GrantTargets(ctx, gr)
}

func (g grantSource) GrantSSC(ctx context.Context, gr store.Grant) (subnets, ports []string, err error) {
	return g.cs.GrantSSC(ctx, gr)
}

type remoteHooks struct {
	s *remote.Sessions
	t *remote.Tunnels
}

func (r remoteHooks) Issue(u cases.Use) (string, string, time.Time) { return r.s.Issue(u) }
func (r remoteHooks) GrantsChanged()                                { r.t.Kick() }
func (r remoteHooks) WebSocketPath() string                         { return remote.WebSocketPath }

// sscIssuer adds SSC engineer peers to the hub for the API.
type sscIssuer struct{ hub *remote.Hub }

func (i sscIssuer) IssueSSC(u cases.Use, publicKey string) (api.SSCConfig, error) {
	c, err := i.hub.AddEngineer(remote.SSCRequest{GrantID: u.GrantID, UserID: u.UserID, CaseID: u.CaseID, TenantID: u.CaseTenantID,
		PublicKey: publicKey, Subnets: u.Subnets, Ports: u.Ports})
	if err != nil {
		return api.SSCConfig{}, err
	}
	out := api.SSCConfig{WGQuick: c.WGQuick(), Address: netip.PrefixFrom(c.Address, 32).String(), PublicKey: c.PublicKey.String(),
		PrivateKeyIncluded: c.Generated, HubEndpoint: c.HubEndpoint}
	for _, p := range c.AllowedIPs {
		out.AllowedIPs = append(out.AllowedIPs, p.String())
	}
	for _, p := range c.Machine {
		out.MachineSubnets = append(out.MachineSubnets, p.String())
	}
	return out, nil
}

// portalSSC issues SSC engineer peers for the portal, like sscIssuer for the API.
type portalSSC struct{ api sscIssuer }

func (p portalSSC) IssueSSC(u cases.Use, publicKey string) (portalpkg.SSCConfig, error) {
	return p.api.IssueSSC(u, publicKey)
}

// retain deletes machine-data history and notifications older than their
// retention every interval until ctx ends.
func (s *Server) retain(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			n, err := s.Store.PruneHistory(ctx, now.Add(-s.cfg.HistoryRetention))
			s.logPruned("value history", n, err)
			n, err = s.Store.PruneNotifications(ctx, now.Add(-s.cfg.NotificationRetention), store.StateClosed)
			s.logPruned("notifications", n, err)
		}
	}
}

func (s *Server) logPruned(what string, n int64, err error) {
	switch {
	case err != nil:
		s.log.Warn("retention: prune failed", "what", what, "err", err)
	case n > 0:
		s.log.Info("retention: pruned", "what", what, "rows", n)
	}
}
