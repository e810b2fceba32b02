package api

import (
	"context"
	"encoding/base64"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/gantry-iot/gantry/controlplane/cases"
	"github.com/gantry-iot/gantry/controlplane/errkind"
	"github.com/gantry-iot/gantry/controlplane/fleet"
	"github.com/gantry-iot/gantry/controlplane/store"
	"github.com/gantry-iot/gantry/pkg/machinemodel"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
)

// ---- ShopfloorService ----

type shopfloorService struct{ *Server }

func facilityPB(f store.Facility) *gantryv1.Facility {
	return &gantryv1.Facility{Id: f.ID, Name: f.Name, CreatedAt: ts(f.CreatedAt)}
}

func assetPB(a store.Asset) *gantryv1.Asset {
	return &gantryv1.Asset{Id: a.ID, FacilityId: a.FacilityID, Name: a.Name, SerialNumber: a.SerialNumber, MachineModelId: a.MachineModelID,
		ProviderTenantId: a.ProviderTenantID, CreatedAt: ts(a.CreatedAt)}
}

func proposalPB(p store.AssetProposal) *gantryv1.AssetProposal {
	return &gantryv1.AssetProposal{Id: p.ID, ProviderTenantId: p.ProviderTenantID, CustomerMachineId: p.CustomerMachineID, Name: p.Name,
		SerialNumber: p.SerialNumber, MachineModelId: p.MachineModelID, State: p.State, AssetId: p.AssetID, CreatedAt: ts(p.CreatedAt)}
}

func (s *shopfloorService) ListFacilities(ctx context.Context, _ *connect.Request[gantryv1.ListFacilitiesRequest]) (*connect.Response[gantryv1.ListFacilitiesResponse], error) {
	fs, err := s.fleet.ListFacilities(ctx, CallerFrom(ctx))
	if err != nil {
		return nil, err
	}
	out := &gantryv1.ListFacilitiesResponse{}
	for _, f := range fs {
		out.Facilities = append(out.Facilities, facilityPB(f))
	}
	return connect.NewResponse(out), nil
}

func (s *shopfloorService) CreateFacility(ctx context.Context, req *connect.Request[gantryv1.CreateFacilityRequest]) (*connect.Response[gantryv1.CreateFacilityResponse], error) {
	f, err := s.fleet.CreateFacility(ctx, CallerFrom(ctx), req.Msg.Name)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gantryv1.CreateFacilityResponse{Facility: facilityPB(f)}), nil
}

func (s *shopfloorService) UpdateFacility(ctx context.Context, req *connect.Request[gantryv1.UpdateFacilityRequest]) (*connect.Response[gantryv1.UpdateFacilityResponse], error) {
	f, err := s.fleet.UpdateFacility(ctx, CallerFrom(ctx), req.Msg.Id, req.Msg.Name)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gantryv1.UpdateFacilityResponse{Facility: facilityPB(f)}), nil
}

func (s *shopfloorService) ListAssets(ctx context.Context, req *connect.Request[gantryv1.ListAssetsRequest]) (*connect.Response[gantryv1.ListAssetsResponse], error) {
	as, err := s.fleet.ListAssets(ctx, CallerFrom(ctx), req.Msg.FacilityId)
	if err != nil {
		return nil, err
	}
	out := &gantryv1.ListAssetsResponse{}
	for _, a := range as {
		out.Assets = append(out.Assets, assetPB(a))
	}
	return connect.NewResponse(out), nil
}

func (s *shopfloorService) CreateAsset(ctx context.Context, req *connect.Request[gantryv1.CreateAssetRequest]) (*connect.Response[gantryv1.CreateAssetResponse], error) {
	a, err := s.fleet.CreateAsset(ctx, CallerFrom(ctx), req.Msg.FacilityId, req.Msg.Name, req.Msg.SerialNumber)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gantryv1.CreateAssetResponse{Asset: assetPB(a)}), nil
}

func (s *shopfloorService) UpdateAsset(ctx context.Context, req *connect.Request[gantryv1.UpdateAssetRequest]) (*connect.Response[gantryv1.UpdateAssetResponse], error) {
	m := req.Msg
	a, err := s.fleet.UpdateAsset(ctx, CallerFrom(ctx), m.Id, m.FacilityId, m.Name, m.SerialNumber)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gantryv1.UpdateAssetResponse{Asset: assetPB(a)}), nil
}

