package fleet

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/gantry-iot/gantry/controlplane/authz"
	"github.com/gantry-iot/gantry/controlplane/errkind"
	"github.com/gantry-iot/gantry/controlplane/identity"
	"github.com/gantry-iot/gantry/controlplane/store"
)

// DeviceRepo is the device persistence fleet needs.
type DeviceRepo interface {
	CreateDevice(ctx context.Context, d store.EdgeDevice) (store.EdgeDevice, error)
	GetDevice(ctx context.Context, id string) (store.EdgeDevice, error)
	ListDevices(ctx context.Context, tenantID string) ([]store.EdgeDevice, error)
	ListDevicesOfAssets(ctx context.Context, assetIDs []string) ([]store.EdgeDevice, error)
	LinkDevice(ctx context.Context, id, customerMachineID string) error
	GetDeviceTemplate(ctx context.Context, deviceID string) (store.DeviceTemplate, error)
	CreateEnrollmentToken(ctx context.Context, t store.EnrollmentToken) error
}

// DeviceView is a device with the asset its machine is linked to.
type DeviceView struct {
	store.EdgeDevice
	AssetID string
	// Template is the OPC-UA template delivery state (providers'
	// GetDevice only; State TemplateNone when none was ever sent).
	Template *store.DeviceTemplate
	// TemplateModel is the name of Template.ModelID's machine model (""
	// when none or the model is gone).
	TemplateModel string
}

// TemplateNone is the template state of a device that was never sent one.
const TemplateNone = "none"

// deviceLocation: tenant-level while unlinked, below the customer machine
// once linked.
func (s *Service) deviceLocation(ctx context.Context, d store.EdgeDevice) (authz.Location, string, error) {
	if d.CustomerMachineID == "" {
		return authz.Location{Tenant: d.TenantID}, "", nil
	}
	m, err := s.repo.GetCustomerMachine(ctx, d.CustomerMachineID)
	if err != nil {
		return authz.Location{}, "", fmt.Errorf("machine of device %s: %w", d.ID, err)
	}
	loc, err := s.machineLocation(ctx, m)
	return loc, m.AssetID, err
}

func (s *Service) devices() DeviceRepo { return s.repo }

// ListDevices lists devices the caller may read.
func (s *Service) ListDevices(ctx context.Context, c *identity.Caller) ([]DeviceView, error) {
	switch c.Tenant.Kind {
	case authz.KindServiceProvider:
		if !allowedAnywhere(c, authz.EdgeDevices) {
			return nil, errkind.Deniedf("your roles give no Edge Devices permission")
		}
		ds, err := s.devices().ListDevices(ctx, c.Tenant.ID)
		if err != nil {
			return nil, err
		}
		var out []DeviceView
		for _, d := range ds {
			loc, asset, err := s.deviceLocation(ctx, d)
			if err != nil {
				return nil, err
			}
			if allowedAt(c.Principal, authz.EdgeDevices, authz.Read, loc) {
				out = append(out, DeviceView{EdgeDevice: d, AssetID: asset})
			}
		}
		return out, nil
	case authz.KindOperator:
		assets, err := s.ListAssets(ctx, c, "")
		if err != nil {
			return nil, err
		}
		ids := make([]string, len(assets))
		for i, a := range assets {
			ids[i] = a.ID
		}
		ds, err := s.devices().ListDevicesOfAssets(ctx, ids)
		if err != nil {
			return nil, err
		}
		out := make([]DeviceView, 0, len(ds))
		for _, d := range ds {
			_, asset, err := s.deviceLocation(ctx, d)
			if err != nil {
				return nil, err
			}
			d.CertSerial = "" // provider-internal
			out = append(out, DeviceView{EdgeDevice: d, AssetID: asset})
		}
		return out, nil
	}
	return nil, errkind.Deniedf("edge devices are for operator and provider tenants")
}

// device loads a device of the caller's (provider) tenant and checks level l.
func (s *Service) device(ctx context.Context, c *identity.Caller, id string, l authz.Level, what string) (store.EdgeDevice, authz.Location, error) {
	if err := identity.CheckID("id", id); err != nil {
		return store.EdgeDevice{}, authz.Location{}, err
	}
	d, err := s.devices().GetDevice(ctx, id)
	if err != nil || d.TenantID != c.Tenant.ID {
		return store.EdgeDevice{}, authz.Location{}, notFound("edge device", id)
	}
	loc, _, err := s.deviceLocation(ctx, d)
	if err != nil {
		return store.EdgeDevice{}, authz.Location{}, err
	}
	return d, loc, need(c.Principal, authz.EdgeDevices, l, loc, what)
}

