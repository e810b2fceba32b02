// Command agentsim runs many simulated edge agents against a Gantry
// control plane for load tests; see package agentsim.
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
	"slices"
	"syscall"
	"time"

	"github.com/gantry-iot/gantry/testbed/agentsim"
)

const usage = `agentsim runs N simulated edge agents in one process against a Gantry
control plane, for load tests.

Each agent is a real device: agentsim logs in as a user with Edge Devices =
manage, registers the devices and creates their one-time enrollment tokens,
enrolls every agent (key generated locally, certificate request over gRPC),
connects it to the broker with its client certificate (mTLS, will, retained
online state), answers signed commands (ping) and publishes protobuf
telemetry batches with QoS 1 at --rate messages per second per agent (±10 %%
jitter, random phase). Progress is logged every --progress; a summary is
printed at the end: enrolled/s, connected, messages sent/acked, publish
latency (until PUBACK) p50/p99, errors by kind, RSS and CPU time.

Ctrl-C (SIGINT) or SIGTERM stops cleanly: in-flight publishes finish, each
agent publishes its offline state and disconnects.

Many agents need many file descriptors (one TLS connection each, in this
process and in the broker): agentsim raises its soft limit to the hard one;
raise the hard limit (ulimit -Hn) for more than ~%d agents.

Usage:
  agentsim --server http://127.0.0.1:8080 --email st@acme.example --agents 100 --rate 1 --batch 10 --duration 1m

Flags:
`

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "agentsim:", err)
		os.Exit(2)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	var cfg agentsim.Config
	var logLevel string
	var jsonLogs bool
	fs := flag.NewFlagSet("agentsim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, usage, maxAgents()-100)
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.Server, "server", "", "control plane URL: http://host:port for a --dev control plane, https://host:port otherwise (required)")
	fs.StringVar(&cfg.ServerCA, "server-ca", "", "PEM file of the CA that signed the control plane's HTTPS certificate, if private")
	fs.StringVar(&cfg.Email, "email", "", "user with Edge Devices = manage who registers the devices (not needed when --state holds enrolled agents)")
	fs.StringVar(&cfg.Password, "password", "", "that user's password (default: $GANTRY_PASSWORD)")
	fs.IntVar(&cfg.Agents, "agents", 10, "number of simulated agents")
	fs.Float64Var(&cfg.Rate, "rate", 1, "telemetry messages per second per agent")
	fs.IntVar(&cfg.Batch, "batch", 10, "samples (values) per message")
	fs.DurationVar(&cfg.Run, "duration", time.Minute, "how long to publish once every agent is connected; 0 runs until Ctrl-C")
	fs.IntVar(&cfg.Concurrency, "concurrency", 16, "parallel enrollments (device + token through the API, then CSR)")
	fs.IntVar(&cfg.ConnectConcurrency, "connect-concurrency", 256, "parallel MQTT connects (TLS handshakes)")
	fs.DurationVar(&cfg.ConnectTimeout, "connect-timeout", time.Minute, "give up on an agent that is not connected after this long")
	fs.DurationVar(&cfg.PublishTimeout, "publish-timeout", 10*time.Second, "count a publish as failed without PUBACK after this long")
	fs.DurationVar(&cfg.Progress, "progress", 5*time.Second, "progress log interval; negative disables")
	fs.StringVar(&cfg.StateDir, "state", "", "keep the agents' state dirs here (DIR/agent-00000, …) and reuse the agents already enrolled in it; default: a temporary dir removed at exit")
	fs.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.BoolVar(&jsonLogs, "log-json", false, "log JSON instead of text")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q (all options are flags; see --help)", fs.Args())
	}
	if cfg.Password == "" {
		cfg.Password = os.Getenv("GANTRY_PASSWORD")
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", logLevel)
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(stderr, opts)
	if jsonLogs {
		h = slog.NewJSONHandler(stderr, opts)
	}
	logger := slog.New(h)
	if n := maxAgents(); cfg.Agents > n {
		logger.Warn("the file descriptor limit may be too low for this many agents", "agents", cfg.Agents, "limit", n+100)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sim, err := agentsim.New(cfg, logger)
	if err != nil {
		return err
	}
	sum, err := sim.Run(ctx)
	printSummary(stdout, sum)
	return err
}

// maxAgents is roughly how many agents the descriptor limit allows (the
// Go runtime has already raised the soft limit to the hard one).
func maxAgents() int {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 1 << 20
	}
	return int(min(r.Cur, 1<<30)) - 100
}

func printSummary(w io.Writer, s agentsim.Summary) {
	fmt.Fprintf(w, "agents              %d (reused %d, enrolled %d in %v, %.1f/s)\n", s.Agents, s.Reused, s.Enrolled, s.EnrollTime.Round(time.Millisecond), s.EnrolledPerSec)
	fmt.Fprintf(w, "connected           %d in %v\n", s.Connected, s.ConnectTime.Round(time.Millisecond))
	fmt.Fprintf(w, "publishing          %v\n", s.RunTime.Round(time.Millisecond))
	fmt.Fprintf(w, "messages sent/acked %d / %d (%.1f acked/s, %d values)\n", s.Sent, s.Acked, s.AckedPerSec, s.Values)
	fmt.Fprintf(w, "publish latency     p50 %v, p99 %v\n", s.P50.Round(10*time.Microsecond), s.P99.Round(10*time.Microsecond))
	fmt.Fprintf(w, "commands received   %d\n", s.Commands)
	fmt.Fprintf(w, "process             RSS %.1f MiB, CPU %v\n", float64(s.RSS)/(1<<20), s.CPU.Round(10*time.Millisecond))
	kinds := make([]string, 0, len(s.Errors))
	for k := range s.Errors {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	if len(kinds) == 0 {
		fmt.Fprintln(w, "errors              none")
	}
	for _, k := range kinds {
		fmt.Fprintf(w, "error %-13s %d\n", k, s.Errors[k])
	}
}