func (s *shopfloorService) ListAssetProposals(ctx context.Context, _ *connect.Request[gantryv1.ListAssetProposalsRequest]) (*connect.Response[gantryv1.ListAssetProposalsResponse], error) {
	ps, err := s.fleet.ListProposals(ctx, CallerFrom(ctx))
	if err != nil {
		return nil, err
	}
	out := &gantryv1.ListAssetProposalsResponse{}
	for _, p := range ps {
		out.Proposals = append(out.Proposals, proposalPB(p))
	}
	return connect.NewResponse(out), nil
}

func (s *shopfloorService) AcceptAssetProposal(ctx context.Context, req *connect.Request[gantryv1.AcceptAssetProposalRequest]) (*connect.Response[gantryv1.AcceptAssetProposalResponse], error) {
	a, err := s.fleet.AcceptProposal(ctx, CallerFrom(ctx), req.Msg.Id, req.Msg.FacilityId)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gantryv1.AcceptAssetProposalResponse{Asset: assetPB(a)}), nil
}

func (s *shopfloorService) RejectAssetProposal(ctx context.Context, req *connect.Request[gantryv1.RejectAssetProposalRequest]) (*connect.Response[gantryv1.RejectAssetProposalResponse], error) {
	if err := s.fleet.RejectProposal(ctx, CallerFrom(ctx), req.Msg.Id); err != nil {
		return nil, err
	}
	return connect.NewResponse(&gantryv1.RejectAssetProposalResponse{}), nil
}

// ---- CustomerService ----

type customerService struct{ *Server }

func (s *customerService) ListServiceOrgs(ctx context.Context, _ *connect.Request[gantryv1.ListServiceOrgsRequest]) (*connect.Response[gantryv1.ListServiceOrgsResponse], error) {
	os, err := s.fleet.ListServiceOrgs(ctx, CallerFrom(ctx))
	if err != nil {
		return nil, err
	}
	out := &gantryv1.ListServiceOrgsResponse{}
	for _, o := range os {
		out.ServiceOrgs = append(out.ServiceOrgs, &gantryv1.ServiceOrg{Id: o.ID, Name: o.Name})
	}
	return connect.NewResponse(out), nil
}

func (s *customerService) CreateServiceOrg(ctx context.Context, req *connect.Request[gantryv1.CreateServiceOrgRequest]) (*connect.Response[gantryv1.CreateServiceOrgResponse], error) {
	o, err := s.fleet.CreateServiceOrg(ctx, CallerFrom(ctx), req.Msg.Name)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gantryv1.CreateServiceOrgResponse{ServiceOrg: &gantryv1.ServiceOrg{Id: o.ID, Name: o.Name}}), nil
}

func customerPB(c store.Customer) *gantryv1.Customer {
	return &gantryv1.Customer{Id: c.ID, ServiceOrgId: c.ServiceOrgID, Name: c.Name, OperatorTenantId: c.OperatorTenantID}
}

func (s *customerService) ListCustomers(ctx context.Context, req *connect.Request[gantryv1.ListCustomersRequest]) (*connect.Response[gantryv1.ListCustomersResponse], error) {
	cs, err := s.fleet.ListCustomers(ctx, CallerFrom(ctx), req.Msg.ServiceOrgId)
	if err != nil {
		return nil, err
	}
	out := &gantryv1.ListCustomersResponse{}
	for _, c := range cs {
		out.Customers = append(out.Customers, customerPB(c))
	}
	return connect.NewResponse(out), nil
}

func (s *customerService) CreateCustomer(ctx context.Context, req *connect.Request[gantryv1.CreateCustomerRequest]) (*connect.Response[gantryv1.CreateCustomerResponse], error) {
	c, err := s.fleet.CreateCustomer(ctx, CallerFrom(ctx), req.Msg.ServiceOrgId, req.Msg.Name)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gantryv1.CreateCustomerResponse{Customer: customerPB(c)}), nil
}