// GetDevice returns a device (providers: Edge Devices ≥ read; operators:
// a device on one of their readable assets).
func (s *Service) GetDevice(ctx context.Context, c *identity.Caller, id string) (DeviceView, error) {
	if c.Tenant.Kind == authz.KindOperator {
		ds, err := s.ListDevices(ctx, c)
		if err != nil {
			return DeviceView{}, err
		}
		for _, d := range ds {
			if d.ID == id {
				return d, nil
			}
		}
		return DeviceView{}, notFound("edge device", id)
	}
	d, _, err := s.device(ctx, c, id, authz.Read, "read this device")
	if err != nil {
		return DeviceView{}, err
	}
	_, asset, err := s.deviceLocation(ctx, d)
	if err != nil {
		return DeviceView{}, err
	}
	v := DeviceView{EdgeDevice: d, AssetID: asset}
	switch t, err := s.devices().GetDeviceTemplate(ctx, d.ID); {
	case err == nil:
		v.Template = &t
		if t.ModelID != "" {
			switch m, err := s.repo.GetMachineModel(ctx, t.ModelID); {
			case err == nil:
				v.TemplateModel = m.Name
			case !errors.Is(err, store.ErrNotFound):
				return DeviceView{}, fmt.Errorf("model of the template of device %s: %w", d.ID, err)
			}
		}
	case errors.Is(err, store.ErrNotFound):
		v.Template = &store.DeviceTemplate{DeviceID: d.ID, State: TemplateNone}
	default:
		return DeviceView{}, err
	}
	return v, nil
}

// CreateDevice registers a device (Edge Devices = manage, tenant-wide:
// unassigned devices belong to the whole provider).
func (s *Service) CreateDevice(ctx context.Context, c *identity.Caller, name, serial, model string) (store.EdgeDevice, error) {
	if err := requireKind(c, authz.KindServiceProvider, "edge device registration"); err != nil {
		return store.EdgeDevice{}, err
	}
	if err := need(c.Principal, authz.EdgeDevices, authz.Manage, tenantLoc(c), "register edge devices"); err != nil {
		return store.EdgeDevice{}, err
	}
	name, err := identity.CheckName("name", name)
	if err != nil {
		return store.EdgeDevice{}, err
	}
	if serial == "" || len(serial) > 100 {
		return store.EdgeDevice{}, errkind.Invalidf("serial_number", "a serial number of 1..100 characters is required")
	}
	if len(model) > 100 {
		return store.EdgeDevice{}, errkind.Invalidf("model", "at most 100 characters")
	}
	d, err := s.devices().CreateDevice(ctx, store.EdgeDevice{TenantID: c.Tenant.ID, Name: name, SerialNumber: serial, Model: model, CreatedAt: s.now().UTC()})
	if err != nil {
		return store.EdgeDevice{}, wrapStore("register device", err)
	}
	return d, nil
}

// LinkDevice links a device to a customer machine (or unlinks it).
func (s *Service) LinkDevice(ctx context.Context, c *identity.Caller, id, machineID string) (DeviceView, error) {
	d, _, err := s.device(ctx, c, id, authz.Manage, "link this device")
	if err != nil {
		return DeviceView{}, err
	}
	asset := ""
	if machineID != "" {
		if err := identity.CheckID("customer_machine_id", machineID); err != nil {
			return DeviceView{}, err
		}
		m, err := s.repo.GetCustomerMachine(ctx, machineID)
		if err != nil || m.TenantID != c.Tenant.ID {
			return DeviceView{}, notFound("customer machine", machineID)
		}
		loc, err := s.machineLocation(ctx, m)
		if err != nil {
			return DeviceView{}, err
		}
		if err := need(c.Principal, authz.EdgeDevices, authz.Manage, loc, "link devices to this machine"); err != nil {
			return DeviceView{}, err
		}
		asset = m.AssetID
	}
	if err := s.devices().LinkDevice(ctx, d.ID, machineID); err != nil {
		return DeviceView{}, err
	}
	if h := s.hooks.DeviceLinked; h != nil {
		h(d.ID)
	}
	d.CustomerMachineID = machineID
	return DeviceView{EdgeDevice: d, AssetID: asset}, nil
}

// EnrollmentToken is a freshly issued token (shown once).
type EnrollmentToken struct {
	Token     string
	ExpiresAt time.Time
}

