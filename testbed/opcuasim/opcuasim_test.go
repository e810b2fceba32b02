package opcuasim

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gopcua/opcua"
	"github.com/gopcua/opcua/ua"
)

func startSim(t *testing.T, cfg Config) *Sim {
	t.Helper()
	s, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Stop() })
	return s
}

func client(t *testing.T, endpoint string) *opcua.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := opcua.NewClient(endpoint, opcua.SecurityMode(ua.MessageSecurityModeNone), opcua.AutoReconnect(false))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Connect(ctx); err != nil {
		t.Fatalf("connect %s: %v", endpoint, err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func read(t *testing.T, c *opcua.Client, ids ...string) []*ua.DataValue {
	t.Helper()
	req := &ua.ReadRequest{TimestampsToReturn: ua.TimestampsToReturnBoth}
	for _, id := range ids {
		req.NodesToRead = append(req.NodesToRead, &ua.ReadValueID{NodeID: ua.MustParseNodeID(id), AttributeID: ua.AttributeIDValue})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.Read(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Results
}

func TestCNCProfileAndGenerated(t *testing.T) {
	s := startSim(t, Config{Profiles: []Profile{{Name: "cnc1", Kind: "cnc"}}, Generated: 1000, Interval: Duration(50 * time.Millisecond)})
	c := client(t, s.Endpoint())
	ns := s.Namespace()
	var ids []string
	for _, v := range cncVars {
		ids = append(ids, NodeID(ns, "cnc1", v))
	}
	res := read(t, c, ids...)
	for i, dv := range res {
		if dv.Status != ua.StatusOK {
			t.Fatalf("%s: status %v", ids[i], dv.Status)
		}
	}
	if sp, ok := res[0].Value.Value().(float64); !ok || sp < 0 || sp > 10000 {
		t.Errorf("SpindleSpeed = %v", res[0].Value.Value())
	}
	if temp, ok := res[1].Value.Value().(float64); !ok || temp < 29 || temp > 51 {
		t.Errorf("Temperature = %v", res[1].Value.Value())
	}
	if _, ok := res[2].Value.Value().(bool); !ok {
		t.Errorf("Running is %T", res[2].Value.Value())
	}
	if _, ok := res[4].Value.Value().(uint32); !ok {
		t.Errorf("AlarmWord is %T", res[4].Value.Value())
	}
	var gen []string
	for i := 0; i < 1000; i += 100 {
		gen = append(gen, GeneratedNodeID(ns, i))
	}
	for i, dv := range read(t, c, gen...) {
		if dv.Status != ua.StatusOK {
			t.Errorf("%s: %v", gen[i], dv.Status)
		}
	}
	// Unknown node: a per-node bad status, not a failure.
	if dv := read(t, c, "ns=2;s=cnc1.Nope")[0]; dv.Status == ua.StatusOK {
		t.Errorf("unknown node read OK")
	}
	// Produced counts the generated values set: 1,000 per update.
	p0 := s.Produced()
	time.Sleep(500 * time.Millisecond)
	p1 := s.Produced()
	if p0%1000 != 0 || p1%1000 != 0 || p1-p0 < 2000 || p1-p0 > 12000 {
		t.Errorf("Produced went from %d to %d in 500 ms of 50 ms updates of 1,000 nodes", p0, p1)
	}
}

func TestSubscriptionSeesChangesAndSet(t *testing.T) {
	s := startSim(t, Config{Profiles: []Profile{{Name: "cnc1", Kind: "cnc"}}, Interval: Duration(100 * time.Millisecond)})
	c := client(t, s.Endpoint())
	node := NodeID(s.Namespace(), "cnc1", "Temperature")
	// First attempt: the change made by Set while the item is monitored.
	n, err := awaitSubscribedValue(c, node, 99.5, 8*time.Second, func() error {
		time.Sleep(300 * time.Millisecond)
		return s.Set(node, 99.5)
	})
	if err == nil {
		return
	}
	// gopcua's server now and then leaves a fresh subscription silent (the
	// collector's watchdog exists for the same reason). A second
	// subscription must then see the pinned value in its first notification;
	// if it does not either, Set did not reach the server's notifications.
	t.Logf("first subscription: %v after %d notifications; subscribing again", err, n)
	if n, err := awaitSubscribedValue(c, node, 99.5, 8*time.Second, func() error { return nil }); err != nil {
		t.Fatalf("the value set with Set never arrived through a subscription: %v after %d notifications", err, n)
	}
}

// awaitSubscribedValue subscribes to node, calls act once the item is
// monitored and waits for a data change carrying want. It returns the number
// of data-change notifications seen.
func awaitSubscribedValue(c *opcua.Client, node string, want float64, timeout time.Duration, act func() error) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	ch := make(chan *opcua.PublishNotificationData, 64)
	sub, err := c.Subscribe(ctx, &opcua.SubscriptionParameters{Interval: 50 * time.Millisecond}, ch)
	if err != nil {
		return 0, fmt.Errorf("subscribe: %w", err)
	}
	defer sub.Cancel(context.Background())
	if _, err := sub.Monitor(ctx, ua.TimestampsToReturnBoth, opcua.NewMonitoredItemCreateRequestWithDefaults(ua.MustParseNodeID(node), ua.AttributeIDValue, 1)); err != nil {
		return 0, fmt.Errorf("monitor: %w", err)
	}
	if err := act(); err != nil {
		return 0, err
	}
	seen := 0
	for {
		select {
		case n := <-ch:
			if n.Error != nil {
				return seen, n.Error
			}
			if dc, ok := n.Value.(*ua.DataChangeNotification); ok {
				seen++
				for _, it := range dc.MonitoredItems {
					if v, _ := it.Value.Value.Value().(float64); v == want {
						return seen, nil
					}
				}
			}
		case <-ctx.Done():
			return seen, fmt.Errorf("no notification with %v within %v", want, timeout)
		}
	}
}

func TestStopStartSamePort(t *testing.T) {
	s := startSim(t, Config{Profiles: []Profile{{Name: "cnc1", Kind: "cnc"}}})
	ep := s.Endpoint()
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatalf("restart: %v", err)
	}
	if s.Endpoint() != ep {
		t.Errorf("endpoint moved from %s to %s", ep, s.Endpoint())
	}
	c := client(t, ep)
	if dv := read(t, c, NodeID(s.Namespace(), "cnc1", "Running"))[0]; dv.Status != ua.StatusOK {
		t.Errorf("after restart: %v", dv.Status)
	}
}

func TestConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		doc, want string
	}{
		{`{"profiles":[{"name":"x","kind":"lathe"}]}`, "knows \"cnc\""},
		{`{"profiles":[{"name":"a","kind":"cnc"},{"name":"a","kind":"cnc"}]}`, "used twice"},
		{`{"interval":"1ms"}`, "below 10ms"},
		{`{"interval":"soon"}`, "duration"},
		{`{"port":70000}`, "outside 0..65535"},
		{`{"username":"op"}`, "node-opcua"},
		{`{"colour":"red"}`, "unknown field"},
	} {
		if _, err := ParseConfig([]byte(tc.doc)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error mentioning %q", tc.doc, err, tc.want)
		}
	}
	if _, err := ParseConfig([]byte(`{"profiles":[{"name":"cnc1","kind":"cnc"}],"generated":10,"interval":"100ms"}`)); err != nil {
		t.Errorf("good config: %v", err)
	}
}

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`{"profiles":[{"name":"cnc1","kind":"cnc"}],"generated":10,"interval":"100ms"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseConfig(b)
		if err == nil && (c.Generated < 0 || time.Duration(c.Interval) < 10*time.Millisecond) {
			t.Fatalf("accepted %+v", c)
		}
	})
}