func (s *customerService) InviteCustomer(ctx context.Context, req *connect.Request[gantryv1.InviteCustomerRequest]) (*connect.Response[gantryv1.InviteCustomerResponse], error) {
	t, inv, err := s.fleet.InviteCustomer(ctx, CallerFrom(ctx), req.Msg.CustomerId, req.Msg.TenantName, req.Msg.AdminEmail)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gantryv1.InviteCustomerResponse{Tenant: tenantPB(t), InvitationLink: inv.Link, InvitationToken: inv.Token}), nil
}

func machinePB(m store.CustomerMachine) *gantryv1.CustomerMachine {
	return &gantryv1.CustomerMachine{Id: m.ID, CustomerId: m.CustomerID, Name: m.Name, SerialNumber: m.SerialNumber, MachineModelId: m.MachineModelID, AssetId: m.AssetID}
}

func (s *customerService) ListCustomerMachines(ctx context.Context, req *connect.Request[gantryv1.ListCustomerMachinesRequest]) (*connect.Response[gantryv1.ListCustomerMachinesResponse], error) {
	ms, err := s.fleet.ListMachines(ctx, CallerFrom(ctx), req.Msg.CustomerId)
	if err != nil {
		return nil, err
	}
	out := &gantryv1.ListCustomerMachinesResponse{}
	for _, m := range ms {
		out.Machines = append(out.Machines, machinePB(m))
	}
	return connect.NewResponse(out), nil
}

func (s *customerService) CreateCustomerMachine(ctx context.Context, req *connect.Request[gantryv1.CreateCustomerMachineRequest]) (*connect.Response[gantryv1.CreateCustomerMachineResponse], error) {
	m := req.Msg
	cm, err := s.fleet.CreateMachine(ctx, CallerFrom(ctx), m.CustomerId, m.Name, m.SerialNumber, m.MachineModelId)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gantryv1.CreateCustomerMachineResponse{Machine: machinePB(cm)}), nil
}

func (s *customerService) ProposeAsset(ctx context.Context, req *connect.Request[gantryv1.ProposeAssetRequest]) (*connect.Response[gantryv1.ProposeAssetResponse], error) {
	p, err := s.fleet.ProposeAsset(ctx, CallerFrom(ctx), req.Msg.CustomerMachineId)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gantryv1.ProposeAssetResponse{Proposal: proposalPB(p)}), nil
}

// ---- MachineModelService ----

type modelService struct{ *Server }

func modelPB(m fleet.Model) *gantryv1.MachineModel {
	out := &gantryv1.MachineModel{Id: m.ID, Name: m.Name, CompatibleApps: m.CompatibleApps,
		RemoteAccess: &gantryv1.RemoteAccessTemplate{ConnectionTypes: m.RemoteAccess.ConnectionTypes, VncTargets: m.RemoteAccess.VNCTargets,
			DataLinkTargets: m.RemoteAccess.DataLinkTargets, MachineSubnets: m.RemoteAccess.MachineSubnets},
		Opcua: &gantryv1.OpcuaTemplate{EndpointUrl: m.OPCUA.EndpointURL, SecurityMode: m.OPCUA.SecurityMode}}
	for _, d := range m.OPCUA.DataPoints {
		out.Opcua.DataPoints = append(out.Opcua.DataPoints, &gantryv1.DataPoint{NodeId: d.NodeID, Name: d.Name, Unit: d.Unit,
			SamplingIntervalMs: d.SamplingIntervalMS, DeadbandType: d.DeadbandType, DeadbandValue: d.DeadbandValue, WarnAbove: d.WarnAbove, AlarmAbove: d.AlarmAbove,
			WarnBelow: d.WarnBelow, AlarmBelow: d.AlarmBelow, Hysteresis: d.Hysteresis, DelayMs: d.DelayMS, Role: d.Role, OpenCaseOnAlarm: d.OpenCaseOnAlarm})
	}
	return out
}

