package commands

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gantry-iot/gantry/controlplane/store"
	"github.com/gantry-iot/gantry/pkg/machinemodel"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
)

// TemplateStore is the persistence template delivery needs.
type TemplateStore interface {
	GetDevice(ctx context.Context, id string) (store.EdgeDevice, error)
	GetCustomerMachine(ctx context.Context, id string) (store.CustomerMachine, error)
	GetAsset(ctx context.Context, id string) (store.Asset, error)
	GetMachineModel(ctx context.Context, id string) (store.MachineModel, error)
	store.Templates
}

// TemplateAckTimeout is how long delivery waits for an agent to apply a
// template (it stops its collector and starts the new one first).
const TemplateAckTimeout = 30 * time.Second

// retryAfter is when a template that got no answer from an online
// device is sent again (once per trigger; the device's next connect
// triggers again anyway).
const retryAfter = 30 * time.Second

// presenceLag bounds how long after a device announced itself online the
// store may still say it is offline (presence writes are coalesced, about
// 150 ms; more on a loaded store). Within it the device counts as online.
const presenceLag = 5 * time.Second

// maxConcurrentDeliveries bounds the templates in flight at once (a model
// update may concern many devices).
const maxConcurrentDeliveries = 16

// Templates delivers each device's effective OPC-UA template — its
// machine model's, through the customer machine it is linked to (or that
// machine's asset when the machine names no model) — as a signed
// reload_config, and records the agent's answer. It sends when a device is
// linked or unlinked (the empty template stops collection), when its
// model's template changes, when its machine gets another source of its
// model (linked to an asset) and when it comes online, each time only if
// the device does not already run that template. Safe for concurrent use.
type Templates struct {
	st      TemplateStore
	d       *Dispatcher
	log     *slog.Logger
	timeout time.Duration

	mu        sync.Mutex
	pending   map[string]trigger // devices to check
	inflight  map[string]bool
	announced map[string]time.Time // when a device last announced itself online (pruned after presenceLag)
	pruned    time.Time
	kick      chan struct{}

	results *prometheus.CounterVec
}

type trigger struct {
	why      string // linked, model_updated, machine_changed, online, retry
	online   bool   // the device just announced itself online
	retrying bool
}

// NewTemplates returns template delivery; start Run. reg and logger may
// be nil.
func NewTemplates(st TemplateStore, d *Dispatcher, reg prometheus.Registerer, logger *slog.Logger) *Templates {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	t := &Templates{st: st, d: d, log: logger, timeout: TemplateAckTimeout,
		pending: map[string]trigger{}, inflight: map[string]bool{}, announced: map[string]time.Time{}, kick: make(chan struct{}, 1),
		results: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gantry_template_deliveries_total",
			Help: "OPC-UA templates sent to devices by result: applied, refused (the agent's error), no_ack, failed (not sent)."}, []string{"result"}),
	}
	if reg != nil {
		reg.MustRegister(t.results)
	}
	return t
}

// DeviceLinked: a device was linked to a machine or unlinked.
func (t *Templates) DeviceLinked(deviceID string) { t.enqueue(deviceID, trigger{why: "linked"}) }

// DeviceOnline: a device announced itself online.
func (t *Templates) DeviceOnline(deviceID string) {
	now := time.Now()
	t.mu.Lock()
	if now.Sub(t.pruned) >= presenceLag { // keep only recent announcements
		for id, at := range t.announced {
			if now.Sub(at) >= presenceLag {
				delete(t.announced, id)
			}
		}
		t.pruned = now
	}
	t.announced[deviceID] = now
	t.mu.Unlock()
	t.enqueue(deviceID, trigger{why: "online", online: true})
}

// justAnnounced reports whether the device announced itself online less
// than presenceLag ago (the store may not say so yet).
func (t *Templates) justAnnounced(deviceID string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	at, ok := t.announced[deviceID]
	if ok && time.Since(at) >= presenceLag {
		delete(t.announced, deviceID)
		return false
	}
	return ok
}

// ModelUpdated: a machine model (and so maybe its OPC-UA template)
// changed; every device using it is checked.
func (t *Templates) ModelUpdated(ctx context.Context, modelID string) {
	t.enqueueAll(ctx, t.st.ListDevicesOfModel, "model", modelID, "model_updated")
}

