// Package collector reads machine data from an OPC-UA server with gopcua:
// it subscribes to the data points of the machine model's OPC-UA
// template, spreads them over subscriptions of at most 1,000 items created
// in batches (gopcua's server drops oversized publish responses and cannot
// create 10k items in one call), applies deadbands on the client, batches
// values for the sink, and reconnects with backoff — recreating its
// subscriptions — when the connection or a subscription goes silent.
package collector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/id"
	"github.com/gopcua/opcua/ua"

	"github.com/gantry-iot/gantry/pkg/machinemodel"
)

// Sample is one collected value.
type Sample struct {
	Point  string
	Value  float64
	Status uint32
	At     time.Time
}

// Limits.
const (
	MaxItemsPerSubscription = 1000
	CreateBatch             = 500
)

// SecurityPolicies are the policies a secured endpoint may use.
var SecurityPolicies = []string{"Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"}

// Options tune a Collector.
type Options struct {
	FlushInterval time.Duration // batch window, default 250ms; negative: no window, each notification's samples are sent at once
	MaxBatch      int           // samples per batch, default 5000
	Watchdog      time.Duration // reconnect when nothing arrives this long, default 30s
	MaxBackoff    time.Duration // default 30s
	// ItemsPerSession spreads a large template over several sessions
	// to the same endpoint, default DefaultItemsPerSession.
	ItemsPerSession int
	Logger          *slog.Logger
	Security        Security // secured endpoints and user login
}

// PointStatus is the last known state of a data point.
type PointStatus struct {
	Point  string `json:"point"`
	NodeID string `json:"node_id"`
	Status string `json:"status"` // "ok", or why the point yields no data
}

// Collector runs one OPC-UA session. Create with New, then Run.
type Collector struct {
	tpl  machinemodel.OPCUA
	sink func([]Sample)
	opts Options
	log  *slog.Logger

	// Collected counts the values received from the server (every
	// monitored-item notification with a value, before the deadband).
	Collected atomic.Int64

	mu     sync.Mutex
	points []pointState // per data point, in template order (client handle - 1)
	state  string
}

// pointState is what the collector keeps per data point.
type pointState struct {
	status string // "" until the first value
	last   float64
	seen   bool // last is set (cleared when the session is lost)
}

const statusOK = "ok"

// New validates the template and returns a Collector. sink receives the
// batches of samples; it must not keep the slice after it returns (the
// collector reuses it).
func New(tpl machinemodel.OPCUA, sink func([]Sample), opts Options) (*Collector, error) {
	if ps := tpl.Validate(); len(ps) > 0 {
		return nil, fmt.Errorf("collector: %w", ps.Err())
	}
	if tpl.SecurityMode != "None" {
		if opts.Security.Identity == nil {
			return nil, fmt.Errorf("collector: security mode %s needs the agent's client certificate (Security.Identity)", tpl.SecurityMode)
		}
		if opts.Security.Policy == "" {
			opts.Security.Policy = "Basic256Sha256"
		}
		if !slices.Contains(SecurityPolicies, opts.Security.Policy) {
			return nil, fmt.Errorf("collector: security policy %q: want one of %s", opts.Security.Policy, strings.Join(SecurityPolicies, ", "))
		}
	}
	if opts.Security.UserCert != nil {
		if tpl.SecurityMode == "None" {
			return nil, errors.New("collector: certificate user login needs security mode Sign or SignAndEncrypt (the user token is signed with the server's certificate and nonce); set the endpoint's security_mode")
		}
		if opts.Security.Username != "" {
			return nil, errors.New("collector: both a username and a user certificate are configured; choose one auth type")
		}
	}
	if opts.FlushInterval == 0 {
		opts.FlushInterval = 250 * time.Millisecond
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 5000
	}
	if opts.Watchdog <= 0 {
		opts.Watchdog = 30 * time.Second
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 30 * time.Second
	}
	if opts.ItemsPerSession <= 0 {
		opts.ItemsPerSession = DefaultItemsPerSession
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Collector{tpl: tpl, sink: sink, opts: opts, log: opts.Logger, points: make([]pointState, len(tpl.DataPoints)), state: "starting"}, nil
}

// Endpoint is the OPC-UA server's URL.
func (c *Collector) Endpoint() string { return c.tpl.EndpointURL }

// State describes the connection ("connected", or the last error).
func (c *Collector) State() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// Statuses reports every data point's state.
func (c *Collector) Statuses() []PointStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]PointStatus, 0, len(c.tpl.DataPoints))
	for i, d := range c.tpl.DataPoints {
		st := c.points[i].status
		if st == "" {
			st = "no data yet"
		}
		out = append(out, PointStatus{Point: d.Name, NodeID: d.NodeID, Status: st})
	}
	return out
}

