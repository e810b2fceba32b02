// Package notify ingests the agents' edge-rule events (gantry/v1/dev/{id}/
// events, SPEC §5) into notifications for the operator tenant of the asset
// the device's machine is linked to, and — when the machine model's data
// point has open_case_on_alarm — opens an internal service case on the
// asset for an alarm (only if that tenant has Operator Internal Service;
// at most one open automatic case per asset and point).
//
// Delivery is at least once: an event received again (same device, point,
// level and time) is recorded once and opens no second case.
package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/gantry-iot/gantry/controlplane/authz"
	"github.com/gantry-iot/gantry/controlplane/store"
	"github.com/gantry-iot/gantry/pkg/machinemodel"
	"github.com/gantry-iot/gantry/pkg/topics"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
)

// Store is the persistence ingest needs.
type Store interface {
	GetDevice(ctx context.Context, id string) (store.EdgeDevice, error)
	GetCustomerMachine(ctx context.Context, id string) (store.CustomerMachine, error)
	GetAsset(ctx context.Context, id string) (store.Asset, error)
	GetTenant(ctx context.Context, id string) (store.Tenant, error)
	GetMachineModel(ctx context.Context, id string) (store.MachineModel, error)
	CreateCase(ctx context.Context, c store.Case) (store.Case, error)
	AddNotification(ctx context.Context, n store.Notification) (store.Notification, bool, error)
	SetNotificationCase(ctx context.Context, id, caseID string) error
	OpenAutoCase(ctx context.Context, assetID, point, closedState string) (string, error)
}

// Limits on one event batch.
const (
	MaxEvents   = 1000
	MaxPointLen = 200
)

// CaseCreator is the CreatedBy of automatic cases.
const CaseCreator = "system:edge-rules"

// Ingest handles event messages. Safe for concurrent use; automatic case
// creation is serialized (one control-plane process).
type Ingest struct {
	st  Store
	log *slog.Logger
	now func() time.Time

	events, duplicates, rejected, unlinked, cases prometheus.Counter

	caseMu sync.Mutex // check-then-create of automatic cases
}

// New returns an Ingest registering its metrics on reg (may be nil).
func New(st Store, reg prometheus.Registerer, logger *slog.Logger) *Ingest {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	i := &Ingest{st: st, log: logger, now: time.Now,
		events:     prometheus.NewCounter(prometheus.CounterOpts{Name: "gantry_events_total", Help: "Edge-rule events recorded as notifications."}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{Name: "gantry_events_duplicates_total", Help: "Edge-rule events received again (agent redelivery)."}),
		rejected:   prometheus.NewCounter(prometheus.CounterOpts{Name: "gantry_events_rejected_total", Help: "Malformed edge-rule event messages or events."}),
		unlinked:   prometheus.NewCounter(prometheus.CounterOpts{Name: "gantry_events_unlinked_total", Help: "Edge-rule events of devices not linked to an asset (dropped)."}),
		cases:      prometheus.NewCounter(prometheus.CounterOpts{Name: "gantry_events_cases_opened_total", Help: "Internal service cases opened automatically by alarms."}),
	}
	if reg != nil {
		reg.MustRegister(i.events, i.duplicates, i.rejected, i.unlinked, i.cases)
	}
	return i
}

// Handle ingests one message from gantry/v1/dev/{id}/events. The broker's
// ACL guarantees the topic's device is the publisher.
func (i *Ingest) Handle(topic string, payload []byte) {
	dev, kind, err := topics.Parse(topic)
	if err != nil || kind != topics.Events {
		i.rejected.Inc()
		return
	}
	var b gantryv1.EventBatch
	if err := proto.Unmarshal(payload, &b); err != nil || len(b.Events) > MaxEvents {
		i.rejected.Inc()
		i.log.Warn("malformed events", "device", dev, "bytes", len(payload), "err", err)
		return
	}
	if err := i.ingest(context.Background(), dev, b.Events); err != nil {
		i.log.Error("events not stored", "device", dev, "err", err)
	}
}

// target is where a device's notifications go.
type target struct {
	asset   store.Asset
	modelID string
}