// MachineChanged: the model a customer machine's devices take their
// template from may have changed (it was linked to an asset); every
// device linked to it is checked.
func (t *Templates) MachineChanged(ctx context.Context, machineID string) {
	t.enqueueAll(ctx, t.st.ListDevicesOfMachine, "machine", machineID, "machine_changed")
}

// enqueueAll checks every device that list returns for the model or
// machine id (kind names it in the log).
func (t *Templates) enqueueAll(ctx context.Context, list func(context.Context, string) ([]string, error), kind, id, why string) {
	ids, err := list(ctx, id)
	if err != nil {
		t.log.Error("template delivery: devices of the changed "+kind+" not found", kind, id, "err", err)
		return
	}
	for _, dev := range ids {
		t.enqueue(dev, trigger{why: why})
	}
}

func (t *Templates) enqueue(deviceID string, tr trigger) {
	t.mu.Lock()
	if old, ok := t.pending[deviceID]; ok && old.online {
		tr.online = true
	}
	t.pending[deviceID] = tr
	t.mu.Unlock()
	select {
	case t.kick <- struct{}{}:
	default:
	}
}

// Run delivers queued templates until ctx ends.
func (t *Templates) Run(ctx context.Context) {
	sem := make(chan struct{}, maxConcurrentDeliveries)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		t.mu.Lock()
		var todo []string
		for id := range t.pending {
			if !t.inflight[id] {
				todo = append(todo, id)
			}
		}
		t.mu.Unlock()
		for _, id := range todo {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			t.mu.Lock()
			tr := t.pending[id]
			delete(t.pending, id)
			t.inflight[id] = true
			t.mu.Unlock()
			wg.Go(func() {
				defer func() { <-sem }()
				t.deliver(ctx, id, tr)
				t.mu.Lock()
				delete(t.inflight, id)
				_, again := t.pending[id]
				t.mu.Unlock()
				if again {
					select {
					case t.kick <- struct{}{}:
					default:
					}
				}
			})
		}
		select {
		case <-ctx.Done():
			return
		case <-t.kick:
		}
	}
}

// deliver sends the device's effective template if it does not run it.
func (t *Templates) deliver(ctx context.Context, deviceID string, tr trigger) {
	log := t.log.With("device", deviceID, "trigger", tr.why)
	d, err := t.st.GetDevice(ctx, deviceID)
	if errors.Is(err, store.ErrNotFound) {
		return
	}
	if err != nil {
		log.Error("template delivery: device not read", "err", err)
		t.results.WithLabelValues("failed").Inc()
		return
	}
	// Presence is written a little later than the state arrives, so a
	// device that just announced itself counts as online — also for other
	// triggers (a link right after a reconnect).
	if !d.Online && !tr.online && !t.justAnnounced(deviceID) {
		log.Debug("template delivery: device offline; sent when it connects")
		return
	}
	tpl, modelID, err := EffectiveTemplate(ctx, t.st, d)
	if err != nil {
		log.Error("template delivery: effective template not built", "err", err)
		t.results.WithLabelValues("failed").Inc()
		return
	}
	hash := tpl.Hash()
	cur, err := t.st.GetDeviceTemplate(ctx, deviceID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		if tpl.IsEmpty() {
			return // never had a template, has none now
		}
	case err != nil:
		log.Error("template delivery: state not read", "err", err)
		t.results.WithLabelValues("failed").Inc()
		return
	case cur.State == store.TemplateApplied && cur.AppliedHash == hash:
		return // runs it
	}
	_, _, err = t.send(ctx, d.ID, tpl, modelID)
	if errors.Is(err, ErrNoAck) && !tr.retrying && ctx.Err() == nil {
		log.Warn("template delivery: no answer; trying again", "in", retryAfter)
		time.AfterFunc(retryAfter, func() {
			if ctx.Err() == nil {
				t.enqueue(deviceID, trigger{why: "retry", retrying: true})
			}
		})
	}
}

