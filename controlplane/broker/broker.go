// Package broker is the control plane's embedded MQTT broker (mochi-mqtt):
// TLS with required client certificates, one identity per device (the
// certificate's common name), and an ACL that lets a device publish only
// under gantry/v1/dev/{its ID}/{telemetry|state|events|cmdack} and
// subscribe only to its own cmd topic. The control plane itself uses the
// in-process (inline) client: Subscribe and Publish never touch the network.
package broker

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/gantry-iot/gantry/controlplane/pki"
	"github.com/gantry-iot/gantry/pkg/topics"
)

// Config configures a Broker.
type Config struct {
	// Listen is the TLS listen address, e.g. ":8883" or "127.0.0.1:0".
	Listen string
	// Certificate is the broker's TLS server certificate.
	Certificate tls.Certificate
	// ClientCAs verifies device certificates.
	ClientCAs *x509.CertPool
	// IsRevoked reports whether a device's certificate (serial as
	// pki.SerialString) is no longer valid, e.g. because the device was
	// re-enrolled or deleted. Nil: nothing is revoked.
	IsRevoked func(deviceID, serial string) bool
	// MaxPendingWrites bounds queued outbound packets per client. mochi's
	// default of 8192 reserves ~64 KB per client, which does not scale to
	// thousands of devices; 64 is plenty for commands. Default 64.
	MaxPendingWrites int32
	// OnConnect and OnDisconnect are called with the device ID when a device
	// session starts and ends (may be nil).
	OnConnect, OnDisconnect func(deviceID string)
}

// Stats counts broker decisions. Read with Snapshot.
type Stats struct {
	Connected     atomic.Int64
	AuthDenied    atomic.Int64
	PublishDenied atomic.Int64
	SubDenied     atomic.Int64
}

// Broker is a running embedded broker. Safe for concurrent use.
type Broker struct {
	srv   *mqtt.Server
	ln    *listeners.TCP
	addr  net.Addr
	log   *slog.Logger
	Stats Stats

	mu     sync.Mutex
	nextID int
}

// New builds a broker; call Start to listen.
func New(cfg Config, logger *slog.Logger) (*Broker, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ClientCAs == nil || len(cfg.Certificate.Certificate) == 0 {
		return nil, errors.New("broker.New: a server certificate and a client CA pool are required (devices authenticate with certificates)")
	}
	if cfg.MaxPendingWrites <= 0 {
		cfg.MaxPendingWrites = 64
	}
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumClientWritesPending = cfg.MaxPendingWrites
	caps.MaximumInflight = 1024
	caps.MaximumPacketSize = 1 << 20
	srv := mqtt.New(&mqtt.Options{InlineClient: true, Capabilities: caps, Logger: logger.With("component", "mqtt")})
	b := &Broker{srv: srv, log: logger}
	var err error
	if err = srv.AddHook(&authHook{b: b, cfg: cfg}, nil); err != nil {
		return nil, fmt.Errorf("broker.New: %w", err)
	}
	b.ln = listeners.NewTCP(listeners.Config{ID: "tls", Address: cfg.Listen, TLSConfig: &tls.Config{
		Certificates: []tls.Certificate{cfg.Certificate},
		ClientCAs:    cfg.ClientCAs,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS12,
	}})
	if err := srv.AddListener(b.ln); err != nil {
		return nil, fmt.Errorf("broker: listen on %s: %w (is another broker using the port? choose one with --mqtt-listen)", cfg.Listen, err)
	}
	b.addr, err = net.ResolveTCPAddr("tcp", b.ln.Address())
	if err != nil {
		return nil, err
	}
	return b, nil
}

// Start serves in the background.
func (b *Broker) Start() error { return b.srv.Serve() }

// Addr is the listening address.
func (b *Broker) Addr() net.Addr { return b.addr }

// Close stops the broker and disconnects every client.
func (b *Broker) Close() error { return b.srv.Close() }

// Subscribe registers an in-process handler for a topic filter.
func (b *Broker) Subscribe(filter string, handler func(topic string, payload []byte)) error {
	b.mu.Lock()
	b.nextID++
	id := b.nextID
	b.mu.Unlock()
	return b.srv.Subscribe(filter, id, func(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
		handler(pk.TopicName, pk.Payload)
	})
}

// Publish sends a message from the control plane.
func (b *Broker) Publish(topic string, payload []byte, retain bool, qos byte) error {
	return b.srv.Publish(topic, payload, retain, qos)
}

// authHook authenticates devices by certificate and enforces the ACL.
type authHook struct {
	mqtt.HookBase
	b   *Broker
	cfg Config
}

func (h *authHook) ID() string { return "gantry-device-auth" }

func (h *authHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnSessionEstablished, mqtt.OnDisconnect:
		return true
	}
	return false
}

// deviceID returns the verified certificate identity of a client.
func deviceID(cl *mqtt.Client) (string, *x509.Certificate) {
	tc, ok := cl.Net.Conn.(*tls.Conn)
	if !ok {
		return "", nil
	}
	st := tc.ConnectionState()
	if len(st.PeerCertificates) == 0 {
		return "", nil
	}
	c := st.PeerCertificates[0]
	return c.Subject.CommonName, c
}

func (h *authHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	id, cert := deviceID(cl)
	deny := func(reason string) bool {
		h.b.Stats.AuthDenied.Add(1)
		h.b.log.Warn("mqtt connection refused", "remote", cl.Net.Remote, "device", id, "reason", reason)
		return false
	}
	switch {
	case cert == nil:
		return deny("no client certificate")
	case !topics.ValidDeviceID(id):
		return deny("certificate common name is not a device ID")
	case h.cfg.IsRevoked != nil && h.cfg.IsRevoked(id, pki.SerialString(cert)):
		return deny("certificate revoked (the device was re-enrolled)")
	case string(cl.ID) != id:
		return deny(fmt.Sprintf("client ID %q must equal the device ID", cl.ID))
	case len(pk.Connect.Username) > 0 && string(pk.Connect.Username) != id:
		return deny("username must be empty or equal the device ID")
	}
	return true
}

func (h *authHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if cl.Net.Inline {
		return true
	}
	id, _ := deviceID(cl)
	dev, kind, err := topics.Parse(topic)
	ok := err == nil && dev == id
	if ok {
		if write {
			ok = kind == topics.Telemetry || kind == topics.State || kind == topics.Events || kind == topics.CmdAck
		} else {
			ok = kind == topics.Cmd
		}
	}
	if !ok {
		if write {
			h.b.Stats.PublishDenied.Add(1)
		} else {
			h.b.Stats.SubDenied.Add(1)
		}
		h.b.log.Debug("mqtt acl denied", "device", id, "topic", topic, "write", write)
	}
	return ok
}

func (h *authHook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	if cl.Net.Inline {
		return
	}
	h.b.Stats.Connected.Add(1)
	if h.cfg.OnConnect != nil {
		id, _ := deviceID(cl)
		h.cfg.OnConnect(id)
	}
}

func (h *authHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	if cl.Net.Inline {
		return
	}
	h.b.Stats.Connected.Add(-1)
	if h.cfg.OnDisconnect != nil {
		id, _ := deviceID(cl)
		h.cfg.OnDisconnect(id)
	}
}
