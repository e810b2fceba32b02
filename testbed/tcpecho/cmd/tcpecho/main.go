// Command tcpecho echoes TCP connections: a stand-in PLC port for data-link
// tests and demos.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/gantry-iot/gantry/testbed/tcpecho"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:5020", "address to listen on")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tcpecho:", err)
		os.Exit(1)
	}
	fmt.Fprintln(os.Stderr, "tcpecho: echoing on", l.Addr())
	if err := tcpecho.Serve(ctx, l); err != nil {
		fmt.Fprintln(os.Stderr, "tcpecho:", err)
		os.Exit(1)
	}
}