func modelFromPB(m *gantryv1.MachineModel) (fleet.Model, error) {
	if m == nil {
		return fleet.Model{}, errkind.Invalidf("model", "a model is required")
	}
	out := fleet.Model{ID: m.Id, Name: m.Name, CompatibleApps: m.CompatibleApps}
	if ra := m.RemoteAccess; ra != nil {
		out.RemoteAccess = machinemodel.RemoteAccess{ConnectionTypes: ra.ConnectionTypes, VNCTargets: ra.VncTargets, DataLinkTargets: ra.DataLinkTargets, MachineSubnets: ra.MachineSubnets}
	}
	if o := m.Opcua; o != nil {
		out.OPCUA = machinemodel.OPCUA{EndpointURL: o.EndpointUrl, SecurityMode: o.SecurityMode}
		for _, d := range o.DataPoints {
			out.OPCUA.DataPoints = append(out.OPCUA.DataPoints, machinemodel.DataPoint{NodeID: d.NodeId, Name: d.Name, Unit: d.Unit,
				SamplingIntervalMS: d.SamplingIntervalMs, DeadbandType: d.DeadbandType, DeadbandValue: d.DeadbandValue, WarnAbove: d.WarnAbove, AlarmAbove: d.AlarmAbove,
				WarnBelow: d.WarnBelow, AlarmBelow: d.AlarmBelow, Hysteresis: d.Hysteresis, DelayMS: d.DelayMs, Role: d.Role, OpenCaseOnAlarm: d.OpenCaseOnAlarm})
		}
	}
	return out, nil
}

func (s *modelService) ListMachineModels(ctx context.Context, _ *connect.Request[gantryv1.ListMachineModelsRequest]) (*connect.Response[gantryv1.ListMachineModelsResponse], error) {
	ms, err := s.fleet.ListModels(ctx, CallerFrom(ctx))
	if err != nil {
		return nil, err
	}
	out := &gantryv1.ListMachineModelsResponse{}
	for _, m := range ms {
		out.Models = append(out.Models, modelPB(m))
	}
	return connect.NewResponse(out), nil
}

func (s *modelService) GetMachineModel(ctx context.Context, req *connect.Request[gantryv1.GetMachineModelRequest]) (*connect.Response[gantryv1.GetMachineModelResponse], error) {
	m, err := s.fleet.GetModel(ctx, CallerFrom(ctx), req.Msg.Id)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gantryv1.GetMachineModelResponse{Model: modelPB(m)}), nil
}

func (s *modelService) CreateMachineModel(ctx context.Context, req *connect.Request[gantryv1.CreateMachineModelRequest]) (*connect.Response[gantryv1.CreateMachineModelResponse], error) {
	m, err := modelFromPB(req.Msg.Model)
	if err != nil {
		return nil, err
	}
	m, err = s.fleet.CreateModel(ctx, CallerFrom(ctx), m)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gantryv1.CreateMachineModelResponse{Model: modelPB(m)}), nil
}

func (s *modelService) UpdateMachineModel(ctx context.Context, req *connect.Request[gantryv1.UpdateMachineModelRequest]) (*connect.Response[gantryv1.UpdateMachineModelResponse], error) {
	m, err := modelFromPB(req.Msg.Model)
	if err != nil {
		return nil, err
	}
	m, err = s.fleet.UpdateModel(ctx, CallerFrom(ctx), m)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gantryv1.UpdateMachineModelResponse{Model: modelPB(m)}), nil
}

// ---- CaseService ----

type caseService struct{ *Server }

func casePB(v cases.View) *gantryv1.ServiceCase {
	return &gantryv1.ServiceCase{Id: v.ID, TenantId: v.TenantID, AssetId: v.AssetID, Kind: v.Kind, Title: v.Title, Description: v.Description,
		State: v.State, AssigneeId: v.AssigneeID, CreatedBy: v.CreatedBy, CreatedAt: ts(v.CreatedAt), UpdatedAt: ts(v.UpdatedAt),
		ProviderTenantId: v.ProviderTenantID, ConferenceUrl: v.ConferenceURL, TicketType: v.TicketType, Responsible: v.Responsible}
}

func chatPB(m store.ChatMessage) *gantryv1.ChatMessage {
	return &gantryv1.ChatMessage{Id: m.ID, CaseId: m.CaseID, AuthorId: m.AuthorID, AuthorName: m.AuthorName, AuthorTenantId: m.AuthorTenantID, Body: m.Body, At: ts(m.At)}
}

