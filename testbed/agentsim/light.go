package agentsim

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gantry-iot/gantry/pkg/topics"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
)

// conn is an agent's MQTT session as the simulation uses it: the real
// agent's link (agent/link, paho) or the light client below.
type conn interface {
	Publish(ctx context.Context, k topics.Kind, payload []byte) error
	Connected() bool
	Close() error
}

// lightConn is a small MQTT 3.1.1 client for load generation: one mTLS
// connection, the device's command subscription, QoS 1 publishes that
// wait for their PUBACK, the same will and online/offline states as the
// agent; packets encoded and decoded with mochi's codec. It runs one
// reader goroutine per agent (paho runs about ten and 34–58 KB), sends no
// pings (keepalive 0: the simulated agents publish every second) and does
// not reconnect: a lost connection fails its publishes. Reconnect
// behaviour is measured with the real link (TestReconnectLoad).
type lightConn struct {
	device, version string
	nc              net.Conn
	onCommand       func([]byte)

	wmu sync.Mutex // one packet written at a time

	mu      sync.Mutex
	nextID  uint16
	waiting map[uint16]chan error // PUBACK waiters by packet ID
	err     error                 // why the connection ended; nil while up
	done    chan struct{}         // closed when the reader ends
}

// dialLight connects like the agent's link does: CONNECT with a retained
// "offline" will, SUBSCRIBE to the device's commands, then a retained
// "online" state.
func dialLight(ctx context.Context, deviceID, brokerURL, version string, tc *tls.Config, onCommand func([]byte)) (*lightConn, error) {
	u, err := url.Parse(brokerURL)
	if err != nil || u.Scheme != "tls" || u.Host == "" {
		return nil, fmt.Errorf("agentsim: broker URL %q: want tls://host:port", brokerURL)
	}
	d := tls.Dialer{Config: tc}
	nc, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil, fmt.Errorf("agentsim: connect %s: %w", u.Host, err)
	}
	c := &lightConn{device: deviceID, version: version, nc: nc, onCommand: onCommand, waiting: map[uint16]chan error{}, done: make(chan struct{})}
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	stateTopic := topics.Device(deviceID, topics.State)
	connect := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 4,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, ClientIdentifier: deviceID,
			WillFlag: true, WillTopic: stateTopic, WillPayload: statePayload(false, version), WillQos: 1, WillRetain: true}}
	br := bufio.NewReaderSize(nc, 512)
	if err := c.write(&connect); err != nil {
		nc.Close()
		return nil, err
	}
	ack, err := readPacket(br)
	if err != nil || ack.FixedHeader.Type != packets.Connack {
		nc.Close()
		return nil, fmt.Errorf("agentsim: no CONNACK: %v (type %d)", err, ack.FixedHeader.Type)
	}
	if ack.ReasonCode != 0 {
		nc.Close()
		return nil, fmt.Errorf("agentsim: CONNECT refused with code %d", ack.ReasonCode)
	}
	sub := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, ProtocolVersion: 4, PacketID: 1,
		Filters: packets.Subscriptions{{Filter: topics.Device(deviceID, topics.Cmd), Qos: 1}}}
	if err := c.write(&sub); err != nil {
		nc.Close()
		return nil, err
	}
	suback, err := readPacket(br)
	if err != nil || suback.FixedHeader.Type != packets.Suback || len(suback.ReasonCodes) != 1 || suback.ReasonCodes[0] > 2 {
		nc.Close()
		return nil, fmt.Errorf("agentsim: command subscription not granted: %v %v", err, suback.ReasonCodes)
	}
	_ = nc.SetDeadline(time.Time{})
	c.nextID = 1
	go c.read(br)
	if err := c.publish(ctx, stateTopic, statePayload(true, version), true); err != nil {
		c.nc.Close()
		return nil, err
	}
	return c, nil
}