// CreateEnrollmentToken issues a one-time token for a device (Edge
// Devices = manage on it).
func (s *Service) CreateEnrollmentToken(ctx context.Context, c *identity.Caller, deviceID string, ttl time.Duration) (EnrollmentToken, error) {
	if err := requireKind(c, authz.KindServiceProvider, "edge device enrollment"); err != nil {
		return EnrollmentToken{}, err
	}
	d, _, err := s.device(ctx, c, deviceID, authz.Manage, "create enrollment tokens for this device")
	if err != nil {
		return EnrollmentToken{}, err
	}
	if ttl == 0 {
		ttl = time.Hour
	}
	if ttl < time.Minute || ttl > 7*24*time.Hour {
		return EnrollmentToken{}, errkind.Invalidf("ttl_seconds", "between 60 seconds and 7 days")
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return EnrollmentToken{}, err
	}
	token := "gantry-enroll-" + base64.RawURLEncoding.EncodeToString(b)
	h := sha256.Sum256([]byte(token))
	now := s.now().UTC()
	t := store.EnrollmentToken{TokenHash: h[:], DeviceID: d.ID, TenantID: c.Tenant.ID, CreatedBy: c.User.ID, CreatedAt: now, ExpiresAt: now.Add(ttl)}
	if err := s.devices().CreateEnrollmentToken(ctx, t); err != nil {
		return EnrollmentToken{}, err
	}
	return EnrollmentToken{Token: token, ExpiresAt: t.ExpiresAt}, nil
}

// DeviceToCommand returns a device the caller may send commands to (Edge
// Devices = manage on it).
func (s *Service) DeviceToCommand(ctx context.Context, c *identity.Caller, id string) (store.EdgeDevice, error) {
	if err := requireKind(c, authz.KindServiceProvider, "device commands"); err != nil {
		return store.EdgeDevice{}, err
	}
	d, _, err := s.device(ctx, c, id, authz.Manage, "send commands to this device")
	return d, err
}

// DeviceToBrowse returns a device whose agent the caller may have browse
// an OPC-UA server: providers with Machine Models = manage (to build
// templates) or Edge Devices = manage, in the device's scope.
func (s *Service) DeviceToBrowse(ctx context.Context, c *identity.Caller, id string) (store.EdgeDevice, error) {
	if err := requireKind(c, authz.KindServiceProvider, "browsing machines through edge devices"); err != nil {
		return store.EdgeDevice{}, err
	}
	d, loc, err := s.device(ctx, c, id, authz.Read, "read this device")
	if err != nil {
		return store.EdgeDevice{}, err
	}
	if need(c.Principal, authz.EdgeDevices, authz.Manage, loc, "") == nil {
		return d, nil
	}
	if err := need(c.Principal, authz.MachineModels, authz.Manage, loc, "browse a machine's OPC-UA address space (Machine Models or Edge Devices = manage)"); err != nil {
		return store.EdgeDevice{}, err
	}
	return d, nil
}

// LatestValues returns a device's latest data (readers of the device).
func (s *Service) LatestValues(ctx context.Context, c *identity.Caller, deviceID string) ([]store.Sample, error) {
	if _, err := s.GetDevice(ctx, c, deviceID); err != nil {
		return nil, err
	}
	return s.repo.LatestValues(ctx, deviceID)
}

// History returns a data point's values in [from, to) (readers of the device).
func (s *Service) History(ctx context.Context, c *identity.Caller, deviceID, point string, from, to time.Time, limit int) ([]store.Sample, error) {
	if _, err := s.GetDevice(ctx, c, deviceID); err != nil {
		return nil, err
	}
	if point == "" || len(point) > 200 {
		return nil, errkind.Invalidf("point", "a data point name is required")
	}
	if to.IsZero() {
		to = s.now()
	}
	if from.IsZero() {
		from = to.Add(-24 * time.Hour)
	}
	if !from.Before(to) {
		return nil, errkind.Invalidf("from", "from must be before to")
	}
	if limit < 0 || limit > 10000 {
		return nil, errkind.Invalidf("limit", "between 1 and 10000")
	}
	return s.repo.History(ctx, deviceID, point, from, to, limit)
}

// MaxNotifications bounds one ListNotifications answer.
const MaxNotifications = 1000

// Notifications returns a device's notifications, newest first, at most
// limit (0: 100), to the readers of the device (as LatestValues).
// Operators see only their own tenant's notifications, of the assets they
// may read; providers see every notification of their device.
func (s *Service) Notifications(ctx context.Context, c *identity.Caller, deviceID string, limit int) ([]store.Notification, error) {
	if limit < 0 || limit > MaxNotifications {
		return nil, errkind.Invalidf("limit", "between 1 and %d", MaxNotifications)
	}
	if _, err := s.GetDevice(ctx, c, deviceID); err != nil {
		return nil, err
	}
	q := store.NotificationQuery{DeviceID: deviceID, Limit: limit}
	if c.Tenant.Kind == authz.KindOperator {
		assets, err := s.ListAssets(ctx, c, "")
		if err != nil {
			return nil, err
		}
		q.TenantID, q.AssetIDs = c.Tenant.ID, make([]string, 0, len(assets))
		for _, a := range assets {
			q.AssetIDs = append(q.AssetIDs, a.ID)
		}
	}
	return s.repo.ListNotifications(ctx, q)
}