func (c *Collector) setState(s string) {
	c.mu.Lock()
	c.state = s
	c.mu.Unlock()
}

// Run collects until ctx ends, reconnecting with backoff.
func (c *Collector) Run(ctx context.Context) error {
	backoff := time.Second
	for {
		err := c.session(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c.setState(err.Error())
		c.log.Warn("opc-ua session ended; reconnecting", "endpoint", c.tpl.EndpointURL, "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		if backoff *= 2; backoff > c.opts.MaxBackoff {
			backoff = c.opts.MaxBackoff
		}
	}
}

// DefaultItemsPerSession is how many data points one OPC-UA session
// serves before the collector opens another to the same endpoint. gopcua's
// client keeps one PublishRequest outstanding per session, and a server
// may keep only the newest value of an item until the next one arrives,
// so with ten subscriptions on one session values changing every 100 ms
// were overwritten before they were sent (10,000 nodes: 91–94 % received;
// docs/benchmarks.md). Templates up to this size use one session, as
// before; a PLC's session limit is rarely below four.
const DefaultItemsPerSession = 2500

// connect opens one session to the endpoint.
func (c *Collector) connect(ctx context.Context) (*opcua.Client, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	opts, err := c.clientOptions(cctx)
	if err != nil {
		return nil, c.explain(err)
	}
	cl, err := opcua.NewClient(c.tpl.EndpointURL, opts...)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if err := cl.Connect(cctx); err != nil {
		return nil, c.explain(fmt.Errorf("connect %s: %w", c.tpl.EndpointURL, err))
	}
	return cl, nil
}

// session connects, subscribes and forwards until an error. The data
// points are spread over sessions of at most ItemsPerSession points;
// any session's failure ends them all.
func (c *Collector) session(ctx context.Context) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	notify := make(chan *opcua.PublishNotificationData, 256)
	var clients []*opcua.Client
	var subs []*opcua.Subscription
	defer func() {
		// Best effort: on a dead connection these would wait for timeouts.
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		for _, s := range subs {
			_ = s.Cancel(cctx)
		}
		for _, cl := range clients {
			_ = cl.Close(cctx)
		}
	}()
	// Watchdog probes run in their own goroutines (Monitor blocks); they
	// end with sctx, before the subscriptions are cancelled.
	var probes sync.WaitGroup
	defer func() { cancel(); probes.Wait() }()
	pts := c.tpl.DataPoints
	var cl *opcua.Client
	for start, end := 0, 0; start < len(pts) || cl == nil; start = end {
		if cl == nil || start%c.opts.ItemsPerSession == 0 {
			var err error
			if cl, err = c.connect(sctx); err != nil {
				return err
			}
			clients = append(clients, cl)
		}
		if start >= len(pts) {
			break
		}
		end = min(start+MaxItemsPerSubscription, len(pts))
		if next := (start/c.opts.ItemsPerSession + 1) * c.opts.ItemsPerSession; end > next {
			end = next // a subscription never spans two sessions
		}
		chunk := pts[start:end]
		interval := PublishingInterval(time.Duration(minInterval(chunk)) * time.Millisecond)
		// Create the subscription, then its items in batches.
		sub, err := cl.Subscribe(sctx, &opcua.SubscriptionParameters{Interval: interval}, notify)
		if err != nil {
			return fmt.Errorf("subscribe: %w", err)
		}
		subs = append(subs, sub)
		for b := 0; b < len(chunk); b += CreateBatch {
			batch := chunk[b:min(b+CreateBatch, len(chunk))]
			var reqs []*ua.MonitoredItemCreateRequest
			for i, d := range batch {
				h := uint32(start + b + i + 1) // point index + 1
				id, _ := ua.ParseNodeID(d.NodeID)
				req := opcua.NewMonitoredItemCreateRequestWithDefaults(id, ua.AttributeIDValue, h)
				if d.SamplingIntervalMS > 0 {
					req.RequestedParameters.SamplingInterval = float64(d.SamplingIntervalMS)
				}
				reqs = append(reqs, req)
			}
			res, err := sub.Monitor(sctx, ua.TimestampsToReturnBoth, reqs...)
			if err != nil {
				return fmt.Errorf("create monitored items: %w", err)
			}
			for i, r := range res.Results {
				if r.StatusCode != ua.StatusOK {
					c.pointStatus(start+b+i, fmt.Sprintf("refused by the server: %v", r.StatusCode))
					c.log.Warn("data point refused", "point", batch[i].Name, "node", batch[i].NodeID, "status", r.StatusCode)
				}
			}
		}
	}
	c.setState("connected")
	c.log.Info("opc-ua collecting", "endpoint", c.tpl.EndpointURL, "points", len(pts), "subscriptions", len(subs), "sessions", len(clients))

	pending := make([]Sample, 0, c.opts.MaxBatch)
	// The ticker also drives the watchdog, so it runs without a batch
	// window too.
	immediate := c.opts.FlushInterval < 0
	tick := c.opts.FlushInterval
	if immediate {
		tick = 250 * time.Millisecond
	}
	flush := time.NewTicker(tick)
	defer flush.Stop()
	w := newWatchdog(subs, c.opts.Watchdog)
	probeDone := make(chan probeResult, len(subs))
	fail := func(err error) error {
		c.emit(pending)
		c.lost()
		c.setState(err.Error())
		return err
	}
	for {
		select {
		case <-ctx.Done():
			c.emit(pending)
			return ctx.Err()
		case n := <-notify:
			if n.Error != nil {
				return fail(fmt.Errorf("subscription: %w", n.Error))
			}
			if sub, item := w.heard(n.SubscriptionID, time.Now()); item != 0 {
				probes.Go(func() { unmonitor(sctx, sub, item) })
			}
			dc, ok := n.Value.(*ua.DataChangeNotification)
			if !ok {
				continue
			}
			c.Collected.Add(int64(len(dc.MonitoredItems)))
			pending = c.samples(dc.MonitoredItems, pending)
			// Full batches go now (at most MaxBatch samples each); without a
			// batch window the rest goes too.
			for len(pending) > 0 && (immediate || len(pending) >= c.opts.MaxBatch) {
				n := min(len(pending), c.opts.MaxBatch)
				c.emit(pending[:n])
				pending = pending[:copy(pending, pending[n:])]
			}
		case r := <-probeDone:
			if r.err != nil {
				return fail(fmt.Errorf("watchdog: subscription %d does not answer: %w", r.sub.SubscriptionID, r.err))
			}
			if item := w.probing(r.sub.SubscriptionID, r.item); item != 0 {
				probes.Go(func() { unmonitor(sctx, r.sub, item) })
			}
		case <-flush.C:
			if len(pending) > 0 {
				c.emit(pending)
				pending = pending[:0]
			}
			now := time.Now()
			if id, dead := w.dead(now); dead {
				return fail(fmt.Errorf("watchdog: subscription %d silent for %v, and its probe item's first value did not arrive", id, c.opts.Watchdog))
			}
			for _, sub := range w.quiet(now) {
				probes.Go(func() {
					// Not buffered for every case (a subscription heard from
					// can be probed again before its first probe returns):
					// after the session, nobody reads.
					select {
					case probeDone <- probe(sctx, sub, c.opts.Watchdog):
					case <-sctx.Done():
					}
				})
			}
		}
	}
}

