package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/timestamppb"
)

var domainCommands = map[string]command{
	"documents":  sub(docCommands),
	"facilities": sub(map[string]command{"list": cmdFacilitiesList, "create": cmdFacilityCreate, "rename": cmdFacilityRename}),
	"assets":     sub(map[string]command{"list": cmdAssetsList, "create": cmdAssetCreate, "update": cmdAssetUpdate}),
	"proposals":  sub(map[string]command{"list": cmdProposalsList, "accept": cmdProposalAccept, "reject": cmdProposalReject}),
	"customers":  sub(map[string]command{"orgs": cmdOrgsList, "create-org": cmdOrgCreate, "list": cmdCustomersList, "create": cmdCustomerCreate, "invite": cmdCustomerInvite, "machines": cmdMachinesList, "add-machine": cmdMachineCreate, "propose": cmdPropose, "contracts": cmdContracts, "add-contract": cmdAddContract, "set-external": cmdSetExternal}),
	"models":     sub(map[string]command{"list": cmdModelsList, "show": cmdModelShow, "apply": cmdModelApply}),
	"devices":    sub(map[string]command{"list": cmdDevicesList, "get": cmdDeviceGet, "create": cmdDeviceCreate, "link": cmdDeviceLink, "enroll-token": cmdEnrollToken, "command": cmdDeviceCommand, "values": cmdDeviceValues, "browse": cmdDeviceBrowse}),
	"remote":     sub(map[string]command{"show": cmdRemoteShow, "activate": cmdRemoteActivate, "deactivate": cmdRemoteDeactivate, "request": cmdRemoteRequest, "decide": cmdRemoteDecide}),
	"vnc":        cmdVNC,
	"tunnel":     cmdTunnel,
	"ssc":        cmdSSC,
	"cases":      sub(map[string]command{"list": cmdCasesList, "create": cmdCaseCreate, "show": cmdCaseShow, "update": cmdCaseUpdate, "chat": cmdChat, "say": cmdSay}),
}

func cmdFacilitiesList(ctx context.Context, e *env, _ []string) error {
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewShopfloorServiceClient(e.conn).ListFacilities(actx, &gantryv1.ListFacilitiesRequest{})
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) {
		fmt.Fprintln(w, "ID\tNAME")
		for _, f := range r.Facilities {
			fmt.Fprintf(w, "%s\t%s\n", f.Id, f.Name)
		}
	})
}

func cmdFacilityCreate(ctx context.Context, e *env, args []string) error {
	fs := flags(e, "facilities create")
	name := fs.String("name", "", "facility name")
	if err := fs.Parse(args); err != nil {
		return err
	}
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewShopfloorServiceClient(e.conn).CreateFacility(actx, &gantryv1.CreateFacilityRequest{Name: *name})
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "created facility %s (%s)\n", r.Facility.Name, r.Facility.Id)
	})
}

func cmdFacilityRename(ctx context.Context, e *env, args []string) error {
	fs := flags(e, "facilities rename")
	name := fs.String("name", "", "new facility name")
	id, err := oneArg(fs, args, "FACILITY_ID")
	if err != nil {
		return err
	}
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewShopfloorServiceClient(e.conn).UpdateFacility(actx, &gantryv1.UpdateFacilityRequest{Id: id, Name: *name})
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "renamed facility %s to %s\n", r.Facility.Id, r.Facility.Name)
	})
}

func cmdAssetsList(ctx context.Context, e *env, args []string) error {
	fs := flags(e, "assets list")
	facility := fs.String("facility", "", "only assets of this facility ID")
	if err := fs.Parse(args); err != nil {
		return err
	}
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewShopfloorServiceClient(e.conn).ListAssets(actx, &gantryv1.ListAssetsRequest{FacilityId: *facility})
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) {
		fmt.Fprintln(w, "ID\tNAME\tFACILITY\tSERIAL\tPROVIDER")
		for _, a := range r.Assets {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", a.Id, a.Name, a.FacilityId, a.SerialNumber, a.ProviderTenantId)
		}
	})
}

