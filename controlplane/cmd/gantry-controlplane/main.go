// Command gantry-controlplane runs Gantry's cloud control plane: identity
// and authorization, the JSON/gRPC API and the portal, with SQLite (default)
// or PostgreSQL as its store.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/gantry-iot/gantry/controlplane/server"
	"github.com/gantry-iot/gantry/pkg/pprofserve"
)

const usage = `gantry-controlplane — Gantry's cloud control plane.

Usage:
  gantry-controlplane serve [flags]            run the control plane
  gantry-controlplane mosquitto-files [flags]  write the CA, a server certificate and the CRL for Mosquitto
  gantry-controlplane help                     show this help

serve runs the portal, the JSON API and gRPC on one listener, with the store
(SQLite in --data-dir by default, or PostgreSQL via --store).

Quick start on a fresh machine (plain HTTP on loopback, demo tenants and users):
  gantry-controlplane serve --dev --data-dir .gantry-dev

With an external broker (Mosquitto, see deploy/mosquitto/README.md):
  gantry-controlplane mosquitto-files --data-dir D --out /etc/mosquitto/gantry --hosts mqtt.example.com
  gantry-controlplane serve --data-dir D --mqtt-external tls://mqtt.example.com:8883 \
      --mqtt-crl-file /etc/mosquitto/gantry/crl.pem --mqtt-crl-reload "systemctl reload mosquitto" ...

Flags of serve:
`

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "gantry-controlplane:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stdout, usage)
		fs := newServeFlags(&server.Config{}, new(string), &processFlags{})
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		return nil
	}
	switch args[0] {
	case "serve":
		return serve(args[1:], stdout, stderr)
	case "mosquitto-files":
		return mosquittoFiles(args[1:], stdout, stderr)
	default:
		return fmt.Errorf("unknown command %q; run 'gantry-controlplane help'", args[0])
	}
}

// processFlags are serve flags about the process rather than the server.
type processFlags struct {
	pprof, memoryLimit string
}

func newServeFlags(cfg *server.Config, logLevel *string, pf *processFlags) *flag.FlagSet {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.BoolVar(&cfg.Dev, "dev", false, "development mode: plain HTTP on 127.0.0.1:8080, demo data in an empty store")
	fs.StringVar(&cfg.Listen, "listen", "", "listen address host:port (default 127.0.0.1:8080 with --dev, :8443 otherwise)")
	fs.StringVar(&cfg.DataDir, "data-dir", "/var/lib/gantry", "directory for the SQLite store and state")
	fs.StringVar(&cfg.StoreDSN, "store", "", "store DSN: empty = SQLite in --data-dir; postgres://user@host/db for PostgreSQL")
	fs.StringVar(&cfg.PortalURL, "portal-url", "", "external base URL used in invitation links (default: the listen URL)")
	fs.StringVar(&cfg.TLSCert, "tls-cert", "", "PEM certificate for HTTPS (required without --dev)")
	fs.StringVar(&cfg.TLSKey, "tls-key", "", "PEM private key for HTTPS (required without --dev)")
	fs.StringVar(&cfg.ConferenceURL, "conference-url", "https://meet.example.com", "base URL of the conferencing provider; each case gets <url>/gantry-case-<id>")
	fs.StringVar(&cfg.MQTTListen, "mqtt-listen", "", "embedded MQTT broker TLS address (default 127.0.0.1:8883 with --dev, :8883 otherwise; \"off\" to use an external broker)")
	fs.StringVar(&cfg.MQTTPublicURL, "mqtt-public-url", "", "broker URL handed to devices at enrollment, e.g. tls://gantry.example.com:8883 (default: the embedded broker's address or --mqtt-external)")
	fs.StringVar(&cfg.MQTTExternal, "mqtt-external", "", "use this external broker (tls://host:port, Mosquitto configured from deploy/mosquitto) instead of the embedded one")
	fs.StringVar(&cfg.MQTTCRLFile, "mqtt-crl-file", "", "with --mqtt-external: where to write the CRL of revoked device certificates (the broker's crlfile); rewritten on every revocation")
	fs.StringVar(&cfg.MQTTCRLReload, "mqtt-crl-reload", "", "with --mqtt-crl-file: command run after each CRL rewrite so the broker loads it, e.g. \"systemctl reload mosquitto\" (split at spaces, no shell)")
	fs.IntVar(&cfg.MQTTIngestClients, "mqtt-ingest-clients", 0, "with --mqtt-external: shared-subscription clients receiving telemetry (default 4)")
	fs.IntVar(&cfg.WGPort, "wg-port", -1, "UDP port of the WireGuard hub for remote access (default 51820; with --dev a free port; 0: a free port)")
	fs.StringVar(&cfg.WGPublicHost, "wg-public-host", "", "host agents send WireGuard packets to (default: the host of --portal-url or the listen address)")
	fs.DurationVar(&cfg.HistoryRetention, "history-retention", 7*24*time.Hour, "how long machine-data history is kept")
	fs.IntVar(&cfg.IngestMaxGroup, "ingest-max-group", 0, "most telemetry batches stored in one transaction (group commit; default 1024)")
	fs.IntVar(&cfg.IngestWriters, "ingest-writers", 0, "telemetry transactions at once (default 1 on SQLite, 4 on PostgreSQL)")
	fs.DurationVar(&cfg.NotificationRetention, "notification-retention", 90*24*time.Hour, "how long edge-rule notifications are kept (those tied to an open case stay)")
	fs.StringVar(logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&pf.pprof, "pprof-listen", "", "serve Go profiles (net/http/pprof) on this address for profiling under load, e.g. 127.0.0.1:6060 (default: off; bind to loopback)")
	fs.StringVar(&pf.memoryLimit, "memory-limit", "", "soft memory limit of the process, e.g. 900MiB: the garbage collector works harder near it instead of letting the heap double (default: none, or $GOMEMLIMIT)")
	return fs
}