// A subscription whose values do not change sends nothing but keep-alives,
// which gopcua's client does not pass on; a subscription that the server
// dropped (gopcua's server does so silently) or a hung server sends
// nothing either. So the watchdog probes a subscription it has not heard
// from for a watchdog period: it adds a monitored item for the server's
// CurrentTime, which every server has and whose first value a server must
// send, and removes the item once anything arrives on the subscription. A
// probe the server refuses or does not answer, or whose value does not
// arrive within another period, ends the session (and reconnects).

// probeNode is Server_ServerStatus_CurrentTime (Part 5, mandatory).
var probeNode = ua.NewNumericNodeID(0, id.Server_ServerStatus_CurrentTime)

// probeHandle is the client handle of probe items, above every data
// point's (point index + 1).
const probeHandle = 1 << 31

type probeResult struct {
	sub  *opcua.Subscription
	item uint32 // the probe's monitored item ID
	err  error
}

// probe adds the probe item to sub.
func probe(ctx context.Context, sub *opcua.Subscription, timeout time.Duration) probeResult {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res, err := sub.Monitor(ctx, ua.TimestampsToReturnBoth, opcua.NewMonitoredItemCreateRequestWithDefaults(probeNode, ua.AttributeIDValue, probeHandle))
	switch {
	case err != nil:
		return probeResult{sub: sub, err: err}
	case len(res.Results) != 1:
		return probeResult{sub: sub, err: fmt.Errorf("%d results for one probe item", len(res.Results))}
	case res.Results[0].StatusCode != ua.StatusOK:
		return probeResult{sub: sub, err: res.Results[0].StatusCode}
	}
	return probeResult{sub: sub, item: res.Results[0].MonitoredItemID}
}

