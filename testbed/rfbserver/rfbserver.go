// Package rfbserver is a small RFB 3.8 (VNC) server for tests: it serves a
// deterministic test pattern that changes with every key or pointer-button
// event, so remote-access tests can check pixels end to end without an X
// server. Security types None and VNC Authentication; Raw encoding; 32 bpp
// true colour in the client's requested shifts and byte order (16 bpp too).
// Every client message is validated; a malformed one closes only that
// connection, with a logged reason.
package rfbserver

import (
	"bufio"
	"context"
	"crypto/des"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"image/color"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Config configures a Server.
type Config struct {
	Width, Height int    // default 640×480
	Password      string // empty: security type None; else VNC Authentication
	Name          string // desktop name
	MaxCutText    int    // largest accepted ClientCutText; default 1 MiB
}

// Server serves RFB connections. Safe for concurrent use.
type Server struct {
	cfg Config
	log *slog.Logger
	gen atomic.Uint32 // pattern generation, bumped by input events

	mu      sync.Mutex
	changed chan struct{} // closed and replaced when gen changes
	conns   map[net.Conn]struct{}
	wg      sync.WaitGroup

	// Stats for tests.
	Connections, Frames, Rejected atomic.Int64
}

// New returns a Server. logger may be nil.
func New(cfg Config, logger *slog.Logger) *Server {
	if cfg.Width <= 0 {
		cfg.Width = 640
	}
	if cfg.Height <= 0 {
		cfg.Height = 480
	}
	if cfg.Name == "" {
		cfg.Name = "gantry test pattern"
	}
	if cfg.MaxCutText <= 0 {
		cfg.MaxCutText = 1 << 20
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, log: logger, changed: make(chan struct{}), conns: map[net.Conn]struct{}{}}
}

// Generation is the current pattern generation.
func (s *Server) Generation() uint32 { return s.gen.Load() }

func (s *Server) bump() {
	s.gen.Add(1)
	s.mu.Lock()
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// Pixel is the test pattern's colour at (x, y) in generation gen: a red
// ramp across, a green ramp down and 32-pixel blue checks, shifted by
// generation.
func Pixel(x, y, w, h int, gen uint32) color.RGBA {
	return color.RGBA{
		R: uint8((x*255/max(w-1, 1) + int(gen)*40) % 256),
		G: uint8(y * 255 / max(h-1, 1)),
		B: uint8(((x/32 + y/32 + int(gen)) % 2) * 255),
		A: 255,
	}
}

// Serve accepts connections until ctx ends or l is closed.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				c.Close()
			}()
			s.Connections.Add(1)
			if err := s.handle(ctx, c); err != nil && !errors.Is(err, io.EOF) {
				s.Rejected.Add(1)
				s.log.Info("rfb connection closed", "remote", c.RemoteAddr().String(), "reason", err)
			}
		}()
	}
}