// readPacket reads one packet (the codec decodes only the body).
func readPacket(br *bufio.Reader) (packets.Packet, error) {
	var pk packets.Packet
	pk.ProtocolVersion = 4
	hb, err := br.ReadByte()
	if err != nil {
		return pk, err
	}
	if err := pk.FixedHeader.Decode(hb); err != nil {
		return pk, err
	}
	n, _, err := packets.DecodeLength(br)
	if err != nil {
		return pk, err
	}
	pk.FixedHeader.Remaining = n
	body := make([]byte, n)
	if _, err := io.ReadFull(br, body); err != nil {
		return pk, err
	}
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(body)
	case packets.Suback:
		err = pk.SubackDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	case packets.Pingresp, packets.Disconnect:
	default:
		err = fmt.Errorf("unexpected packet type %d", pk.FixedHeader.Type)
	}
	return pk, err
}

func (c *lightConn) write(pk *packets.Packet) error {
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	case packets.Subscribe:
		err = pk.SubscribeEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Puback:
		err = pk.PubackEncode(&buf)
	case packets.Disconnect:
		err = pk.DisconnectEncode(&buf)
	default:
		err = fmt.Errorf("agentsim: no encoder for packet type %d", pk.FixedHeader.Type)
	}
	if err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err = c.nc.Write(buf.Bytes())
	return err
}

// read handles PUBACKs and commands until the connection ends.
func (c *lightConn) read(br *bufio.Reader) {
	defer close(c.done)
	for {
		pk, err := readPacket(br)
		if err != nil {
			c.end(err)
			return
		}
		switch pk.FixedHeader.Type {
		case packets.Puback:
			c.mu.Lock()
			ch := c.waiting[pk.PacketID]
			delete(c.waiting, pk.PacketID)
			c.mu.Unlock()
			if ch != nil {
				ch <- nil
			}
		case packets.Publish:
			if pk.FixedHeader.Qos > 0 {
				ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, ProtocolVersion: 4, PacketID: pk.PacketID}
				if err := c.write(&ack); err != nil {
					c.end(err)
					return
				}
			}
			if c.onCommand != nil {
				go c.onCommand(pk.Payload) // it publishes its ack: not on the reader
			}
		}
	}
}

// end records why the connection ended and fails the waiting publishes.
func (c *lightConn) end(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	waiting := c.waiting
	c.waiting = map[uint16]chan error{}
	c.mu.Unlock()
	for _, ch := range waiting {
		ch <- fmt.Errorf("agentsim: connection lost: %w", err)
	}
	c.nc.Close()
}

func (c *lightConn) publish(ctx context.Context, topic string, payload []byte, retain bool) error {
	ch := make(chan error, 1)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return fmt.Errorf("agentsim: connection lost: %w", err)
	}
	id := c.nextID
	for c.waiting[id] != nil || id == 0 {
		id++
	}
	c.nextID = id + 1
	c.waiting[id] = ch
	c.mu.Unlock()
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1, Retain: retain}, ProtocolVersion: 4,
		TopicName: topic, PacketID: id, Payload: payload}
	if err := c.write(&pk); err != nil {
		c.end(err)
		return err
	}
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.waiting, id)
		c.mu.Unlock()
		return ctx.Err()
	}
}

// Publish sends payload on the device's topic of kind k at QoS 1 and
// waits for the PUBACK.
func (c *lightConn) Publish(ctx context.Context, k topics.Kind, payload []byte) error {
	return c.publish(ctx, topics.Device(c.device, k), payload, false)
}

// Connected reports whether the connection is up.
func (c *lightConn) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err == nil
}

// Close publishes the offline state and disconnects, like the agent.
func (c *lightConn) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	perr := c.publish(ctx, topics.Device(c.device, topics.State), statePayload(false, c.version), true)
	_ = c.write(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}, ProtocolVersion: 4})
	c.end(errors.New("closed"))
	<-c.done
	return perr
}

// statePayload is the agent's retained state message (agent/link).
func statePayload(online bool, version string) []byte {
	b, _ := proto.Marshal(&gantryv1.DeviceState{Online: online, AgentVersion: version, At: timestamppb.Now()})
	return b
}