func cmdAssetCreate(ctx context.Context, e *env, args []string) error {
	fs := flags(e, "assets create")
	req := &gantryv1.CreateAssetRequest{}
	fs.StringVar(&req.FacilityId, "facility", "", "facility ID")
	fs.StringVar(&req.Name, "name", "", "asset name")
	fs.StringVar(&req.SerialNumber, "serial", "", "serial number")
	if err := fs.Parse(args); err != nil {
		return err
	}
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewShopfloorServiceClient(e.conn).CreateAsset(actx, req)
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) { fmt.Fprintf(w, "created asset %s (%s)\n", r.Asset.Name, r.Asset.Id) })
}

func cmdAssetUpdate(ctx context.Context, e *env, args []string) error {
	fs := flags(e, "assets update")
	req := &gantryv1.UpdateAssetRequest{}
	fs.StringVar(&req.FacilityId, "facility", "", "move the asset to this facility ID (default: keep)")
	fs.StringVar(&req.Name, "name", "", "asset name")
	fs.StringVar(&req.SerialNumber, "serial", "", "serial number")
	id, err := oneArg(fs, args, "ASSET_ID")
	if err != nil {
		return err
	}
	req.Id = id
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewShopfloorServiceClient(e.conn).UpdateAsset(actx, req)
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "updated asset %s: %s, serial %q, facility %s\n", r.Asset.Id, r.Asset.Name, r.Asset.SerialNumber, r.Asset.FacilityId)
	})
}

func cmdProposalsList(ctx context.Context, e *env, _ []string) error {
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewShopfloorServiceClient(e.conn).ListAssetProposals(actx, &gantryv1.ListAssetProposalsRequest{})
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) {
		fmt.Fprintln(w, "ID\tMACHINE\tSERIAL\tSTATE\tPROVIDER")
		for _, p := range r.Proposals {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", p.Id, p.Name, p.SerialNumber, p.State, p.ProviderTenantId)
		}
	})
}

func cmdProposalAccept(ctx context.Context, e *env, args []string) error {
	fs := flags(e, "proposals accept")
	facility := fs.String("facility", "", "facility ID to place the asset in")
	id, err := oneArg(fs, args, "PROPOSAL_ID")
	if err != nil {
		return err
	}
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewShopfloorServiceClient(e.conn).AcceptAssetProposal(actx, &gantryv1.AcceptAssetProposalRequest{Id: id, FacilityId: *facility})
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) { fmt.Fprintf(w, "accepted: asset %s (%s)\n", r.Asset.Name, r.Asset.Id) })
}

func cmdProposalReject(ctx context.Context, e *env, args []string) error {
	id, err := oneArg(flags(e, "proposals reject"), args, "PROPOSAL_ID")
	if err != nil {
		return err
	}
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewShopfloorServiceClient(e.conn).RejectAssetProposal(actx, &gantryv1.RejectAssetProposalRequest{Id: id})
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) { fmt.Fprintf(w, "rejected %s\n", id) })
}

func cmdOrgsList(ctx context.Context, e *env, _ []string) error {
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewCustomerServiceClient(e.conn).ListServiceOrgs(actx, &gantryv1.ListServiceOrgsRequest{})
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) {
		fmt.Fprintln(w, "ID\tNAME")
		for _, o := range r.ServiceOrgs {
			fmt.Fprintf(w, "%s\t%s\n", o.Id, o.Name)
		}
	})
}

func cmdOrgCreate(ctx context.Context, e *env, args []string) error {
	fs := flags(e, "customers create-org")
	name := fs.String("name", "", "service organisation name")
	if err := fs.Parse(args); err != nil {
		return err
	}
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewCustomerServiceClient(e.conn).CreateServiceOrg(actx, &gantryv1.CreateServiceOrgRequest{Name: *name})
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) { fmt.Fprintf(w, "created %s (%s)\n", r.ServiceOrg.Name, r.ServiceOrg.Id) })
}

