package api

import (
	"context"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"github.com/gantry-iot/gantry/controlplane/cases"
	"github.com/gantry-iot/gantry/controlplane/store"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

type remoteService struct{ *Server }

func grantPB(g *store.Grant, now time.Time) *gantryv1.Grant {
	if g == nil {
		return nil
	}
	out := &gantryv1.Grant{Id: g.ID, CaseId: g.CaseID, AssetId: g.AssetID, DeviceId: g.DeviceID, ConnectionTypes: g.ConnectionTypes,
		ActivatedBy: g.ActivatedBy, ActivatedAt: ts(g.ActivatedAt), ExpiresAt: ts(g.ExpiresAt), DeactivatedBy: g.DeactivatedBy, Active: g.Active(now)}
	if !g.DeactivatedAt.IsZero() {
		out.DeactivatedAt = timestamppb.New(g.DeactivatedAt)
	}
	return out
}

func requestPB(r store.AccessRequest) *gantryv1.AccessRequest {
	return &gantryv1.AccessRequest{Id: r.ID, CaseId: r.CaseID, RequestedBy: r.RequestedBy, Reason: r.Reason, DurationMinutes: uint32(r.DurationMinutes),
		State: r.State, DecidedBy: r.DecidedBy, CreatedAt: ts(r.CreatedAt)}
}

func (s *remoteService) ActivateRemoteAccess(ctx context.Context, req *connect.Request[gantryv1.ActivateRemoteAccessRequest]) (*connect.Response[gantryv1.ActivateRemoteAccessResponse], error) {
	g, err := s.cases.Activate(ctx, CallerFrom(ctx), req.Msg.CaseId, time.Duration(req.Msg.DurationMinutes)*time.Minute)
	if err != nil {
		return nil, err
	}
	s.grantsChanged()
	return connect.NewResponse(&gantryv1.ActivateRemoteAccessResponse{Grant: grantPB(&g, time.Now())}), nil
}

func (s *remoteService) DeactivateRemoteAccess(ctx context.Context, req *connect.Request[gantryv1.DeactivateRemoteAccessRequest]) (*connect.Response[gantryv1.DeactivateRemoteAccessResponse], error) {
	g, err := s.cases.Deactivate(ctx, CallerFrom(ctx), req.Msg.CaseId)
	if err != nil {
		return nil, err
	}
	s.grantsChanged()
	return connect.NewResponse(&gantryv1.DeactivateRemoteAccessResponse{Grant: grantPB(&g, time.Now())}), nil
}

func (s *remoteService) GetRemoteAccess(ctx context.Context, req *connect.Request[gantryv1.GetRemoteAccessRequest]) (*connect.Response[gantryv1.GetRemoteAccessResponse], error) {
	ra, err := s.cases.GetRemoteAccess(ctx, CallerFrom(ctx), req.Msg.CaseId)
	if err != nil {
		return nil, err
	}
	out := &gantryv1.GetRemoteAccessResponse{Grant: grantPB(ra.Grant, time.Now())}
	for _, r := range ra.Requests {
		out.Requests = append(out.Requests, requestPB(r))
	}
	return connect.NewResponse(out), nil
}

func (s *remoteService) RequestRemoteAccess(ctx context.Context, req *connect.Request[gantryv1.RequestRemoteAccessRequest]) (*connect.Response[gantryv1.RequestRemoteAccessResponse], error) {
	r, err := s.cases.Request(ctx, CallerFrom(ctx), req.Msg.CaseId, req.Msg.Reason, time.Duration(req.Msg.DurationMinutes)*time.Minute)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gantryv1.RequestRemoteAccessResponse{Request: requestPB(r)}), nil
}

func (s *remoteService) DecideAccessRequest(ctx context.Context, req *connect.Request[gantryv1.DecideAccessRequestRequest]) (*connect.Response[gantryv1.DecideAccessRequestResponse], error) {
	r, g, err := s.cases.Decide(ctx, CallerFrom(ctx), req.Msg.RequestId, req.Msg.Approve)
	if err != nil {
		return nil, err
	}
	s.grantsChanged()
	return connect.NewResponse(&gantryv1.DecideAccessRequestResponse{Request: requestPB(r), Grant: grantPB(g, time.Now())}), nil
}

func (s *remoteService) OpenSession(ctx context.Context, req *connect.Request[gantryv1.OpenSessionRequest]) (*connect.Response[gantryv1.OpenSessionResponse], error) {
	if s.remote == nil {
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("remote access is not enabled on this control plane (it runs without a WireGuard hub)"))
	}
	u, err := s.cases.AuthorizeUse(ctx, CallerFrom(ctx), req.Msg.CaseId, req.Msg.ConnectionType, req.Msg.Target, true)
	if err != nil {
		return nil, err
	}
	id, tok, exp := s.remote.Issue(u)
	return connect.NewResponse(&gantryv1.OpenSessionResponse{SessionId: id, Token: tok, WebsocketPath: s.remote.WebSocketPath(),
		TokenExpiresAt: timestamppb.New(exp), Target: u.Target, GrantId: u.GrantID, GrantExpiresAt: timestamppb.New(u.GrantExpires)}), nil
}

func (s *remoteService) GetSSCConfig(ctx context.Context, req *connect.Request[gantryv1.GetSSCConfigRequest]) (*connect.Response[gantryv1.GetSSCConfigResponse], error) {
	if s.ssc == nil {
		return nil, connect.NewError(connect.CodeUnavailable, errors.New("remote access is not enabled on this control plane (it runs without a WireGuard hub)"))
	}
	var cfg SSCConfig
	u, err := s.cases.SSCConfig(ctx, CallerFrom(ctx), req.Msg.CaseId, func(u cases.Use) (string, error) {
		var err error
		cfg, err = s.ssc.IssueSSC(u, req.Msg.PublicKey)
		return fmt.Sprintf("engineer address %s key %s", cfg.Address, cfg.PublicKey), err
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gantryv1.GetSSCConfigResponse{Config: cfg.WGQuick, Address: cfg.Address, PublicKey: cfg.PublicKey,
		PrivateKeyIncluded: cfg.PrivateKeyIncluded, HubEndpoint: cfg.HubEndpoint, AllowedIps: cfg.AllowedIPs, MachineSubnets: cfg.MachineSubnets,
		GrantId: u.GrantID, GrantExpiresAt: timestamppb.New(u.GrantExpires)}), nil
}
