// Package wsconn dials a Gantry remote-access WebSocket and presents it as
// a net.Conn: each Write is one binary message, Reads return message
// bytes in order. gantryctl uses it to expose sessions on local ports.
package wsconn

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Conn is a WebSocket as a net.Conn. Safe for one reader and one writer
// at a time.
type Conn struct {
	ws *websocket.Conn
	rd io.Reader
	wm sync.Mutex
}

// HandshakeTimeout bounds the opening handshake unless ctx ends sooner.
// The control plane may hold the handshake up to 20 s while the edge
// device brings its tunnel up, then answers with the reason it could not;
// waiting longer than that lets the caller see the reason instead of a
// bare i/o timeout.
const HandshakeTimeout = 30 * time.Second

// Dial opens the WebSocket at url (ws:// or wss://).
func Dial(ctx context.Context, url string, tlsConfig *tls.Config) (*Conn, error) {
	d := websocket.Dialer{HandshakeTimeout: HandshakeTimeout, TLSClientConfig: tlsConfig, ReadBufferSize: 32 << 10, WriteBufferSize: 32 << 10,
		Subprotocols: []string{"binary"}}
	ws, resp, err := d.DialContext(ctx, url, nil)
	if err != nil {
		if resp != nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
			resp.Body.Close()
			return nil, fmt.Errorf("remote session refused (%s): %s", http.StatusText(resp.StatusCode), strings.TrimSpace(string(b)))
		}
		return nil, err
	}
	return &Conn{ws: ws}, nil
}

// CloseReason is the close reason the control plane sent, if the
// session ended with one.
type CloseReason struct {
	Code int
	Text string
}

func (e *CloseReason) Error() string {
	return fmt.Sprintf("session ended: %s (code %d)", e.Text, e.Code)
}

func (c *Conn) Read(p []byte) (int, error) {
	for {
		if c.rd == nil {
			typ, r, err := c.ws.NextReader()
			if err != nil {
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					if ce.Code == websocket.CloseNormalClosure {
						return 0, io.EOF
					}
					return 0, &CloseReason{Code: ce.Code, Text: ce.Text}
				}
				return 0, err
			}
			if typ != websocket.BinaryMessage {
				continue
			}
			c.rd = r
		}
		n, err := c.rd.Read(p)
		if errors.Is(err, io.EOF) {
			c.rd = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

func (c *Conn) Write(p []byte) (int, error) {
	c.wm.Lock()
	defer c.wm.Unlock()
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// HalfClose is the text message that tells the control plane the client
// has finished sending (TCP half-close); binary data may still arrive.
const HalfClose = "eof"

// CloseWrite signals the end of the client's data, like TCP's half-close:
// the control plane half-closes the connection to the target, which may
// still answer.
func (c *Conn) CloseWrite() error {
	c.wm.Lock()
	defer c.wm.Unlock()
	return c.ws.WriteMessage(websocket.TextMessage, []byte(HalfClose))
}

// Close sends a normal close frame and closes the connection.
func (c *Conn) Close() error {
	c.wm.Lock()
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	c.wm.Unlock()
	return c.ws.Close()
}

func (c *Conn) LocalAddr() net.Addr  { return c.ws.LocalAddr() }
func (c *Conn) RemoteAddr() net.Addr { return c.ws.RemoteAddr() }
func (c *Conn) SetDeadline(t time.Time) error {
	_ = c.ws.SetReadDeadline(t)
	return c.ws.SetWriteDeadline(t)
}
func (c *Conn) SetReadDeadline(t time.Time) error  { return c.ws.SetReadDeadline(t) }
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.ws.SetWriteDeadline(t) }