func cmdCustomersList(ctx context.Context, e *env, args []string) error {
	fs := flags(e, "customers list")
	org := fs.String("org", "", "only customers of this service organisation ID")
	if err := fs.Parse(args); err != nil {
		return err
	}
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewCustomerServiceClient(e.conn).ListCustomers(actx, &gantryv1.ListCustomersRequest{ServiceOrgId: *org})
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) {
		fmt.Fprintln(w, "ID\tNAME\tORG\tOPERATOR TENANT")
		for _, c := range r.Customers {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", c.Id, c.Name, c.ServiceOrgId, c.OperatorTenantId)
		}
	})
}

func cmdCustomerCreate(ctx context.Context, e *env, args []string) error {
	fs := flags(e, "customers create")
	req := &gantryv1.CreateCustomerRequest{}
	fs.StringVar(&req.ServiceOrgId, "org", "", "service organisation ID")
	fs.StringVar(&req.Name, "name", "", "customer name")
	if err := fs.Parse(args); err != nil {
		return err
	}
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewCustomerServiceClient(e.conn).CreateCustomer(actx, req)
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "created customer %s (%s)\n", r.Customer.Name, r.Customer.Id)
	})
}

func cmdCustomerInvite(ctx context.Context, e *env, args []string) error {
	fs := flags(e, "customers invite")
	req := &gantryv1.InviteCustomerRequest{}
	fs.StringVar(&req.AdminEmail, "admin-email", "", "e-mail of the customer's first user (becomes Tenant Admin)")
	fs.StringVar(&req.TenantName, "tenant-name", "", "name of the new operator tenant (default: the customer's name)")
	id, err := oneArg(fs, args, "CUSTOMER_ID")
	if err != nil {
		return err
	}
	req.CustomerId = id
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewCustomerServiceClient(e.conn).InviteCustomer(actx, req)
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "tenant\t%s (%s)\ninvitation link\t%s\n", r.Tenant.Name, r.Tenant.Id, r.InvitationLink)
	})
}

func cmdMachinesList(ctx context.Context, e *env, args []string) error {
	fs := flags(e, "customers machines")
	customer := fs.String("customer", "", "only machines of this customer ID")
	if err := fs.Parse(args); err != nil {
		return err
	}
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewCustomerServiceClient(e.conn).ListCustomerMachines(actx, &gantryv1.ListCustomerMachinesRequest{CustomerId: *customer})
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) {
		fmt.Fprintln(w, "ID\tNAME\tCUSTOMER\tMODEL\tASSET")
		for _, m := range r.Machines {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", m.Id, m.Name, m.CustomerId, m.MachineModelId, m.AssetId)
		}
	})
}

func cmdMachineCreate(ctx context.Context, e *env, args []string) error {
	fs := flags(e, "customers add-machine")
	req := &gantryv1.CreateCustomerMachineRequest{}
	fs.StringVar(&req.CustomerId, "customer", "", "customer ID")
	fs.StringVar(&req.Name, "name", "", "machine name")
	fs.StringVar(&req.SerialNumber, "serial", "", "serial number")
	fs.StringVar(&req.MachineModelId, "model", "", "machine model ID")
	if err := fs.Parse(args); err != nil {
		return err
	}
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewCustomerServiceClient(e.conn).CreateCustomerMachine(actx, req)
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) { fmt.Fprintf(w, "created machine %s (%s)\n", r.Machine.Name, r.Machine.Id) })
}

func cmdPropose(ctx context.Context, e *env, args []string) error {
	id, err := oneArg(flags(e, "customers propose"), args, "CUSTOMER_MACHINE_ID")
	if err != nil {
		return err
	}
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewCustomerServiceClient(e.conn).ProposeAsset(actx, &gantryv1.ProposeAssetRequest{CustomerMachineId: id})
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "proposed (%s); the customer's Workshop Manager accepts it\n", r.Proposal.Id)
	})
}

func cmdModelsList(ctx context.Context, e *env, _ []string) error {
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewMachineModelServiceClient(e.conn).ListMachineModels(actx, &gantryv1.ListMachineModelsRequest{})
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) {
		fmt.Fprintln(w, "ID\tNAME\tCONNECTIONS\tDATA POINTS")
		for _, m := range r.Models {
			fmt.Fprintf(w, "%s\t%s\t%s\t%d\n", m.Id, m.Name, strings.Join(m.RemoteAccess.GetConnectionTypes(), ","), len(m.Opcua.GetDataPoints()))
		}
	})
}

