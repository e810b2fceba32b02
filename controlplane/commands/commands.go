// Package commands sends signed commands to edge devices over MQTT and
// waits for their acknowledgements.
package commands

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/gantry-iot/gantry/pkg/command"
	"github.com/gantry-iot/gantry/pkg/topics"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
)

// Broker is the messaging the dispatcher needs (the embedded broker's
// inline client, or an external-broker client).
type Broker interface {
	Subscribe(filter string, handler func(topic string, payload []byte)) error
	Publish(topic string, payload []byte, retain bool, qos byte) error
}

// ErrNoAck is returned when the device does not acknowledge in time.
var ErrNoAck = errors.New("the device did not acknowledge the command in time (is it online?)")

type pending struct {
	device string
	ch     chan *gantryv1.CommandAck
}

// Dispatcher signs, sends and tracks commands. Safe for concurrent use.
type Dispatcher struct {
	b   Broker
	key ed25519.PrivateKey
	log *slog.Logger

	mu      sync.Mutex
	pending map[string]pending
}

// New subscribes to acknowledgements and returns a Dispatcher.
func New(b Broker, key ed25519.PrivateKey, logger *slog.Logger) (*Dispatcher, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	d := &Dispatcher{b: b, key: key, log: logger, pending: map[string]pending{}}
	if err := b.Subscribe(topics.Wildcard(topics.CmdAck), d.onAck); err != nil {
		return nil, fmt.Errorf("commands: subscribe acks: %w", err)
	}
	return d, nil
}

func (d *Dispatcher) onAck(topic string, payload []byte) {
	dev, _, err := topics.Parse(topic)
	if err != nil {
		return
	}
	var ack gantryv1.CommandAck
	if err := proto.Unmarshal(payload, &ack); err != nil {
		d.log.Warn("malformed command ack", "device", dev, "err", err)
		return
	}
	d.mu.Lock()
	p, ok := d.pending[ack.Nonce]
	if ok && p.device == dev {
		delete(d.pending, ack.Nonce)
	}
	d.mu.Unlock()
	if !ok || p.device != dev {
		d.log.Debug("ack for no pending command", "device", dev, "nonce", ack.Nonce)
		return
	}
	p.ch <- &ack
}

// Send signs c's body for deviceID, publishes it and waits for the ack
// until ctx ends or the command expires.
func (d *Dispatcher) Send(ctx context.Context, deviceID string, c *gantryv1.Command, ttl time.Duration) (*gantryv1.CommandAck, error) {
	full := command.New(deviceID, ttl, time.Now())
	full.Body = c.Body
	payload, err := command.Sign(d.key, full)
	if err != nil {
		return nil, err
	}
	ch := make(chan *gantryv1.CommandAck, 1)
	d.mu.Lock()
	d.pending[full.Nonce] = pending{device: deviceID, ch: ch}
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		delete(d.pending, full.Nonce)
		d.mu.Unlock()
	}()
	if err := d.b.Publish(topics.Device(deviceID, topics.Cmd), payload, false, 1); err != nil {
		return nil, fmt.Errorf("commands: publish: %w", err)
	}
	timer := time.NewTimer(ttl)
	defer timer.Stop()
	select {
	case ack := <-ch:
		return ack, nil
	case <-timer.C:
		return nil, ErrNoAck
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