// Close closes all connections and waits for their goroutines.
func (s *Server) Close() error {
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

type pixelFormat struct {
	bpp, depth                      uint8
	bigEndian, trueColour           bool
	redMax, greenMax, blueMax       uint16
	redShift, greenShift, blueShift uint8
}

var defaultPF = pixelFormat{bpp: 32, depth: 24, trueColour: true, redMax: 255, greenMax: 255, blueMax: 255, redShift: 16, greenShift: 8, blueShift: 0}

func (p pixelFormat) bytes() []byte {
	b := make([]byte, 16)
	b[0], b[1] = p.bpp, p.depth
	if p.bigEndian {
		b[2] = 1
	}
	if p.trueColour {
		b[3] = 1
	}
	binary.BigEndian.PutUint16(b[4:], p.redMax)
	binary.BigEndian.PutUint16(b[6:], p.greenMax)
	binary.BigEndian.PutUint16(b[8:], p.blueMax)
	b[10], b[11], b[12] = p.redShift, p.greenShift, p.blueShift
	return b
}

func parsePF(b []byte) (pixelFormat, error) {
	p := pixelFormat{bpp: b[0], depth: b[1], bigEndian: b[2] != 0, trueColour: b[3] != 0,
		redMax: binary.BigEndian.Uint16(b[4:]), greenMax: binary.BigEndian.Uint16(b[6:]), blueMax: binary.BigEndian.Uint16(b[8:]),
		redShift: b[10], greenShift: b[11], blueShift: b[12]}
	if p.bpp != 32 && p.bpp != 16 {
		return p, fmt.Errorf("unsupported bits per pixel %d (32 or 16)", p.bpp)
	}
	if !p.trueColour {
		return p, errors.New("colour-map pixel formats are not supported")
	}
	if p.redShift >= p.bpp || p.greenShift >= p.bpp || p.blueShift >= p.bpp {
		return p, errors.New("colour shift beyond the pixel size")
	}
	return p, nil
}

// ErrAuth is returned to clients that fail VNC authentication.
var ErrAuth = errors.New("authentication failed")

func (s *Server) handle(ctx context.Context, c net.Conn) error {
	_ = c.SetDeadline(time.Now().Add(10 * time.Second)) // handshake deadline
	r := bufio.NewReaderSize(c, 64<<10)
	w := bufio.NewWriterSize(c, 256<<10)
	if _, err := w.WriteString("RFB 003.008\n"); err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return err
	}
	var ver [12]byte
	if _, err := io.ReadFull(r, ver[:]); err != nil {
		return fmt.Errorf("reading version: %w", err)
	}
	minor := 0
	switch string(ver[:]) {
	case "RFB 003.003\n":
		minor = 3
	case "RFB 003.007\n":
		minor = 7
	case "RFB 003.008\n":
		minor = 8
	default:
		return fmt.Errorf("unsupported protocol version %q", ver[:])
	}
	secType := byte(1)
	if s.cfg.Password != "" {
		secType = 2
	}
	if minor == 3 {
		_ = binary.Write(w, binary.BigEndian, uint32(secType))
	} else {
		w.Write([]byte{1, secType})
		if err := w.Flush(); err != nil {
			return err
		}
		chosen, err := r.ReadByte()
		if err != nil {
			return err
		}
		if chosen != secType {
			return fmt.Errorf("client chose security type %d, offered %d", chosen, secType)
		}
	}
	if secType == 2 {
		challenge := make([]byte, 16)
		_, _ = rand.Read(challenge)
		w.Write(challenge)
		if err := w.Flush(); err != nil {
			return err
		}
		resp := make([]byte, 16)
		if _, err := io.ReadFull(r, resp); err != nil {
			return err
		}
		if !vncAuthOK(s.cfg.Password, challenge, resp) {
			_ = binary.Write(w, binary.BigEndian, uint32(1))
			if minor == 8 {
				msg := "wrong password"
				_ = binary.Write(w, binary.BigEndian, uint32(len(msg)))
				w.WriteString(msg)
			}
			w.Flush()
			return ErrAuth
		}
	}
	if secType == 2 || minor == 8 {
		_ = binary.Write(w, binary.BigEndian, uint32(0)) // SecurityResult OK
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if _, err := r.ReadByte(); err != nil { // ClientInit shared flag
		return err
	}
	_ = binary.Write(w, binary.BigEndian, uint16(s.cfg.Width))
	_ = binary.Write(w, binary.BigEndian, uint16(s.cfg.Height))
	w.Write(defaultPF.bytes())
	_ = binary.Write(w, binary.BigEndian, uint32(len(s.cfg.Name)))
	w.WriteString(s.cfg.Name)
	if err := w.Flush(); err != nil {
		return err
	}
	_ = c.SetDeadline(time.Time{})
	return s.loop(ctx, r, w)
}

// vncAuthOK checks the DES response: the password (max 8 bytes, zero
// padded, each byte bit-reversed) is the key.
func vncAuthOK(password string, challenge, resp []byte) bool {
	key := make([]byte, 8)
	copy(key, password)
	for i, b := range key {
		var rev byte
		for j := 0; j < 8; j++ {
			if b&(1<<j) != 0 {
				rev |= 1 << (7 - j)
			}
		}
		key[i] = rev
	}
	blk, err := des.NewCipher(key)
	if err != nil {
		return false
	}
	want := make([]byte, 16)
	blk.Encrypt(want[:8], challenge[:8])
	blk.Encrypt(want[8:], challenge[8:])
	var diff byte
	for i := range want {
		diff |= want[i] ^ resp[i]
	}
	return diff == 0
}

type updateReq struct {
	incremental bool
	x, y, w, h  int
}

func (s *Server) loop(ctx context.Context, r *bufio.Reader, w *bufio.Writer) error {
	pf := defaultPF
	reqs := make(chan updateReq, 16)
	errc := make(chan error, 1)
	var pfMu sync.Mutex
	go func() { errc <- s.readMessages(r, reqs, &pf, &pfMu) }()
	sent := ^uint32(0)
	for {
		var req updateReq
		select {
		case err := <-errc:
			return err
		case req = <-reqs:
		case <-ctx.Done():
			return ctx.Err()
		}
		if req.incremental && sent == s.gen.Load() {
			s.mu.Lock()
			ch := s.changed
			s.mu.Unlock()
			select {
			case <-ch:
			case err := <-errc:
				return err
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		gen := s.gen.Load()
		pfMu.Lock()
		cur := pf
		pfMu.Unlock()
		if err := s.sendUpdate(w, cur, req, gen); err != nil {
			return err
		}
		sent = gen
		s.Frames.Add(1)
	}
}

func (s *Server) sendUpdate(w *bufio.Writer, pf pixelFormat, req updateReq, gen uint32) error {
	x, y, rw, rh := req.x, req.y, req.w, req.h
	if x >= s.cfg.Width || y >= s.cfg.Height {
		rw, rh = 0, 0
	}
	if x+rw > s.cfg.Width {
		rw = s.cfg.Width - x
	}
	if y+rh > s.cfg.Height {
		rh = s.cfg.Height - y
	}
	hdr := make([]byte, 4+12)
	hdr[0] = 0 // FramebufferUpdate
	binary.BigEndian.PutUint16(hdr[2:], 1)
	binary.BigEndian.PutUint16(hdr[4:], uint16(x))
	binary.BigEndian.PutUint16(hdr[6:], uint16(y))
	binary.BigEndian.PutUint16(hdr[8:], uint16(rw))
	binary.BigEndian.PutUint16(hdr[10:], uint16(rh))
	// encoding 0 = Raw (bytes 12..15 already zero)
	w.Write(hdr)
	bpp := int(pf.bpp / 8)
	var order binary.ByteOrder = binary.LittleEndian
	if pf.bigEndian {
		order = binary.BigEndian
	}
	px := make([]byte, bpp)
	for yy := y; yy < y+rh; yy++ {
		for xx := x; xx < x+rw; xx++ {
			c := Pixel(xx, yy, s.cfg.Width, s.cfg.Height, gen)
			v := uint32(scale(c.R, pf.redMax))<<pf.redShift | uint32(scale(c.G, pf.greenMax))<<pf.greenShift | uint32(scale(c.B, pf.blueMax))<<pf.blueShift
			if bpp == 4 {
				order.PutUint32(px, v)
			} else {
				order.PutUint16(px, uint16(v))
			}
			w.Write(px)
		}
	}
	return w.Flush()
}

func scale(v uint8, max uint16) uint16 { return uint16(uint32(v) * uint32(max) / 255) }

// readMessages parses client messages until an error.
func (s *Server) readMessages(r *bufio.Reader, reqs chan<- updateReq, pf *pixelFormat, mu *sync.Mutex) error {
	for {
		t, err := r.ReadByte()
		if err != nil {
			return err
		}
		switch t {
		case 0: // SetPixelFormat
			b := make([]byte, 19)
			if _, err := io.ReadFull(r, b); err != nil {
				return err
			}
			p, err := parsePF(b[3:])
			if err != nil {
				return fmt.Errorf("SetPixelFormat: %w", err)
			}
			mu.Lock()
			*pf = p
			mu.Unlock()
		case 2: // SetEncodings
			var h [3]byte
			if _, err := io.ReadFull(r, h[:]); err != nil {
				return err
			}
			n := int(binary.BigEndian.Uint16(h[1:]))
			if n > 1024 {
				return fmt.Errorf("SetEncodings: %d encodings is too many", n)
			}
			if _, err := io.CopyN(io.Discard, r, int64(4*n)); err != nil {
				return err
			}
		case 3: // FramebufferUpdateRequest
			var b [9]byte
			if _, err := io.ReadFull(r, b[:]); err != nil {
				return err
			}
			req := updateReq{incremental: b[0] != 0, x: int(binary.BigEndian.Uint16(b[1:])), y: int(binary.BigEndian.Uint16(b[3:])),
				w: int(binary.BigEndian.Uint16(b[5:])), h: int(binary.BigEndian.Uint16(b[7:]))}
			select {
			case reqs <- req:
			default: // a client flooding requests gets them coalesced
			}
		case 4: // KeyEvent
			var b [7]byte
			if _, err := io.ReadFull(r, b[:]); err != nil {
				return err
			}
			if b[0] != 0 {
				s.bump()
			}
		case 5: // PointerEvent
			var b [5]byte
			if _, err := io.ReadFull(r, b[:]); err != nil {
				return err
			}
			if b[0] != 0 {
				s.bump()
			}
		case 6: // ClientCutText
			var b [7]byte
			if _, err := io.ReadFull(r, b[:]); err != nil {
				return err
			}
			n := int(binary.BigEndian.Uint32(b[3:]))
			if n > s.cfg.MaxCutText {
				return fmt.Errorf("ClientCutText of %d bytes exceeds the limit of %d", n, s.cfg.MaxCutText)
			}
			if _, err := io.CopyN(io.Discard, r, int64(n)); err != nil {
				return err
			}
		default:
			return fmt.Errorf("unknown client message type %d", t)
		}
	}
}