func cmdModelShow(ctx context.Context, e *env, args []string) error {
	id, err := oneArg(flags(e, "models show"), args, "MODEL_ID")
	if err != nil {
		return err
	}
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewMachineModelServiceClient(e.conn).GetMachineModel(actx, &gantryv1.GetMachineModelRequest{Id: id})
	if err != nil {
		return err
	}
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  ", UseProtoNames: true}.Marshal(r.Model)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(e.stdout, string(b))
	return err
}

// cmdModelApply creates or updates a machine model from a JSON file in the
// format 'models show' prints (with "id" to update).
func cmdModelApply(ctx context.Context, e *env, args []string) error {
	fs := flags(e, "models apply")
	file := fs.String("f", "", "JSON file with the model (as printed by 'models show')")
	if err := fs.Parse(args); err != nil {
		return err
	}
	b, err := os.ReadFile(*file)
	if err != nil {
		return fmt.Errorf("models apply: %w", err)
	}
	var m gantryv1.MachineModel
	if err := protojson.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("models apply %s: %w", *file, err)
	}
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	c := gantryv1.NewMachineModelServiceClient(e.conn)
	if m.Id == "" {
		r, err := c.CreateMachineModel(actx, &gantryv1.CreateMachineModelRequest{Model: &m})
		if err != nil {
			return err
		}
		return e.print(r, func(w *tabwriter.Writer) { fmt.Fprintf(w, "created model %s (%s)\n", r.Model.Name, r.Model.Id) })
	}
	r, err := c.UpdateMachineModel(actx, &gantryv1.UpdateMachineModelRequest{Model: &m})
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) { fmt.Fprintf(w, "updated model %s\n", r.Model.Name) })
}

func cmdCasesList(ctx context.Context, e *env, args []string) error {
	fs := flags(e, "cases list")
	req := &gantryv1.ListCasesRequest{}
	fs.StringVar(&req.Kind, "kind", "", "internal or shared")
	fs.BoolVar(&req.AssignedToMe, "mine", false, "only cases assigned to me (with --kind internal: My Internal Service Cases)")
	fs.StringVar(&req.State, "state", "", "new, in_progress or closed")
	fs.StringVar(&req.AssetId, "asset", "", "only cases of this asset ID")
	if err := fs.Parse(args); err != nil {
		return err
	}
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewCaseServiceClient(e.conn).ListCases(actx, req)
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) {
		fmt.Fprintln(w, "ID\tKIND\tSTATE\tTITLE\tASSET\tASSIGNEE")
		for _, c := range r.Cases {
			kind := c.Kind
			if kind == "internal" {
				kind = "INTERNAL"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", c.Id, kind, c.State, c.Title, c.AssetId, c.AssigneeId)
		}
	})
}

func cmdCaseCreate(ctx context.Context, e *env, args []string) error {
	fs := flags(e, "cases create")
	req := &gantryv1.CreateCaseRequest{}
	fs.StringVar(&req.AssetId, "asset", "", "asset ID")
	fs.StringVar(&req.Kind, "kind", "", "internal or shared")
	fs.StringVar(&req.Title, "title", "", "title")
	fs.StringVar(&req.Description, "description", "", "description")
	if err := fs.Parse(args); err != nil {
		return err
	}
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewCaseServiceClient(e.conn).CreateCase(actx, req)
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) { fmt.Fprintf(w, "opened %s case %s\n", r.Case.Kind, r.Case.Id) })
}

func cmdCaseShow(ctx context.Context, e *env, args []string) error {
	id, err := oneArg(flags(e, "cases show"), args, "CASE_ID")
	if err != nil {
		return err
	}
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewCaseServiceClient(e.conn).GetCase(actx, &gantryv1.GetCaseRequest{Id: id})
	if err != nil {
		return err
	}
	c := r.Case
	return e.print(r, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "id\t%s\ntitle\t%s\nkind\t%s\nstate\t%s\nasset\t%s\nassignee\t%s\nconference\t%s\ndescription\t%s\n",
			c.Id, c.Title, c.Kind, c.State, c.AssetId, c.AssigneeId, c.ConferenceUrl, c.Description)
	})
}