// unmonitor removes a probe item, best effort: a failure leaves one
// CurrentTime item on the subscription until the session ends.
func unmonitor(ctx context.Context, sub *opcua.Subscription, item uint32) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, _ = sub.Unmonitor(ctx, item)
}

// watchdog keeps, per subscription, when it last delivered and its probe.
type watchdog struct {
	period time.Duration
	subs   map[uint32]*watched
}

type watched struct {
	sub     *opcua.Subscription
	last    time.Time // last notification, or creation
	probeAt time.Time // probe sent and not yet answered; zero: none
	probeID uint32    // the probe item to remove once answered
}

func newWatchdog(subs []*opcua.Subscription, period time.Duration) *watchdog {
	w := &watchdog{period: period, subs: make(map[uint32]*watched, len(subs))}
	now := time.Now()
	for _, s := range subs {
		w.subs[s.SubscriptionID] = &watched{sub: s, last: now}
	}
	return w
}

// heard records a notification on subscription id: a pending probe is
// answered. It returns the probe item to remove, if it exists yet.
func (w *watchdog) heard(id uint32, now time.Time) (*opcua.Subscription, uint32) {
	s, ok := w.subs[id]
	if !ok {
		return nil, 0
	}
	s.last, s.probeAt = now, time.Time{}
	item := s.probeID
	s.probeID = 0
	return s.sub, item
}

// probing records the probe item created on subscription id and returns
// it when it is to be removed at once (the subscription was heard from
// before the item's creation returned).
func (w *watchdog) probing(id, item uint32) uint32 {
	s, ok := w.subs[id]
	if !ok || s.probeAt.IsZero() {
		return item
	}
	s.probeID = item
	return 0
}

// quiet returns the subscriptions silent for a period without a probe
// and marks them probed.
func (w *watchdog) quiet(now time.Time) []*opcua.Subscription {
	var out []*opcua.Subscription
	for _, s := range w.subs {
		if s.probeAt.IsZero() && now.Sub(s.last) > w.period {
			s.probeAt = now
			out = append(out, s.sub)
		}
	}
	return out
}

// dead reports a subscription whose probe went unanswered for a period.
func (w *watchdog) dead(now time.Time) (uint32, bool) {
	for id, s := range w.subs {
		if !s.probeAt.IsZero() && now.Sub(s.probeAt) > w.period {
			return id, true
		}
	}
	return 0, false
}

// StatusLost is the status of the samples the collector emits for every
// data point when its session fails (subscription error or watchdog):
// OPC-UA's Bad_NoCommunication (ua.StatusBadNoCommunication). Consumers treat the held values as
// unknown from then on (the edge rules stop counting running time).
const StatusLost uint32 = 0x80310000

