// Command rfbserver serves an RFB (VNC) test pattern that changes on every
// key press or mouse click — a stand-in for a machine HMI in remote-access
// tests and demos.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/gantry-iot/gantry/testbed/rfbserver"
)

func main() {
	var cfg rfbserver.Config
	listen := flag.String("listen", "127.0.0.1:5900", "address to listen on")
	flag.IntVar(&cfg.Width, "width", 640, "framebuffer width")
	flag.IntVar(&cfg.Height, "height", 480, "framebuffer height")
	flag.StringVar(&cfg.Password, "password", "", "VNC password (empty: no authentication)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "rfbserver — RFB 3.8 test server with a deterministic pattern.\n\nUsage: rfbserver [flags]\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "rfbserver:", err)
		os.Exit(1)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	logger.Info("serving RFB", "addr", l.Addr().String())
	s := rfbserver.New(cfg, logger)
	if err := s.Serve(ctx, l); err != nil {
		fmt.Fprintln(os.Stderr, "rfbserver:", err)
		os.Exit(1)
	}
	s.Close()
}