func cmdCaseUpdate(ctx context.Context, e *env, args []string) error {
	fs := flags(e, "cases update")
	req := &gantryv1.UpdateCaseRequest{}
	fs.StringVar(&req.State, "state", "", "new state: in_progress or closed (closed → in_progress reopens)")
	fs.StringVar(&req.AssigneeId, "assignee", "", "user ID of a Maintenance Engineer")
	fs.BoolVar(&req.ClearAssignee, "unassign", false, "remove the assignee")
	id, err := oneArg(fs, args, "CASE_ID")
	if err != nil {
		return err
	}
	req.Id = id
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewCaseServiceClient(e.conn).UpdateCase(actx, req)
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "case %s: %s, assignee %q\n", r.Case.Id, r.Case.State, r.Case.AssigneeId)
	})
}

func cmdChat(ctx context.Context, e *env, args []string) error {
	fs := flags(e, "cases chat")
	follow := fs.Bool("follow", false, "keep streaming new messages")
	id, err := oneArg(fs, args, "CASE_ID")
	if err != nil {
		return err
	}
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	c := gantryv1.NewCaseServiceClient(e.conn)
	r, err := c.ListMessages(actx, &gantryv1.ListMessagesRequest{CaseId: id})
	if err != nil {
		return err
	}
	for _, m := range r.Messages {
		fmt.Fprintf(e.stdout, "%s  %s: %s\n", m.At.AsTime().Local().Format("15:04"), m.AuthorName, m.Body)
	}
	if !*follow {
		return nil
	}
	st, err := c.StreamMessages(actx, &gantryv1.StreamMessagesRequest{CaseId: id})
	if err != nil {
		return err
	}
	for {
		m, err := st.Recv()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		fmt.Fprintf(e.stdout, "%s  %s: %s\n", m.At.AsTime().Local().Format("15:04"), m.AuthorName, m.Body)
	}
}

func cmdSay(ctx context.Context, e *env, args []string) error {
	fs := flags(e, "cases say")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) < 2 {
		return fmt.Errorf("cases say: give CASE_ID and the message")
	}
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewCaseServiceClient(e.conn).PostMessage(actx, &gantryv1.PostMessageRequest{CaseId: pos[0], Body: strings.Join(pos[1:], " ")})
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) { fmt.Fprintf(w, "posted %s\n", r.Message.Id) })
}

func cmdDevicesList(ctx context.Context, e *env, _ []string) error {
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewDeviceServiceClient(e.conn).ListDevices(actx, &gantryv1.ListDevicesRequest{})
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) {
		fmt.Fprintln(w, "ID\tNAME\tSERIAL\tONLINE\tENROLLED\tMACHINE\tASSET")
		for _, d := range r.Devices {
			fmt.Fprintf(w, "%s\t%s\t%s\t%v\t%v\t%s\t%s\n", d.Id, d.Name, d.SerialNumber, d.Online, d.Enrolled, d.CustomerMachineId, d.AssetId)
		}
	})
}

func cmdDeviceGet(ctx context.Context, e *env, args []string) error {
	id, err := oneArg(flags(e, "devices get"), args, "DEVICE_ID")
	if err != nil {
		return err
	}
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewDeviceServiceClient(e.conn).GetDevice(actx, &gantryv1.GetDeviceRequest{Id: id})
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) { writeDevice(w, r.Device) })
}

