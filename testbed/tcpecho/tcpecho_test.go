package tcpecho

import (
	"context"
	"net"
	"testing"
	"time"
)

func TestRoundTrip100MB(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, l) }()
	defer func() { cancel(); <-done }()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	n := int64(100 << 20)
	if testing.Short() {
		n = 8 << 20
	}
	start := time.Now()
	sent, got, err := RoundTrip(ctx, c, n, 42)
	if err != nil {
		t.Fatal(err)
	}
	if sent != got {
		t.Fatalf("checksums differ: sent %x got %x", sent, got)
	}
	t.Logf("%d MB echoed in %v (%.0f MB/s)", n>>20, time.Since(start).Round(time.Millisecond), float64(n)/1e6/time.Since(start).Seconds())
}
