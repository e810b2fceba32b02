package api

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"github.com/gantry-iot/gantry/controlplane/commands"
	"github.com/gantry-iot/gantry/controlplane/errkind"
	"github.com/gantry-iot/gantry/controlplane/fleet"
	"github.com/gantry-iot/gantry/controlplane/store"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
)

type deviceService struct{ *Server }

func devicePB(d fleet.DeviceView) *gantryv1.EdgeDevice {
	out := &gantryv1.EdgeDevice{Id: d.ID, TenantId: d.TenantID, Name: d.Name, SerialNumber: d.SerialNumber, Model: d.Model,
		AgentVersion: d.AgentVersion, FirmwareVersion: d.FirmwareVersion, CustomerMachineId: d.CustomerMachineID, AssetId: d.AssetID,
		Online: d.Online, Enrolled: d.CertSerial != "", CreatedAt: ts(d.CreatedAt)}
	if !d.LastSeen.IsZero() {
		out.LastSeen = ts(d.LastSeen)
	}
	if t := d.Template; t != nil {
		out.Template = &gantryv1.TemplateStatus{Version: t.Version, Hash: t.Hash, State: t.State, Error: t.Error, AppliedVersion: t.AppliedVersion,
			MachineModelId: t.ModelID, MachineModelName: d.TemplateModel}
		if !t.SentAt.IsZero() {
			out.Template.SentAt = ts(t.SentAt)
		}
		if !t.AckedAt.IsZero() {
			out.Template.AckedAt = ts(t.AckedAt)
		}
	}
	return out
}

func (s *deviceService) ListDevices(ctx context.Context, _ *connect.Request[gantryv1.ListDevicesRequest]) (*connect.Response[gantryv1.ListDevicesResponse], error) {
	ds, err := s.fleet.ListDevices(ctx, CallerFrom(ctx))
	if err != nil {
		return nil, err
	}
	out := &gantryv1.ListDevicesResponse{}
	for _, d := range ds {
		out.Devices = append(out.Devices, devicePB(d))
	}
	return connect.NewResponse(out), nil
}

func (s *deviceService) GetDevice(ctx context.Context, req *connect.Request[gantryv1.GetDeviceRequest]) (*connect.Response[gantryv1.GetDeviceResponse], error) {
	d, err := s.fleet.GetDevice(ctx, CallerFrom(ctx), req.Msg.Id)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gantryv1.GetDeviceResponse{Device: devicePB(d)}), nil
}

func (s *deviceService) CreateDevice(ctx context.Context, req *connect.Request[gantryv1.CreateDeviceRequest]) (*connect.Response[gantryv1.CreateDeviceResponse], error) {
	d, err := s.fleet.CreateDevice(ctx, CallerFrom(ctx), req.Msg.Name, req.Msg.SerialNumber, req.Msg.Model)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gantryv1.CreateDeviceResponse{Device: devicePB(fleet.DeviceView{EdgeDevice: d})}), nil
}

func (s *deviceService) LinkDevice(ctx context.Context, req *connect.Request[gantryv1.LinkDeviceRequest]) (*connect.Response[gantryv1.LinkDeviceResponse], error) {
	d, err := s.fleet.LinkDevice(ctx, CallerFrom(ctx), req.Msg.Id, req.Msg.CustomerMachineId)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gantryv1.LinkDeviceResponse{Device: devicePB(d)}), nil
}

func (s *deviceService) CreateEnrollmentToken(ctx context.Context, req *connect.Request[gantryv1.CreateEnrollmentTokenRequest]) (*connect.Response[gantryv1.CreateEnrollmentTokenResponse], error) {
	t, err := s.fleet.CreateEnrollmentToken(ctx, CallerFrom(ctx), req.Msg.DeviceId, time.Duration(req.Msg.TtlSeconds)*time.Second)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gantryv1.CreateEnrollmentTokenResponse{Token: t.Token, ExpiresAt: ts(t.ExpiresAt),
		Command: fmt.Sprintf("gantry-agent enroll --server %s --token %s", s.publicURL, t.Token)}), nil
}

func (s *deviceService) SendCommand(ctx context.Context, req *connect.Request[gantryv1.SendCommandRequest]) (*connect.Response[gantryv1.SendCommandResponse], error) {
	m := req.Msg
	var cmd gantryv1.Command
	switch m.Command {
	case "ping":
		cmd.Body = &gantryv1.Command_Ping{Ping: &gantryv1.Ping{}}
	case "reload_config":
		cmd.Body = &gantryv1.Command_ReloadConfig{ReloadConfig: &gantryv1.ReloadConfig{}}
	case "restart_collector":
		cmd.Body = &gantryv1.Command_RestartCollector{RestartCollector: &gantryv1.RestartCollector{}}
	default:
		return nil, errkind.Invalidf("command", "%q: use ping, reload_config or restart_collector", m.Command)
	}
	timeout := time.Duration(m.TimeoutSeconds) * time.Second
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	if timeout > time.Minute {
		return nil, errkind.Invalidf("timeout_seconds", "at most 60")
	}
	d, err := s.fleet.DeviceToCommand(ctx, CallerFrom(ctx), m.DeviceId)
	if err != nil {
		return nil, err
	}
	if s.commands == nil {
		return nil, errkind.New(errkind.Precondition, "", "commands need the embedded MQTT broker, which is switched off")
	}
	start := time.Now()
	if m.Command == "reload_config" && s.templates != nil {
		// reload_config delivers the device's current OPC-UA template (and
		// so repairs an agent that lost it), whether or not it runs it.
		pctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		rec, ack, err := s.templates.Push(pctx, d.ID)
		if errors.Is(err, commands.ErrNoAck) || errors.Is(err, context.DeadlineExceeded) {
			return nil, errkind.New(errkind.Precondition, "", "%v", commands.ErrNoAck)
		}
		if err != nil {
			return nil, err
		}
		msg := ack.Error
		if !ack.Ok && msg == "" {
			msg = fmt.Sprintf("template v%d refused", rec.Version)
		}
		return connect.NewResponse(&gantryv1.SendCommandResponse{Nonce: ack.Nonce, Ok: ack.Ok, Error: msg, RoundTripMs: uint32(time.Since(start).Milliseconds())}), nil
	}
	ack, err := s.commands.Send(ctx, d.ID, &cmd, timeout)
	if errors.Is(err, commands.ErrNoAck) {
		return nil, errkind.New(errkind.Precondition, "", "%v", err)
	}
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gantryv1.SendCommandResponse{Nonce: ack.Nonce, Ok: ack.Ok, Error: ack.Error, RoundTripMs: uint32(time.Since(start).Milliseconds())}), nil
}