// Push sends a device's effective template now, whether or not it runs
// it already (reload_config from the API), and returns the recorded state
// and the agent's ack.
func (t *Templates) Push(ctx context.Context, deviceID string) (store.DeviceTemplate, *gantryv1.CommandAck, error) {
	d, err := t.st.GetDevice(ctx, deviceID)
	if err != nil {
		return store.DeviceTemplate{}, nil, err
	}
	tpl, modelID, err := EffectiveTemplate(ctx, t.st, d)
	if err != nil {
		return store.DeviceTemplate{}, nil, err
	}
	return t.send(ctx, d.ID, tpl, modelID)
}

func (t *Templates) send(ctx context.Context, deviceID string, tpl machinemodel.OPCUA, modelID string) (store.DeviceTemplate, *gantryv1.CommandAck, error) {
	rec, err := t.st.RecordTemplateSent(ctx, deviceID, tpl.Hash(), modelID, time.Now().UTC())
	if err != nil {
		t.results.WithLabelValues("failed").Inc()
		return store.DeviceTemplate{}, nil, err
	}
	cmd := &gantryv1.Command{Body: &gantryv1.Command_ReloadConfig{ReloadConfig: &gantryv1.ReloadConfig{Template: &gantryv1.DeviceTemplate{
		Version: rec.Version, Hash: rec.Hash, Opcua: tpl.ToPB(), MachineModelId: modelID}}}}
	log := t.log.With("device", deviceID, "version", rec.Version, "hash", rec.Hash)
	ack, err := t.d.Send(ctx, deviceID, cmd, t.timeout)
	if err != nil {
		result := "failed"
		if errors.Is(err, ErrNoAck) {
			result = "no_ack"
		}
		t.results.WithLabelValues(result).Inc()
		log.Warn("template not delivered", "err", err)
		return rec, nil, err
	}
	at := time.Now().UTC()
	if _, err := t.st.RecordTemplateAck(context.WithoutCancel(ctx), deviceID, rec.Version, ack.Ok, ack.Error, at); err != nil {
		log.Error("template ack not recorded", "err", err)
	}
	rec.AckedAt, rec.Error = at, ack.Error
	if ack.Ok {
		rec.State, rec.AppliedVersion, rec.AppliedHash = store.TemplateApplied, rec.Version, rec.Hash
		t.results.WithLabelValues("applied").Inc()
		log.Info("template applied by the agent", "points", len(tpl.DataPoints))
	} else {
		rec.State = store.TemplateError
		t.results.WithLabelValues("refused").Inc()
		log.Warn("template refused by the agent", "err", ack.Error)
	}
	return rec, ack, nil
}

// EffectiveTemplate is the OPC-UA template a device should run: that of
// the machine model of the customer machine it is linked to, or of that
// machine's asset when the machine names no model; the empty template when
// the device is unlinked or the model has none.
func EffectiveTemplate(ctx context.Context, st TemplateStore, d store.EdgeDevice) (machinemodel.OPCUA, string, error) {
	if d.CustomerMachineID == "" {
		return machinemodel.OPCUA{}, "", nil
	}
	m, err := st.GetCustomerMachine(ctx, d.CustomerMachineID)
	if err != nil {
		return machinemodel.OPCUA{}, "", fmt.Errorf("machine of device %s: %w", d.ID, err)
	}
	modelID := m.MachineModelID
	if modelID == "" && m.AssetID != "" {
		a, err := st.GetAsset(ctx, m.AssetID)
		if err != nil {
			return machinemodel.OPCUA{}, "", fmt.Errorf("asset of device %s: %w", d.ID, err)
		}
		modelID = a.MachineModelID
	}
	if modelID == "" {
		return machinemodel.OPCUA{}, "", nil
	}
	mm, err := st.GetMachineModel(ctx, modelID)
	if err != nil {
		return machinemodel.OPCUA{}, "", fmt.Errorf("machine model of device %s: %w", d.ID, err)
	}
	var tpl machinemodel.OPCUA
	if len(mm.OPCUAJSON) > 0 {
		if err := json.Unmarshal(mm.OPCUAJSON, &tpl); err != nil {
			return machinemodel.OPCUA{}, "", fmt.Errorf("model %s OPC-UA template: %w", modelID, err)
		}
	}
	if ps := tpl.Validate(); len(ps) > 0 {
		return machinemodel.OPCUA{}, "", fmt.Errorf("model %s OPC-UA template is invalid (%w); fix it in the machine model", modelID, ps.Err())
	}
	return tpl, modelID, nil
}