// setMemoryLimit applies --memory-limit.
func setMemoryLimit(v string) error {
	if v == "" {
		return nil
	}
	n, err := humanize.ParseBytes(v)
	if err != nil || n < 64<<20 || n > 1<<50 {
		return fmt.Errorf("--memory-limit %q: want a size of at least 64MiB, such as 900MiB or 2GiB", v)
	}
	debug.SetMemoryLimit(int64(n))
	return nil
}

func serve(args []string, stdout, stderr io.Writer) error {
	var cfg server.Config
	var level string
	var pf processFlags
	fs := newServeFlags(&cfg, &level, &pf)
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := setMemoryLimit(pf.memoryLimit); err != nil {
		return err
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
	}
	cfg.Demo = cfg.Dev
	logger := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: lvl}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if pf.pprof != "" {
		stopPprof, err := pprofserve.Serve(pf.pprof, logger)
		if err != nil {
			return err
		}
		defer stopPprof()
	}
	s, err := server.New(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer s.Close()
	fmt.Fprintf(stdout, "Gantry control plane listening on %s\n", s.URL)
	fmt.Fprintf(stdout, "  JSON API: POST %s/gantry.v1.<Service>/<Method>   OpenAPI: %s/api/openapi.json\n", s.URL, s.URL)
	if s.Broker != nil {
		fmt.Fprintf(stdout, "  MQTT broker (TLS, device certificates from the control plane CA): tls://%s\n", s.Broker.Addr())
	}
	if s.External != nil {
		fmt.Fprintf(stdout, "  MQTT broker (external): %s, CRL %s\n", cfg.MQTTExternal, cfg.MQTTCRLFile)
	}
	if cfg.Dev {
		logins, err := server.DemoLogins(ctx, s.Store)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "Demo logins (password %q):\n", server.DemoPassword)
		for _, l := range logins {
			fmt.Fprintf(stdout, "  %-28s %s\n", l.Email, l.Role)
		}
		fmt.Fprintf(stdout, "Try: gantryctl --server %s login --email admin@nordwerk.example\n", s.URL)
	}
	logger.Info("control plane started", "url", s.URL, "dev", cfg.Dev)
	if err := s.Serve(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	logger.Info("control plane stopped")
	return nil
}

// mosquittoFiles writes what an external Mosquitto needs from the control
// plane: its CA, a server certificate for the broker's host names and the
// current CRL.
func mosquittoFiles(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("mosquitto-files", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", "/var/lib/gantry", "the control plane's data directory (its CA is in pki/)")
	dsn := fs.String("store", "", "store DSN, as for serve")
	out := fs.String("out", "", "directory to write ca.pem, server.pem, server-key.pem and crl.pem to (e.g. /etc/mosquitto/gantry)")
	hosts := fs.String("hosts", "", "comma-separated host names and IPs devices use to reach the broker (server certificate names)")
	days := fs.Int("days", 365, "validity of the server certificate in days")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" || *hosts == "" {
		return errors.New("mosquitto-files: --out and --hosts are required")
	}
	if *days <= 0 {
		return fmt.Errorf("mosquitto-files: --days %d: want a positive number", *days)
	}
	written, err := server.WriteMosquittoFiles(context.Background(), server.MosquittoFiles{
		DataDir: *dataDir, StoreDSN: *dsn, Dir: *out, Hosts: strings.Split(*hosts, ","), Validity: time.Duration(*days) * 24 * time.Hour,
	})
	if err != nil {
		return err
	}
	for _, f := range written {
		fmt.Fprintln(stdout, "wrote", f)
	}
	return nil
}