// writeDevice prints one device with the state of its OPC-UA template.
func writeDevice(w io.Writer, d *gantryv1.EdgeDevice) {
	fmt.Fprintf(w, "ID\t%s\nNAME\t%s\nSERIAL\t%s\n", d.Id, d.Name, d.SerialNumber)
	online := "no"
	if d.Online {
		online = "yes"
	}
	if d.LastSeen != nil {
		online += ", last seen " + stampText(d.LastSeen)
	}
	fmt.Fprintf(w, "ONLINE\t%s\nENROLLED\t%v\n", online, d.Enrolled)
	fmt.Fprintf(w, "MACHINE\t%s\nASSET\t%s\n", orDash(d.CustomerMachineId), orDash(d.AssetId))
	if d.AgentVersion != "" {
		fmt.Fprintf(w, "AGENT\t%s\n", d.AgentVersion)
	}
	t := d.Template
	if t == nil { // operators do not see template delivery
		return
	}
	if t.State == "none" || t.Version == 0 {
		fmt.Fprintf(w, "TEMPLATE\tnone delivered yet\n")
		return
	}
	model := "none (empty template: collection stopped)"
	switch {
	case t.MachineModelName != "":
		model = t.MachineModelName + " (" + t.MachineModelId + ")"
	case t.MachineModelId != "":
		model = t.MachineModelId
	}
	fmt.Fprintf(w, "TEMPLATE MODEL\t%s\n", model)
	fmt.Fprintf(w, "TEMPLATE VERSION\tv%d, hash %s\n", t.Version, shortHash(t.Hash))
	state := t.State
	switch t.State {
	case "pending":
		state = "pending: sent " + stampText(t.SentAt) + ", no answer yet"
	case "applied":
		state = "applied: sent " + stampText(t.SentAt) + ", acked " + stampText(t.AckedAt)
	case "error":
		state = "refused by the agent: sent " + stampText(t.SentAt) + ", answered " + stampText(t.AckedAt)
	}
	fmt.Fprintf(w, "TEMPLATE STATE\t%s\n", state)
	if t.AppliedVersion != t.Version {
		running := "none"
		if t.AppliedVersion != 0 {
			running = fmt.Sprintf("v%d", t.AppliedVersion)
		}
		fmt.Fprintf(w, "TEMPLATE RUNNING\t%s\n", running)
	}
	if t.Error != "" {
		fmt.Fprintf(w, "TEMPLATE ERROR\t%s\n", t.Error)
	}
}

// shortHash is the first 12 hex digits of a template hash.
func shortHash(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

func stampText(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	return ts.AsTime().Local().Format("2006-01-02 15:04:05")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func cmdDeviceCreate(ctx context.Context, e *env, args []string) error {
	fs := flags(e, "devices create")
	req := &gantryv1.CreateDeviceRequest{}
	fs.StringVar(&req.Name, "name", "", "device name")
	fs.StringVar(&req.SerialNumber, "serial", "", "serial number (unique per provider)")
	fs.StringVar(&req.Model, "model", "", "hardware model")
	if err := fs.Parse(args); err != nil {
		return err
	}
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewDeviceServiceClient(e.conn).CreateDevice(actx, req)
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) { fmt.Fprintf(w, "registered device %s (%s)\n", r.Device.Name, r.Device.Id) })
}

func cmdDeviceLink(ctx context.Context, e *env, args []string) error {
	fs := flags(e, "devices link")
	machine := fs.String("machine", "", "customer machine ID (empty: unlink)")
	id, err := oneArg(fs, args, "DEVICE_ID")
	if err != nil {
		return err
	}
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewDeviceServiceClient(e.conn).LinkDevice(actx, &gantryv1.LinkDeviceRequest{Id: id, CustomerMachineId: *machine})
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "device %s linked to machine %q\n", r.Device.Id, r.Device.CustomerMachineId)
	})
}

func cmdEnrollToken(ctx context.Context, e *env, args []string) error {
	fs := flags(e, "devices enroll-token")
	ttl := fs.Duration("ttl", 0, "validity (default 1h, at most 168h)")
	id, err := oneArg(fs, args, "DEVICE_ID")
	if err != nil {
		return err
	}
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewDeviceServiceClient(e.conn).CreateEnrollmentToken(actx, &gantryv1.CreateEnrollmentTokenRequest{DeviceId: id, TtlSeconds: uint32(ttl.Seconds())})
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "expires\t%s\nrun on the device\t%s\n", r.ExpiresAt.AsTime().Local().Format("2006-01-02 15:04"), r.Command)
	})
}