// lost emits a StatusLost sample for every data point and forgets the
// last values, so the first value after the reconnect passes the
// deadband.
func (c *Collector) lost() {
	now := time.Now()
	out := make([]Sample, 0, len(c.tpl.DataPoints))
	for _, d := range c.tpl.DataPoints {
		out = append(out, Sample{Point: d.Name, Status: StatusLost, At: now})
	}
	c.mu.Lock()
	for i := range c.points {
		c.points[i].seen = false
	}
	c.mu.Unlock()
	c.emit(out)
}

func (c *Collector) emit(s []Sample) {
	if len(s) > 0 {
		c.sink(s)
	}
}

// PublishingInterval is the publishing interval the collector asks for on a
// subscription whose fastest data point is sampled every sampling: half of
// it, at least 25 ms. A server that keeps only one value per monitored item
// between two publish responses (gopcua's does, whatever queue size is
// requested) replaces a change that arrives before the item's previous
// value was published; at a publishing interval equal to the sampling
// interval every late PublishRequest or ticker jitter loses a value, at
// half of it a publish may be one interval late without loss. Servers that
// honour the requested queue size (10) lose nothing either way; they send
// smaller, more frequent responses.
func PublishingInterval(sampling time.Duration) time.Duration {
	return max(sampling/2, 25*time.Millisecond)
}

func minInterval(ds []machinemodel.DataPoint) uint32 {
	m := uint32(1000)
	for _, d := range ds {
		if d.SamplingIntervalMS > 0 && d.SamplingIntervalMS < m {
			m = d.SamplingIntervalMS
		}
	}
	return max(m, 50)
}

func (c *Collector) pointStatus(i int, status string) {
	c.mu.Lock()
	c.points[i].status = status
	c.mu.Unlock()
}

// samples converts the items of one data change notification, applies
// the deadbands and appends what passes to out, taking the lock once.
func (c *Collector) samples(items []*ua.MonitoredItemNotification, out []Sample) []Sample {
	pts := c.tpl.DataPoints
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, it := range items {
		i := int(it.ClientHandle) - 1
		if i < 0 || i >= len(pts) || it.Value == nil {
			continue
		}
		if s, keep := c.sampleLocked(i, it.Value); keep {
			out = append(out, s)
		}
	}
	return out
}

// sampleLocked converts point i's value and applies its deadband (client
// side: gopcua's server ignores deadband filters). Called with mu held.
func (c *Collector) sampleLocked(i int, dv *ua.DataValue) (Sample, bool) {
	d, p := &c.tpl.DataPoints[i], &c.points[i]
	s := Sample{Point: d.Name, Status: uint32(dv.Status), At: dv.SourceTimestamp}
	if s.At.IsZero() {
		s.At = time.Now()
	}
	if dv.Status != ua.StatusOK {
		p.status = fmt.Sprintf("bad value: %v", dv.Status)
		return s, true
	}
	v, err := toFloat(dv.Value)
	if err != nil {
		p.status = err.Error()
		return s, false
	}
	s.Value = v
	p.status = statusOK
	if p.seen {
		delta := math.Abs(v - p.last)
		switch d.DeadbandType {
		case "absolute":
			if delta < d.DeadbandValue {
				return s, false
			}
		case "percent":
			if p.last != 0 && delta/math.Abs(p.last)*100 < d.DeadbandValue {
				return s, false
			}
		}
	}
	p.last, p.seen = v, true
	return s, true
}

func toFloat(v *ua.Variant) (float64, error) {
	if v == nil {
		return 0, errors.New("empty value")
	}
	switch x := v.Value().(type) {
	case float64:
		return x, nil
	case float32:
		return float64(x), nil
	case bool:
		if x {
			return 1, nil
		}
		return 0, nil
	case int8:
		return float64(x), nil
	case int16:
		return float64(x), nil
	case int32:
		return float64(x), nil
	case int64:
		return float64(x), nil
	case uint8:
		return float64(x), nil
	case uint16:
		return float64(x), nil
	case uint32:
		return float64(x), nil
	case uint64:
		return float64(x), nil
	}
	return 0, fmt.Errorf("value of type %T is not numeric", v.Value())
}
