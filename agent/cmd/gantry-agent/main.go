// Command gantry-agent is Gantry's edge agent: it runs on a shop-floor
// gateway beside a machine, enrolls with the control plane, and keeps an
// mTLS MQTT session through which it reports and receives commands.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync/atomic"
	"syscall"
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
	"github.com/gantry-iot/gantry/pkg/command"
	"github.com/gantry-iot/gantry/pkg/machinemodel"
	"github.com/gantry-iot/gantry/pkg/topics"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

const usage = `gantry-agent — Gantry's edge agent for shop-floor gateways.

Usage:
  gantry-agent enroll --server URL --token TOKEN [--state-dir DIR] [--server-ca FILE]
      Generate the device key, have the control plane certify it with a
      one-time token (from 'gantryctl devices enroll-token'), and write the
      state directory (files 0600). Enrolling again revokes the old certificate.
  gantry-agent run [--config FILE] [--state-dir DIR] [--metrics-listen ADDR]
      Connect to the control plane's MQTT broker with the device certificate,
      report online/offline state (retained, with a will), and serve
      Prometheus metrics on ADDR (default 127.0.0.1:9101, "off" to disable).
  gantry-agent config validate FILE
      Check a configuration file against the schema (firmware-config/
      agent.schema.json) and report every problem with its field path.
  gantry-agent config default
      Print the documented default configuration.
  gantry-agent version
  gantry-agent help

The state directory defaults to /var/lib/gantry-agent (systemd's
StateDirectory); the agent runs as an unprivileged user.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, "gantry-agent:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stdout, usage)
		return nil
	}
	logger := slog.New(slog.NewJSONHandler(stderr, nil)).With("version", version)
	switch args[0] {
	case "version":
		fmt.Fprintln(stdout, version)
		return nil
	case "config":
		return configCmd(args[1:], stdout)
	case "enroll":
		fs := flag.NewFlagSet("enroll", flag.ContinueOnError)
		fs.SetOutput(stderr)
		o := enroll.Options{AgentVersion: version}
		fs.StringVar(&o.Server, "server", "", "control plane URL, e.g. https://gantry.example.com")
		fs.StringVar(&o.Token, "token", "", "one-time enrollment token")
		fs.StringVar(&o.StateDir, "state-dir", "/var/lib/gantry-agent", "state directory")
		fs.StringVar(&o.ServerCAFile, "server-ca", "", "PEM file to trust for the control plane's HTTPS certificate (private CA)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		st, err := enroll.Enroll(ctx, o)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "enrolled as device %s; broker %s; state in %s\n", st.DeviceID, st.MQTTURL, o.StateDir)
		return nil
	case "run":
		fs := flag.NewFlagSet("run", flag.ContinueOnError)
		fs.SetOutput(stderr)
		cfgFile := fs.String("config", "", "configuration file (see firmware-config/); flags below override it")
		dir := fs.String("state-dir", "", "state directory written by enroll (default from the config, /var/lib/gantry-agent)")
		metrics := fs.String("metrics-listen", "", "Prometheus metrics address, or off (default from the config, 127.0.0.1:9101)")
		tplFile := fs.String("opcua-template", "", "OPC-UA template (JSON: endpoint_url, security_mode, data_points) to collect machine data from")
		simulate := fs.Float64("simulate", 0, "simulated agent: produce this many telemetry batches per second (a counter) instead of real machine data")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		cfg := config.Default()
		if *cfgFile != "" {
			var err error
			if cfg, err = config.Load(*cfgFile); err != nil {
				return err
			}
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
		return serve(ctx, cfg, *simulate, tpl, logger)
	}
	return fmt.Errorf("unknown command %q; run 'gantry-agent help'", args[0])
}

func serve(ctx context.Context, cfg config.Config, simulate float64, tpl *machinemodel.OPCUA, logger *slog.Logger) error {
	dir, metricsAddr := cfg.StateDir, cfg.Metrics.Listen
	collectorRestarts := make(chan struct{}, 1)
	st, cert, pool, err := enroll.Load(dir)
	if err != nil {
		return err
	}
	logger = logger.With("device", st.DeviceID)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	connected := prometheus.NewGauge(prometheus.GaugeOpts{Name: "gantry_agent_connected", Help: "1 while the MQTT session to the control plane is up."})
	commands := prometheus.NewCounter(prometheus.CounterOpts{Name: "gantry_agent_commands_received_total", Help: "Command messages received."})
	reg.MustRegister(connected, commands)
	if metricsAddr != "off" {
		ln, err := net.Listen("tcp", metricsAddr)
		if err != nil {
			return fmt.Errorf("metrics: listen on %s: %w (choose another with --metrics-listen)", metricsAddr, err)
		}
		srv := &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 5 * time.Second}
		go srv.Serve(ln)
		defer srv.Close()
		logger.Info("metrics listening", "addr", ln.Addr().String())
	}
	verifier, err := command.NewVerifier(st.CommandPublicKey, st.DeviceID, filepath.Join(dir, "nonces.json"), nil)
	if err != nil {
		return err
	}
	handler := control.New(verifier, control.Actions{
		ReloadConfig: func() error {
			_, _, _, err := enroll.Load(dir) // re-read and check the state directory
			return err
		},
		RestartCollector: func() error {
			if tpl == nil {
				return fmt.Errorf("%w: no OPC-UA template is configured", control.ErrUnavailable)
			}
			select {
			case collectorRestarts <- struct{}{}:
			default: // a restart is already pending
			}
			return nil
		},
	}, logger)
	var lnk atomic.Pointer[link.Link]
	l, err := link.Dial(ctx, link.Config{DeviceID: st.DeviceID, BrokerURL: st.MQTTURL, Certificate: cert, RootCAs: pool, AgentVersion: version,
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
	qdir := cfg.Queue.Dir
	if qdir == "" || qdir == filepath.Join(config.Default().StateDir, "queue") {
		qdir = filepath.Join(dir, "queue")
	}
	q, err := queue.Open(qdir, queue.Options{MaxBytes: int64(cfg.Queue.MaxMB) << 20, SegmentBytes: int64(cfg.Queue.SegmentMB) << 20, SyncDelay: cfg.Queue.SyncDelay, Logger: logger})
	if err != nil {
		return err
	}
	defer q.Close()
	fw := forward.New(q, l, 64, logger)
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gantry_agent_queue_records", Help: "Records waiting in the store-and-forward queue."}, func() float64 { return float64(q.Stats().Records) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gantry_agent_queue_bytes", Help: "Bytes of the store-and-forward queue on disk."}, func() float64 { return float64(q.Stats().Bytes) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "gantry_agent_queue_dropped_total", Help: "Records dropped because the queue was full."}, func() float64 { return float64(q.Stats().Dropped) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "gantry_agent_messages_sent_total", Help: "Telemetry messages acknowledged by the broker."}, func() float64 { return float64(fw.Stats.Acked.Load()) }))
	fctx, stopForward := context.WithCancel(ctx)
	defer stopForward()
	go func() {
		if err := fw.Run(fctx); err != nil && !errors.Is(err, context.Canceled) {
			logger.Error("forwarder stopped", "err", err)
		}
	}()
	if simulate > 0 {
		go simulateTelemetry(fctx, q, simulate, logger)
	}
	if tpl != nil {
		col, err := collector.New(*tpl, func(samples []collector.Sample) {
			b := &gantryv1.TelemetryBatch{}
			for _, s := range samples {
				b.Samples = append(b.Samples, &gantryv1.Sample{Point: s.Point, Value: s.Value, Status: s.Status, At: timestamppb.New(s.At)})
			}
			payload, _ := proto.Marshal(b)
			if _, err := q.Append(fctx, payload); err != nil && fctx.Err() == nil {
				logger.Warn("telemetry not queued", "err", err)
			}
		}, collector.Options{Logger: logger})
		if err != nil {
			return err
		}
		go func() {
			for {
				cctx, cancel := context.WithCancel(fctx)
				done := make(chan struct{})
				go func() { _ = col.Run(cctx); close(done) }()
				select {
				case <-fctx.Done():
					cancel()
					<-done
					return
				case <-collectorRestarts:
					logger.Info("restarting the OPC-UA collector on command")
					cancel()
					<-done
				}
			}
		}()
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
			} else {
				connected.Set(0)
			}
		}
	}
}

func configCmd(args []string, stdout io.Writer) error {
	switch {
	case len(args) == 1 && args[0] == "default":
		fmt.Fprint(stdout, config.DefaultJSON)
		return nil
	case len(args) == 2 && args[0] == "validate":
		b, err := os.ReadFile(args[1])
		if err != nil {
			return err
		}
		ps := config.Validate(b)
		if len(ps) == 0 {
			fmt.Fprintf(stdout, "%s: valid\n", args[1])
			return nil
		}
		for _, p := range ps {
			fmt.Fprintf(stdout, "%s: %s\n", p.Path, p.Message)
		}
		return fmt.Errorf("%s: %d problem(s)", args[1], len(ps))
	}
	return errors.New("usage: gantry-agent config validate FILE | gantry-agent config default")
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