func (i *Ingest) target(ctx context.Context, deviceID string) (target, bool, error) {
	d, err := i.st.GetDevice(ctx, deviceID)
	if err != nil {
		return target{}, false, fmt.Errorf("device %s: %w", deviceID, err)
	}
	if d.CustomerMachineID == "" {
		return target{}, false, nil
	}
	m, err := i.st.GetCustomerMachine(ctx, d.CustomerMachineID)
	if err != nil {
		return target{}, false, fmt.Errorf("machine of device %s: %w", deviceID, err)
	}
	if m.AssetID == "" {
		return target{}, false, nil
	}
	a, err := i.st.GetAsset(ctx, m.AssetID)
	if err != nil {
		return target{}, false, fmt.Errorf("asset of device %s: %w", deviceID, err)
	}
	model := m.MachineModelID
	if model == "" {
		model = a.MachineModelID
	}
	return target{asset: a, modelID: model}, true, nil
}

func validLevel(l string) bool { return l == "ok" || l == "warning" || l == "alarm" }

func (i *Ingest) ingest(ctx context.Context, deviceID string, evs []*gantryv1.Event) error {
	if len(evs) == 0 {
		return nil
	}
	tg, ok, err := i.target(ctx, deviceID)
	if err != nil {
		return err
	}
	if !ok {
		i.unlinked.Add(float64(len(evs)))
		i.log.Warn("events of a device not linked to an asset dropped", "device", deviceID, "events", len(evs))
		return nil
	}
	for _, e := range evs {
		if e.Point == "" || len(e.Point) > MaxPointLen || !validLevel(e.Level) || !validLevel(e.FromLevel) || len(e.Kind) > 50 {
			i.rejected.Inc()
			continue
		}
		at := i.now()
		if e.At != nil {
			at = e.At.AsTime()
		}
		n, added, err := i.st.AddNotification(ctx, store.Notification{TenantID: tg.asset.TenantID, AssetID: tg.asset.ID, DeviceID: deviceID,
			Point: e.Point, Kind: e.Kind, Level: e.Level, FromLevel: e.FromLevel, Value: e.Value, Threshold: e.Threshold, At: at, CreatedAt: i.now()})
		if err != nil {
			return err
		}
		if !added {
			i.duplicates.Inc()
			continue
		}
		i.events.Inc()
		if e.Level == "alarm" {
			if err := i.autoCase(ctx, tg, n); err != nil {
				i.log.Error("automatic case not opened", "device", deviceID, "asset", tg.asset.ID, "point", e.Point, "err", err)
			}
		}
	}
	return nil
}

// autoCase opens (or joins) the automatic internal case of an alarm when
// the model's data point asks for it and the tenant has internal service.
func (i *Ingest) autoCase(ctx context.Context, tg target, n store.Notification) error {
	if tg.modelID == "" {
		return nil
	}
	mm, err := i.st.GetMachineModel(ctx, tg.modelID)
	if err != nil {
		return fmt.Errorf("machine model %s: %w", tg.modelID, err)
	}
	var tpl machinemodel.OPCUA
	if len(mm.OPCUAJSON) > 0 {
		if err := json.Unmarshal(mm.OPCUAJSON, &tpl); err != nil {
			return fmt.Errorf("machine model %s: %w", tg.modelID, err)
		}
	}
	if !slices.ContainsFunc(tpl.DataPoints, func(d machinemodel.DataPoint) bool { return d.Name == n.Point && d.OpenCaseOnAlarm }) {
		return nil
	}
	ten, err := i.st.GetTenant(ctx, tg.asset.TenantID)
	if err != nil {
		return err
	}
	if !slices.Contains(ten.TenantRoles, authz.OperatorInternalService) {
		return nil // the notification alone
	}
	i.caseMu.Lock()
	defer i.caseMu.Unlock()
	caseID, err := i.st.OpenAutoCase(ctx, tg.asset.ID, n.Point, store.StateClosed)
	if err != nil {
		return err
	}
	if caseID == "" {
		now := i.now().UTC()
		c, err := i.st.CreateCase(ctx, store.Case{TenantID: tg.asset.TenantID, AssetID: tg.asset.ID, Kind: store.CaseInternal,
			Title:       fmt.Sprintf("Alarm: %s at %g (threshold %g)", n.Point, n.Value, n.Threshold),
			Description: fmt.Sprintf("Opened automatically by the edge rules of device %s: data point %s went from %s to alarm at %s.", n.DeviceID, n.Point, n.FromLevel, n.At.UTC().Format(time.RFC3339)),
			State:       store.StateNew, CreatedBy: CaseCreator, CreatedAt: now, UpdatedAt: now})
		if err != nil {
			return err
		}
		caseID = c.ID
		i.cases.Inc()
		i.log.Info("automatic internal case opened", "case", c.ID, "asset", tg.asset.ID, "point", n.Point)
	}
	return i.st.SetNotificationCase(ctx, n.ID, caseID)
}