func (s *caseService) CreateCase(ctx context.Context, req *connect.Request[gantryv1.CreateCaseRequest]) (*connect.Response[gantryv1.CreateCaseResponse], error) {
	m := req.Msg
	v, err := s.cases.Create(ctx, CallerFrom(ctx), cases.CreateInput{AssetID: m.AssetId, Kind: m.Kind, Title: m.Title, Description: m.Description,
		TicketType: m.TicketType, Responsible: m.Responsible})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gantryv1.CreateCaseResponse{Case: casePB(v)}), nil
}

func (s *caseService) GetCase(ctx context.Context, req *connect.Request[gantryv1.GetCaseRequest]) (*connect.Response[gantryv1.GetCaseResponse], error) {
	v, err := s.cases.Get(ctx, CallerFrom(ctx), req.Msg.Id)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gantryv1.GetCaseResponse{Case: casePB(v)}), nil
}

// page tokens are base64("<unix nanos>|<id>").
func decodePageToken(tok string) (*store.CaseCursor, error) {
	if tok == "" {
		return nil, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	bad := errkind.Invalidf("page_token", "malformed page token; pass next_page_token from a previous response")
	if err != nil {
		return nil, bad
	}
	ns, id, ok := strings.Cut(string(b), "|")
	if !ok {
		return nil, bad
	}
	t, err := time.Parse(time.RFC3339Nano, ns)
	if err != nil {
		return nil, bad
	}
	return &store.CaseCursor{CreatedAt: t, ID: id}, nil
}

func encodePageToken(v cases.View) string {
	return base64.RawURLEncoding.EncodeToString([]byte(v.CreatedAt.UTC().Format(time.RFC3339Nano) + "|" + v.ID))
}

func (s *caseService) ListCases(ctx context.Context, req *connect.Request[gantryv1.ListCasesRequest]) (*connect.Response[gantryv1.ListCasesResponse], error) {
	m := req.Msg
	cur, err := decodePageToken(m.PageToken)
	if err != nil {
		return nil, err
	}
	limit := int(m.Limit)
	if limit <= 0 || limit > 500 {
		limit = 100
	}
	vs, err := s.cases.List(ctx, CallerFrom(ctx), cases.ListFilter{Kind: m.Kind, AssignedToMe: m.AssignedToMe, State: m.State, AssetID: m.AssetId, Limit: limit, Before: cur})
	if err != nil {
		return nil, err
	}
	out := &gantryv1.ListCasesResponse{}
	for _, v := range vs {
		out.Cases = append(out.Cases, casePB(v))
	}
	if len(vs) == limit {
		out.NextPageToken = encodePageToken(vs[len(vs)-1])
	}
	return connect.NewResponse(out), nil
}

func (s *caseService) UpdateCase(ctx context.Context, req *connect.Request[gantryv1.UpdateCaseRequest]) (*connect.Response[gantryv1.UpdateCaseResponse], error) {
	m := req.Msg
	v, err := s.cases.Update(ctx, CallerFrom(ctx), m.Id, m.State, m.AssigneeId, m.ClearAssignee)
	if err != nil {
		return nil, err
	}
	s.grantsChanged() // closing a case ends its grant
	return connect.NewResponse(&gantryv1.UpdateCaseResponse{Case: casePB(v)}), nil
}

func (s *caseService) PostMessage(ctx context.Context, req *connect.Request[gantryv1.PostMessageRequest]) (*connect.Response[gantryv1.PostMessageResponse], error) {
	msg, err := s.cases.Post(ctx, CallerFrom(ctx), req.Msg.CaseId, req.Msg.Body)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gantryv1.PostMessageResponse{Message: chatPB(msg)}), nil
}

func (s *caseService) ListMessages(ctx context.Context, req *connect.Request[gantryv1.ListMessagesRequest]) (*connect.Response[gantryv1.ListMessagesResponse], error) {
	ms, err := s.cases.Messages(ctx, CallerFrom(ctx), req.Msg.CaseId, int(req.Msg.Limit))
	if err != nil {
		return nil, err
	}
	out := &gantryv1.ListMessagesResponse{}
	for _, m := range ms {
		out.Messages = append(out.Messages, chatPB(m))
	}
	return connect.NewResponse(out), nil
}