func (s *deviceService) BrowseDevice(ctx context.Context, req *connect.Request[gantryv1.BrowseDeviceRequest]) (*connect.Response[gantryv1.BrowseDeviceResponse], error) {
	m := req.Msg
	timeout := time.Duration(m.TimeoutSeconds) * time.Second
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	if timeout > time.Minute {
		return nil, errkind.Invalidf("timeout_seconds", "at most 60")
	}
	if len(m.EndpointUrl) > 500 || len(m.NodeId) > 500 {
		return nil, errkind.Invalidf("endpoint_url", "endpoint URL and node ID are at most 500 characters")
	}
	if m.MaxDepth > 10 || m.MaxNodes > 5000 {
		return nil, errkind.Invalidf("max_depth", "max_depth at most 10, max_nodes at most 5000")
	}
	d, err := s.fleet.DeviceToBrowse(ctx, CallerFrom(ctx), m.DeviceId)
	if err != nil {
		return nil, err
	}
	if s.commands == nil {
		return nil, errkind.New(errkind.Precondition, "", "commands need the embedded MQTT broker, which is switched off")
	}
	cmd := &gantryv1.Command{Body: &gantryv1.Command_Browse{Browse: &gantryv1.Browse{EndpointUrl: m.EndpointUrl, NodeId: m.NodeId, MaxDepth: m.MaxDepth, MaxNodes: m.MaxNodes}}}
	ack, err := s.commands.Send(ctx, d.ID, cmd, timeout)
	if errors.Is(err, commands.ErrNoAck) {
		return nil, errkind.New(errkind.Precondition, "", "%v", err)
	}
	if err != nil {
		return nil, err
	}
	if !ack.Ok {
		return nil, errkind.New(errkind.Precondition, "", "the agent could not browse: %s", ack.Error)
	}
	return connect.NewResponse(&gantryv1.BrowseDeviceResponse{Nodes: ack.GetBrowse().GetNodes(), Truncated: ack.GetBrowse().GetTruncated()}), nil
}

func valuePB(v store.Sample) *gantryv1.Value {
	return &gantryv1.Value{Point: v.Point, Value: v.Value, Status: v.Status, At: ts(v.At), BatchSeq: v.BatchSeq}
}

func (s *deviceService) GetLatestValues(ctx context.Context, req *connect.Request[gantryv1.GetLatestValuesRequest]) (*connect.Response[gantryv1.GetLatestValuesResponse], error) {
	vs, err := s.fleet.LatestValues(ctx, CallerFrom(ctx), req.Msg.DeviceId)
	if err != nil {
		return nil, err
	}
	out := &gantryv1.GetLatestValuesResponse{}
	for _, v := range vs {
		out.Values = append(out.Values, valuePB(v))
	}
	return connect.NewResponse(out), nil
}

func (s *deviceService) GetHistory(ctx context.Context, req *connect.Request[gantryv1.GetHistoryRequest]) (*connect.Response[gantryv1.GetHistoryResponse], error) {
	m := req.Msg
	var from, to time.Time
	if m.From != nil {
		from = m.From.AsTime()
	}
	if m.To != nil {
		to = m.To.AsTime()
	}
	vs, err := s.fleet.History(ctx, CallerFrom(ctx), m.DeviceId, m.Point, from, to, int(m.Limit))
	if err != nil {
		return nil, err
	}
	out := &gantryv1.GetHistoryResponse{}
	for _, v := range vs {
		out.Values = append(out.Values, valuePB(v))
	}
	return connect.NewResponse(out), nil
}

type notificationService struct{ *Server }

func notificationPB(n store.Notification) *gantryv1.Notification {
	return &gantryv1.Notification{Id: n.ID, AssetId: n.AssetID, DeviceId: n.DeviceID, Point: n.Point, Level: n.Level, FromLevel: n.FromLevel,
		Value: n.Value, Threshold: n.Threshold, At: ts(n.At), CreatedAt: ts(n.CreatedAt), CaseId: n.CaseID}
}

func (s *notificationService) ListNotifications(ctx context.Context, req *connect.Request[gantryv1.ListNotificationsRequest]) (*connect.Response[gantryv1.ListNotificationsResponse], error) {
	ns, err := s.fleet.Notifications(ctx, CallerFrom(ctx), req.Msg.DeviceId, int(req.Msg.Limit))
	if err != nil {
		return nil, err
	}
	out := &gantryv1.ListNotificationsResponse{}
	for _, n := range ns {
		out.Notifications = append(out.Notifications, notificationPB(n))
	}
	return connect.NewResponse(out), nil
}
