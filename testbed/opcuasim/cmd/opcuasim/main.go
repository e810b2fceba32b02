// Command opcuasim runs an OPC-UA server with simulated machines (see
// testbed/opcuasim) for agent tests and demos.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/gantry-iot/gantry/testbed/opcuasim"
)

func main() {
	file := flag.String("config", "", "JSON configuration (see testbed/opcuasim/cnc.json); flags override it")
	port := flag.Int("port", -1, "TCP port (0: a free one)")
	nodes := flag.Int("nodes", -1, "number of generated load variables")
	interval := flag.Duration("interval", 0, "value update interval, e.g. 100ms")
	verbose := flag.Bool("v", false, "log gopcua's server messages")
	stats := flag.Duration("stats", 0, "print \"produced N values\" (generated variables' values set so far) at this interval, e.g. 100ms (default: off)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "opcuasim — OPC-UA server with a simulated CNC machine and N load variables.\n\nUsage: opcuasim [flags]\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	cfg := opcuasim.Config{Profiles: []opcuasim.Profile{{Name: "cnc1", Kind: "cnc"}}, Port: 4840}
	if *file != "" {
		b, err := os.ReadFile(*file)
		if err == nil {
			cfg, err = opcuasim.ParseConfig(b)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "opcuasim:", err)
			os.Exit(2)
		}
	}
	if *port >= 0 {
		cfg.Port = *port
	}
	if *nodes >= 0 {
		cfg.Generated = *nodes
	}
	if *interval > 0 {
		cfg.Interval = opcuasim.Duration(*interval)
	}
	level := slog.Level(100) // gopcua's server logs noise at start-up; -v shows it
	if *verbose {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	sim, err := opcuasim.New(cfg, logger)
	if err != nil {
		fmt.Fprintln(os.Stderr, "opcuasim:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := sim.Start(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "opcuasim:", err)
		os.Exit(1)
	}
	fmt.Printf("OPC-UA simulator on %s (namespace %d): e.g. %s\n", sim.Endpoint(), sim.Namespace(), opcuasim.NodeID(sim.Namespace(), "cnc1", "SpindleSpeed"))
	if *stats > 0 {
		t := time.NewTicker(*stats)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				fmt.Printf("produced %d values\n", sim.Produced())
				continue
			case <-ctx.Done():
			}
			break
		}
	}
	<-ctx.Done()
	shutdown := time.AfterFunc(5*time.Second, func() { os.Exit(1) })
	defer shutdown.Stop()
	sim.Stop()
}