func (s *caseService) StreamMessages(ctx context.Context, req *connect.Request[gantryv1.StreamMessagesRequest], stream *connect.ServerStream[gantryv1.ChatMessage]) error {
	ch, err := s.cases.Subscribe(ctx, CallerFrom(ctx), req.Msg.CaseId)
	if err != nil {
		return err
	}
	// Send(nil) flushes the response headers, so clients see the
	// subscription is live before the first message.
	if err := stream.Send(nil); err != nil {
		return err
	}
	for m := range ch {
		if err := stream.Send(chatPB(m)); err != nil {
			return err
		}
	}
	return nil
}

func externalPB(e store.ExternalUser) *gantryv1.ExternalUser {
	p := e.Profile
	return &gantryv1.ExternalUser{UserId: e.UserID, CustomerId: e.CustomerID, AddressFacilityId: p.AddressFacility, ReadFacilityIds: p.ReadFacilities,
		WriteFacilityIds: p.WriteFacilities, Contact: &gantryv1.ContactPerson{Name: p.ContactName, Email: p.ContactEmail, Phone: p.ContactPhone},
		ResponsibleUserIds: p.ResponsibleUsers, ResponsibleGroups: p.ResponsibleGroups, TicketTypes: p.TicketTypes, RestrictStatuses: p.RestrictStatuses, Statuses: p.Statuses}
}

func (s *customerService) SetExternalUser(ctx context.Context, req *connect.Request[gantryv1.SetExternalUserRequest]) (*connect.Response[gantryv1.SetExternalUserResponse], error) {
	e := req.Msg.ExternalUser
	if e == nil {
		return nil, errkind.Invalidf("external_user", "an external_user is required")
	}
	p := store.ExternalProfile{AddressFacility: e.AddressFacilityId, ReadFacilities: e.ReadFacilityIds, WriteFacilities: e.WriteFacilityIds,
		ContactName: e.Contact.GetName(), ContactEmail: e.Contact.GetEmail(), ContactPhone: e.Contact.GetPhone(),
		ResponsibleUsers: e.ResponsibleUserIds, ResponsibleGroups: e.ResponsibleGroups, TicketTypes: e.TicketTypes, RestrictStatuses: e.RestrictStatuses, Statuses: e.Statuses}
	out, err := s.fleet.SetExternalUser(ctx, CallerFrom(ctx), e.CustomerId, e.UserId, p)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gantryv1.SetExternalUserResponse{ExternalUser: externalPB(out)}), nil
}

func (s *customerService) GetExternalUser(ctx context.Context, req *connect.Request[gantryv1.GetExternalUserRequest]) (*connect.Response[gantryv1.GetExternalUserResponse], error) {
	e, err := s.fleet.GetExternalUser(ctx, CallerFrom(ctx), req.Msg.UserId)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gantryv1.GetExternalUserResponse{ExternalUser: externalPB(e)}), nil
}

func contractPB(c store.ServiceContract) *gantryv1.ServiceContract {
	return &gantryv1.ServiceContract{Id: c.ID, CustomerId: c.CustomerID, Name: c.Name, StartDate: c.StartDate, EndDate: c.EndDate, Terms: c.Terms}
}

func (s *customerService) ListServiceContracts(ctx context.Context, req *connect.Request[gantryv1.ListServiceContractsRequest]) (*connect.Response[gantryv1.ListServiceContractsResponse], error) {
	cs, err := s.fleet.ListContracts(ctx, CallerFrom(ctx), req.Msg.CustomerId)
	if err != nil {
		return nil, err
	}
	out := &gantryv1.ListServiceContractsResponse{}
	for _, c := range cs {
		out.Contracts = append(out.Contracts, contractPB(c))
	}
	return connect.NewResponse(out), nil
}

func (s *customerService) CreateServiceContract(ctx context.Context, req *connect.Request[gantryv1.CreateServiceContractRequest]) (*connect.Response[gantryv1.CreateServiceContractResponse], error) {
	c := req.Msg.Contract
	if c == nil {
		return nil, errkind.Invalidf("contract", "a contract is required")
	}
	out, err := s.fleet.CreateContract(ctx, CallerFrom(ctx), store.ServiceContract{CustomerID: c.CustomerId, Name: c.Name, StartDate: c.StartDate, EndDate: c.EndDate, Terms: c.Terms})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&gantryv1.CreateServiceContractResponse{Contract: contractPB(out)}), nil
}