func cmdDeviceCommand(ctx context.Context, e *env, args []string) error {
	fs := flags(e, "devices command")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for the acknowledgement (at most 60s)")
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return fmt.Errorf("devices command: give DEVICE_ID and one of ping, reload_config, restart_collector")
	}
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewDeviceServiceClient(e.conn).SendCommand(actx, &gantryv1.SendCommandRequest{DeviceId: pos[0], Command: pos[1], TimeoutSeconds: uint32(timeout.Seconds())})
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) {
		if r.Ok {
			fmt.Fprintf(w, "%s: ok (%d ms)\n", pos[1], r.RoundTripMs)
		} else {
			fmt.Fprintf(w, "%s: failed on the device: %s\n", pos[1], r.Error)
		}
	})
}

func cmdContracts(ctx context.Context, e *env, args []string) error {
	id, err := oneArg(flags(e, "customers contracts"), args, "CUSTOMER_ID")
	if err != nil {
		return err
	}
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewCustomerServiceClient(e.conn).ListServiceContracts(actx, &gantryv1.ListServiceContractsRequest{CustomerId: id})
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) {
		fmt.Fprintln(w, "ID\tNAME\tSTART\tEND")
		for _, c := range r.Contracts {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", c.Id, c.Name, c.StartDate, c.EndDate)
		}
	})
}

func cmdAddContract(ctx context.Context, e *env, args []string) error {
	fs := flags(e, "customers add-contract")
	c := &gantryv1.ServiceContract{}
	fs.StringVar(&c.CustomerId, "customer", "", "customer ID")
	fs.StringVar(&c.Name, "name", "", "contract name")
	fs.StringVar(&c.StartDate, "start", "", "start date YYYY-MM-DD")
	fs.StringVar(&c.EndDate, "end", "", "end date YYYY-MM-DD (optional)")
	fs.StringVar(&c.Terms, "terms", "", "terms (optional)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewCustomerServiceClient(e.conn).CreateServiceContract(actx, &gantryv1.CreateServiceContractRequest{Contract: c})
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "created contract %s (%s)\n", r.Contract.Name, r.Contract.Id)
	})
}

// cmdSetExternal applies an external-user profile from a JSON file (the
// gantry.v1.ExternalUser message).
func cmdSetExternal(ctx context.Context, e *env, args []string) error {
	fs := flags(e, "customers set-external")
	file := fs.String("f", "", "JSON file with the external user (user_id, customer_id, address_facility_id, read_facility_ids, write_facility_ids, contact, responsible_user_ids, responsible_groups, ticket_types, restrict_statuses, statuses)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	b, err := os.ReadFile(*file)
	if err != nil {
		return fmt.Errorf("customers set-external: %w", err)
	}
	var x gantryv1.ExternalUser
	if err := protojson.Unmarshal(b, &x); err != nil {
		return fmt.Errorf("customers set-external %s: %w", *file, err)
	}
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewCustomerServiceClient(e.conn).SetExternalUser(actx, &gantryv1.SetExternalUserRequest{ExternalUser: &x})
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) { fmt.Fprintf(w, "external user %s restricted\n", r.ExternalUser.UserId) })
}

