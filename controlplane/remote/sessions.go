package remote

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gantry-iot/gantry/controlplane/cases"
	"github.com/gantry-iot/gantry/pkg/wsconn"
)

// WebSocketPath is where sessions are opened.
const WebSocketPath = "/remote/ws"

// TokenTTL is how long a session token may wait for its WebSocket.
const TokenTTL = 60 * time.Second

// Dialer opens a connection to a target through a grant's tunnel.
type Dialer interface {
	Dial(ctx context.Context, grantID, target string) (net.Conn, error)
}

// SessionsConfig wires Sessions.
type SessionsConfig struct {
	Tunnels *Tunnels
	Hub     Dialer
	// Recheck re-authorizes a live session; an error ends it. Called
	// every RecheckEvery for each live session, so role or scope removal,
	// deactivation, case closing, device unlink and expiry end sessions
	// within that period.
	Recheck      func(ctx context.Context, u cases.Use) error
	RecheckEvery time.Duration
	// Audit appends to the case tenant's audit log.
	Audit    func(ctx context.Context, u cases.Use, action, detail string)
	Logger   *slog.Logger
	Registry prometheus.Registerer
}

// Sessions issues session tokens and relays live sessions.
type Sessions struct {
	cfg SessionsConfig
	log *slog.Logger
	up  websocket.Upgrader

	mu      sync.Mutex
	tickets map[string]*ticket // by token hash
	live    map[string]*session

	opened, refused, ended prometheus.Counter
	bytes                  *prometheus.CounterVec
}

type ticket struct {
	id      string
	use     cases.Use
	expires time.Time
}

type session struct {
	id      string
	use     cases.Use
	started time.Time
	ws      *websocket.Conn
	conn    net.Conn
	up      atomic.Int64 // user → machine
	down    atomic.Int64 // machine → user
	once    sync.Once
	reason  atomic.Value // string
}

// NewSessions returns a session broker.
func NewSessions(cfg SessionsConfig) *Sessions {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.RecheckEvery <= 0 {
		cfg.RecheckEvery = 300 * time.Millisecond
	}
	s := &Sessions{cfg: cfg, log: cfg.Logger, tickets: map[string]*ticket{}, live: map[string]*session{},
		opened:  prometheus.NewCounter(prometheus.CounterOpts{Name: "gantry_remote_sessions_opened_total", Help: "Remote-access sessions relayed."}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{Name: "gantry_remote_sessions_refused_total", Help: "WebSocket session attempts refused (bad or expired token, tunnel down, target refused)."}),
		ended:   prometheus.NewCounter(prometheus.CounterOpts{Name: "gantry_remote_sessions_ended_total", Help: "Remote-access sessions ended."}),
		bytes:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gantry_remote_session_bytes_total", Help: "Bytes relayed by remote-access sessions."}, []string{"direction"}),
	}
	s.up = websocket.Upgrader{
		ReadBufferSize: 32 << 10, WriteBufferSize: 32 << 10,
		Subprotocols: []string{"binary"}, // noVNC asks for it
		CheckOrigin:  sameOrigin,
	}
	if cfg.Registry != nil {
		cfg.Registry.MustRegister(s.opened, s.refused, s.ended, s.bytes,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gantry_remote_sessions_live", Help: "Remote-access sessions open now."}, func() float64 { return float64(s.Live()) }))
	}
	return s
}

// sameOrigin admits clients without an Origin (gantryctl, tools) and
// browsers on the control plane's own origin; the single-use token is the
// credential either way.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	return err == nil && u.Host == r.Host
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func hashToken(tok string) string {
	h := sha256.Sum256([]byte(tok))
	return base64.RawURLEncoding.EncodeToString(h[:])
}

// Issue creates a single-use token for an authorized use.
func (s *Sessions) Issue(u cases.Use) (id, token string, expires time.Time) {
	id, token = randomHex(8), randomHex(24)
	expires = time.Now().Add(TokenTTL)
	s.mu.Lock()
	s.tickets[hashToken(token)] = &ticket{id: id, use: u, expires: expires}
	s.mu.Unlock()
	if s.cfg.Tunnels != nil {
		s.cfg.Tunnels.Kick()
	}
	return id, token, expires
}

func (s *Sessions) redeem(token string) (*ticket, error) {
	if len(token) != 48 {
		return nil, errors.New("missing or malformed session token; open a session first (OpenSession)")
	}
	h := hashToken(token)
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, t := range s.tickets {
		if subtle.ConstantTimeCompare([]byte(k), []byte(h)) == 1 {
			delete(s.tickets, k)
			if time.Now().After(t.expires) {
				return nil, errors.New("the session token expired; open a new session")
			}
			return t, nil
		}
	}
	return nil, errors.New("unknown or already used session token; open a new session")
}

// Live is the number of live sessions.
func (s *Sessions) Live() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.live)
}

// ServeHTTP upgrades GET WebSocketPath?token=… and relays the session.
func (s *Sessions) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	t, err := s.redeem(r.URL.Query().Get("token"))
	if err != nil {
		s.refused.Inc()
		s.log.Warn("remote session refused", "reason", err, "remote", r.RemoteAddr)
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 20*time.Second)
	defer cancel()
	if err := s.cfg.Recheck(ctx, t.use); err != nil {
		s.refuse(w, t, http.StatusForbidden, err)
		return
	}
	if s.cfg.Tunnels != nil {
		if err := s.cfg.Tunnels.Wait(ctx, t.use.GrantID); err != nil {
			s.refuse(w, t, http.StatusBadGateway, err)
			return
		}
	}
	conn, err := s.cfg.Hub.Dial(ctx, t.use.GrantID, t.use.Target)
	if err != nil {
		s.refuse(w, t, http.StatusBadGateway, err)
		return
	}
	ws, err := s.up.Upgrade(w, r, nil)
	if err != nil {
		conn.Close()
		s.refuse(nil, t, 0, err)
		return
	}
	ws.SetReadLimit(1 << 20)
	ss := &session{id: t.id, use: t.use, started: time.Now(), ws: ws, conn: conn}
	s.mu.Lock()
	s.live[ss.id] = ss
	s.mu.Unlock()
	s.opened.Inc()
	s.log.Info("remote session opened", "session", ss.id, "user", t.use.UserID, "case", t.use.CaseID, "type", t.use.ConnectionType, "target", t.use.Target)
	s.relay(ss)
}

