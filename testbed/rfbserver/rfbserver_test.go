package rfbserver

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"sync"
	"testing"
	"time"

	vnc "github.com/mitchellh/go-vnc"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// bufConn speeds up go-vnc, which reads pixel by pixel.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (b bufConn) Read(p []byte) (int, error) { return b.r.Read(p) }

func start(t *testing.T, cfg Config) (*Server, string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := New(cfg, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Serve(ctx, l); close(done) }()
	t.Cleanup(func() { cancel(); <-done; s.Close() })
	return s, l.Addr().String()
}

func dial(t *testing.T, addr string, auth vnc.ClientAuth) (*vnc.ClientConn, chan vnc.ServerMessage, error) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	msgs := make(chan vnc.ServerMessage, 4)
	cc, err := vnc.Client(bufConn{c, bufio.NewReaderSize(c, 1<<16)}, &vnc.ClientConfig{Auth: []vnc.ClientAuth{auth}, ServerMessageCh: msgs})
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	t.Cleanup(func() { cc.Close() })
	return cc, msgs, nil
}

func frame(t *testing.T, cc *vnc.ClientConn, msgs chan vnc.ServerMessage, incremental bool) *vnc.FramebufferUpdateMessage {
	t.Helper()
	if err := cc.FramebufferUpdateRequest(incremental, 0, 0, cc.FrameBufferWidth, cc.FrameBufferHeight); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-msgs:
		fu, ok := m.(*vnc.FramebufferUpdateMessage)
		if !ok {
			t.Fatalf("got %T", m)
		}
		return fu
	case <-time.After(10 * time.Second):
		t.Fatal("no framebuffer update")
	}
	return nil
}

func checkPattern(t *testing.T, fu *vnc.FramebufferUpdateMessage, w, h int, gen uint32) {
	t.Helper()
	if len(fu.Rectangles) != 1 {
		t.Fatalf("%d rectangles", len(fu.Rectangles))
	}
	raw := fu.Rectangles[0].Enc.(*vnc.RawEncoding)
	if len(raw.Colors) != w*h {
		t.Fatalf("%d pixels, want %d", len(raw.Colors), w*h)
	}
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			want := Pixel(x, y, w, h, gen)
			got := raw.Colors[y*w+x]
			if got.R != uint16(want.R) || got.G != uint16(want.G) || got.B != uint16(want.B) {
				t.Fatalf("pixel (%d,%d) = %v, want %v (generation %d)", x, y, got, want, gen)
			}
		}
	}
}

func TestPatternNoAuth(t *testing.T) {
	s, addr := start(t, Config{Width: 320, Height: 200})
	cc, msgs, err := dial(t, addr, new(vnc.ClientAuthNone))
	if err != nil {
		t.Fatal(err)
	}
	if cc.FrameBufferWidth != 320 || cc.FrameBufferHeight != 200 || cc.DesktopName != "gantry test pattern" {
		t.Errorf("server init %dx%d %q", cc.FrameBufferWidth, cc.FrameBufferHeight, cc.DesktopName)
	}
	checkPattern(t, frame(t, cc, msgs, false), 320, 200, 0)
	// A key press changes the pattern; an incremental request waits for it.
	if err := cc.KeyEvent(0x61, true); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Generation() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	checkPattern(t, frame(t, cc, msgs, true), 320, 200, 1)
}

func TestVNCAuth(t *testing.T) {
	_, addr := start(t, Config{Width: 64, Height: 48, Password: "s3cret"})
	if _, _, err := dial(t, addr, &vnc.PasswordAuth{Password: "wrong"}); err == nil {
		t.Fatal("wrong password accepted")
	}
	cc, msgs, err := dial(t, addr, &vnc.PasswordAuth{Password: "s3cret"})
	if err != nil {
		t.Fatalf("right password: %v", err)
	}
	checkPattern(t, frame(t, cc, msgs, false), 64, 48, 0)
}

// TestMalformedClosesOnlyThatConnection: garbage, oversized cut text and
// unknown message types close the offending connection; others go on.
func TestMalformedClosesOnlyThatConnection(t *testing.T) {
	s, addr := start(t, Config{Width: 32, Height: 32})
	good, msgs, err := dial(t, addr, new(vnc.ClientAuthNone))
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range [][]byte{
		{99},                                 // unknown message type
		{6, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff}, // cut text of 2 GiB
		{0, 0, 0, 0, 8, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, // 8 bpp colour map
	} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		hs := make([]byte, 12)
		br.Read(hs)
		c.Write([]byte("RFB 003.008\n"))
		sec := make([]byte, 2)
		br.Read(sec)
		c.Write([]byte{1})
		res := make([]byte, 4)
		br.Read(res)
		c.Write([]byte{1}) // ClientInit
		init := make([]byte, 2+2+16+4+len("gantry test pattern"))
		if _, err := readFull(br, init); err != nil {
			t.Fatal(err)
		}
		c.Write(bad)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := br.ReadByte(); err == nil {
			t.Errorf("connection survived malformed message %v", bad)
		}
		c.Close()
	}
	before := s.Rejected.Load()
	if before < 3 {
		t.Errorf("rejected %d connections, want 3", before)
	}
	checkPattern(t, frame(t, good, msgs, false), 32, 32, s.Generation())
}

func readFull(r *bufio.Reader, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := r.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func FuzzClientMessages(f *testing.F) {
	f.Add([]byte{3, 0, 0, 0, 0, 0, 0, 10, 0, 10})
	f.Add([]byte{6, 0, 0, 0, 0, 0, 0, 3, 'a', 'b', 'c'})
	f.Fuzz(func(t *testing.T, b []byte) {
		s := New(Config{Width: 8, Height: 8, MaxCutText: 64}, nil)
		reqs := make(chan updateReq, 16)
		pf := defaultPF
		var mu sync.Mutex
		_ = s.readMessages(bufio.NewReader(bytes.NewReader(b)), reqs, &pf, &mu)
	})
}