var docCommands = map[string]command{
	"list": func(ctx context.Context, e *env, args []string) error {
		fs := flags(e, "documents list")
		kind := fs.String("owner-kind", "asset", "asset or machine_model")
		owner := fs.String("owner", "", "asset or machine model ID")
		if err := fs.Parse(args); err != nil {
			return err
		}
		actx, err := e.client(ctx)
		if err != nil {
			return err
		}
		r, err := gantryv1.NewDocumentServiceClient(e.conn).ListDocuments(actx, &gantryv1.ListDocumentsRequest{OwnerKind: *kind, OwnerId: *owner})
		if err != nil {
			return err
		}
		return e.print(r, func(w *tabwriter.Writer) {
			fmt.Fprintln(w, "ID\tNAME\tTYPE\tSIZE")
			for _, d := range r.Documents {
				fmt.Fprintf(w, "%s\t%s\t%s\t%d\n", d.Id, d.Name, d.ContentType, d.Size)
			}
		})
	},
	"upload": func(ctx context.Context, e *env, args []string) error {
		fs := flags(e, "documents upload")
		kind := fs.String("owner-kind", "asset", "asset or machine_model")
		owner := fs.String("owner", "", "asset or machine model ID")
		ct := fs.String("type", "", "content type: application/pdf, image/png, image/jpeg, text/plain, text/csv or application/zip")
		file, err := oneArg(fs, args, "FILE")
		if err != nil {
			return err
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		actx, err := e.client(ctx)
		if err != nil {
			return err
		}
		r, err := gantryv1.NewDocumentServiceClient(e.conn).UploadDocument(actx, &gantryv1.UploadDocumentRequest{OwnerKind: *kind, OwnerId: *owner,
			Name: filepath.Base(file), ContentType: *ct, Content: b}, grpc.MaxCallSendMsgSize(16<<20))
		if err != nil {
			return err
		}
		return e.print(r, func(w *tabwriter.Writer) {
			fmt.Fprintf(w, "uploaded %s (%s, %d bytes)\n", r.Document.Name, r.Document.Id, r.Document.Size)
		})
	},
	"get": func(ctx context.Context, e *env, args []string) error {
		fs := flags(e, "documents get")
		out := fs.String("o", "", "output file (default: the document's name)")
		id, err := oneArg(fs, args, "DOCUMENT_ID")
		if err != nil {
			return err
		}
		actx, err := e.client(ctx)
		if err != nil {
			return err
		}
		r, err := gantryv1.NewDocumentServiceClient(e.conn).GetDocument(actx, &gantryv1.GetDocumentRequest{Id: id}, grpc.MaxCallRecvMsgSize(16<<20))
		if err != nil {
			return err
		}
		name := *out
		if name == "" {
			name = filepath.Base(r.Document.Name)
		}
		if err := os.WriteFile(name, r.Content, 0o644); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "saved %s (%d bytes)\n", name, len(r.Content))
		return nil
	},
}

func cmdDeviceValues(ctx context.Context, e *env, args []string) error {
	id, err := oneArg(flags(e, "devices values"), args, "DEVICE_ID")
	if err != nil {
		return err
	}
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewDeviceServiceClient(e.conn).GetLatestValues(actx, &gantryv1.GetLatestValuesRequest{DeviceId: id})
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) {
		fmt.Fprintln(w, "POINT\tVALUE\tSTATUS\tAT")
		for _, v := range r.Values {
			fmt.Fprintf(w, "%s\t%g\t%d\t%s\n", v.Point, v.Value, v.Status, v.At.AsTime().Local().Format("15:04:05"))
		}
	})
}

func cmdDeviceBrowse(ctx context.Context, e *env, args []string) error {
	fs := flags(e, "devices browse")
	endpoint := fs.String("endpoint", "", "OPC-UA endpoint opc.tcp://host:port (default: the agent's template endpoint)")
	node := fs.String("node", "", "start node, e.g. ns=2;s=Machine1 (default: the Objects folder)")
	depth := fs.Uint("depth", 3, "how many levels to follow (at most 10)")
	max := fs.Uint("max", 1000, "at most this many nodes (at most 5000)")
	id, err := oneArg(fs, args, "DEVICE_ID")
	if err != nil {
		return err
	}
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewDeviceServiceClient(e.conn).BrowseDevice(actx, &gantryv1.BrowseDeviceRequest{DeviceId: id, EndpointUrl: *endpoint, NodeId: *node, MaxDepth: uint32(*depth), MaxNodes: uint32(*max)})
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) {
		fmt.Fprintln(w, "NODE ID\tCLASS\tNAME")
		for _, n := range r.Nodes {
			fmt.Fprintf(w, "%s%s\t%s\t%s\n", strings.Repeat("  ", int(n.Depth)-1), n.NodeId, strings.TrimPrefix(n.NodeClass, "NodeClass"), n.DisplayName)
		}
		if r.Truncated {
			fmt.Fprintln(w, "(truncated: raise --depth or --max, or start from a deeper --node)")
		}
	})
}