func (s *Sessions) refuse(w http.ResponseWriter, t *ticket, code int, err error) {
	s.refused.Inc()
	s.log.Warn("remote session refused", "case", t.use.CaseID, "user", t.use.UserID, "target", t.use.Target, "reason", err)
	if s.cfg.Audit != nil {
		s.cfg.Audit(context.Background(), t.use, "remote_access.session_refused", fmt.Sprintf("%s %s: %v", t.use.ConnectionType, t.use.Target, err))
	}
	if w != nil {
		http.Error(w, err.Error(), code)
	}
}

// relay copies WebSocket binary messages to the tunnel connection and
// back until either side ends or the session is ended.
func (s *Sessions) relay(ss *session) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 32<<10)
		for {
			n, err := ss.conn.Read(buf)
			if n > 0 {
				if werr := ss.ws.WriteMessage(websocket.BinaryMessage, buf[:n]); werr != nil {
					s.end(ss, "the client went away")
					return
				}
				ss.down.Add(int64(n))
			}
			if err != nil {
				s.end(ss, "the machine closed the connection")
				return
			}
		}
	}()
	for {
		typ, rd, err := ss.ws.NextReader()
		if err != nil {
			s.end(ss, "the client closed the session")
			break
		}
		if typ == websocket.TextMessage {
			// The only text message is the client's half-close.
			b, _ := io.ReadAll(io.LimitReader(rd, 16))
			cw, ok := ss.conn.(interface{ CloseWrite() error })
			if string(b) != wsconn.HalfClose || !ok {
				s.end(ss, "protocol error: only binary WebSocket messages are relayed")
				break
			}
			_ = cw.CloseWrite()
			continue
		}
		if typ != websocket.BinaryMessage {
			s.end(ss, "protocol error: only binary WebSocket messages are relayed")
			break
		}
		n, err := io.Copy(ss.conn, rd)
		ss.up.Add(n)
		if err != nil {
			s.end(ss, "the tunnel connection failed")
			break
		}
	}
	<-done
	s.finish(ss)
}

// end closes a session once with a reason the client sees in the close
// frame.
func (s *Sessions) end(ss *session, reason string) {
	ss.once.Do(func() {
		ss.reason.Store(reason)
		msg := websocket.FormatCloseMessage(websocket.ClosePolicyViolation, truncate(reason, 120))
		if reason == "the client closed the session" || reason == "the machine closed the connection" {
			msg = websocket.FormatCloseMessage(websocket.CloseNormalClosure, truncate(reason, 120))
		}
		_ = ss.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
		ss.ws.Close()
		ss.conn.Close()
	})
}

func (s *Sessions) finish(ss *session) {
	s.mu.Lock()
	delete(s.live, ss.id)
	s.mu.Unlock()
	s.ended.Inc()
	up, down := ss.up.Load(), ss.down.Load()
	s.bytes.WithLabelValues("to_machine").Add(float64(up))
	s.bytes.WithLabelValues("to_user").Add(float64(down))
	reason, _ := ss.reason.Load().(string)
	end := time.Now()
	s.log.Info("remote session ended", "session", ss.id, "case", ss.use.CaseID, "user", ss.use.UserID, "reason", reason, "bytes_to_machine", up, "bytes_to_user", down)
	if s.cfg.Audit != nil {
		s.cfg.Audit(context.Background(), ss.use, "remote_access.session",
			fmt.Sprintf("%s %s asset %s from %s to %s, %d bytes to the machine, %d bytes to the user; %s",
				ss.use.ConnectionType, ss.use.Target, ss.use.AssetID, ss.started.UTC().Format(time.RFC3339), end.UTC().Format(time.RFC3339), up, down, reason))
	}
}

// EndGrant ends every live session of a grant now.
func (s *Sessions) EndGrant(grantID, reason string) {
	for _, ss := range s.snapshot() {
		if ss.use.GrantID == grantID {
			s.end(ss, reason)
		}
	}
}

func (s *Sessions) snapshot() []*session {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*session, 0, len(s.live))
	for _, ss := range s.live {
		out = append(out, ss)
	}
	return out
}

// Run re-authorizes live sessions and drops expired tokens until ctx ends.
func (s *Sessions) Run(ctx context.Context) {
	tick := time.NewTicker(s.cfg.RecheckEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			for _, ss := range s.snapshot() {
				s.end(ss, "the control plane is shutting down")
			}
			return
		case <-tick.C:
		}
		now := time.Now()
		s.mu.Lock()
		for k, t := range s.tickets {
			if now.After(t.expires) {
				delete(s.tickets, k)
			}
		}
		s.mu.Unlock()
		for _, ss := range s.snapshot() {
			// The re-check sees the grant as it is now (an extension keeps
			// the session; expiry, deactivation and closing end it).
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := s.cfg.Recheck(rctx, ss.use)
			cancel()
			if err != nil && ctx.Err() == nil {
				s.end(ss, "access ended: "+err.Error())
			}
		}
	}
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
