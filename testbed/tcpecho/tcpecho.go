// Package tcpecho is a TCP echo target for data-link tests, with a helper
// that streams deterministic pseudo-random bytes through a connection and
// compares the SHA-256 of what was sent with what came back.
package tcpecho

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
)

// Serve echoes every connection until ctx ends or l is closed.
func Serve(ctx context.Context, l net.Listener) error {
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			stop := context.AfterFunc(ctx, func() { c.Close() })
			defer stop()
			_, _ = io.Copy(c, c)
		}()
	}
}

// RoundTrip writes n pseudo-random bytes (seeded) to conn while reading
// the echo, and returns the SHA-256 of both directions.
func RoundTrip(ctx context.Context, conn net.Conn, n int64, seed uint64) (sent, received [32]byte, err error) {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	errc := make(chan error, 1)
	go func() {
		h := sha256.New()
		src := io.LimitReader(rng{rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}, n)
		_, err := io.Copy(io.MultiWriter(conn, h), src)
		copy(sent[:], h.Sum(nil))
		if cw, ok := conn.(interface{ CloseWrite() error }); ok && err == nil {
			err = cw.CloseWrite()
		}
		errc <- err
	}()
	h := sha256.New()
	got, rerr := io.CopyN(h, conn, n)
	copy(received[:], h.Sum(nil))
	if werr := <-errc; werr != nil {
		return sent, received, fmt.Errorf("tcpecho: write: %w", werr)
	}
	if rerr != nil {
		return sent, received, fmt.Errorf("tcpecho: read after %d of %d bytes: %w", got, n, rerr)
	}
	return sent, received, nil
}

type rng struct{ r *rand.Rand }

func (g rng) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(g.r.Uint32())
	}
	return len(p), nil
}
