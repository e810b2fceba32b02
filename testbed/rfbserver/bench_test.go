package rfbserver

import (
	"bufio"
	"net"
	"testing"

	vnc "github.com/mitchellh/go-vnc"
)

// BenchmarkFrame measures full 640×480 Raw updates read by go-vnc with and
// without a buffered reader around the connection (go-vnc reads pixel by
// pixel).
func BenchmarkFrame(b *testing.B) {
	for _, buffered := range []bool{false, true} {
		name := "unbuffered"
		if buffered {
			name = "buffered"
		}
		b.Run(name, func(b *testing.B) {
			_, addr := startB(b)
			c, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			var conn net.Conn = c
			if buffered {
				conn = bufConn{c, bufio.NewReaderSize(c, 1<<16)}
			}
			msgs := make(chan vnc.ServerMessage, 1)
			cc, err := vnc.Client(conn, &vnc.ClientConfig{Auth: []vnc.ClientAuth{new(vnc.ClientAuthNone)}, ServerMessageCh: msgs})
			if err != nil {
				b.Fatal(err)
			}
			defer cc.Close()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := cc.FramebufferUpdateRequest(false, 0, 0, 640, 480); err != nil {
					b.Fatal(err)
				}
				<-msgs
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "frames/s")
		})
	}
}

func startB(b *testing.B) (*Server, string) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := New(Config{}, nil)
	go s.Serve(b.Context(), l)
	b.Cleanup(func() { l.Close(); s.Close() })
	return s, l.Addr().String()
}
