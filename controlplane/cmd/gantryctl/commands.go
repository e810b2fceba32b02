package main

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"

	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
)

type command func(ctx context.Context, e *env, args []string) error

var commands = map[string]command{
	"login":        cmdLogin,
	"logout":       cmdLogout,
	"whoami":       cmdWhoAmI,
	"tenant":       sub(map[string]command{"show": cmdTenantShow, "update": cmdTenantUpdate}),
	"users":        sub(map[string]command{"list": cmdUsersList, "invite": cmdUsersInvite, "invitations": cmdInvitations, "accept": cmdAccept, "register": cmdRegister, "verify": cmdVerify, "delete": cmdUsersDelete}),
	"roles":        sub(map[string]command{"list": cmdRolesList, "assign": cmdRolesAssign, "revoke": cmdRolesRevoke, "assignments": cmdAssignments}),
	"custom-roles": sub(map[string]command{"create": cmdCustomCreate, "delete": cmdCustomDelete}),
	"audit":        cmdAudit,
}

// lookup finds a top-level command.
func lookup(name string) (command, bool) {
	if c, ok := commands[name]; ok {
		return c, true
	}
	c, ok := domainCommands[name]
	return c, ok
}

func sub(m map[string]command) command {
	return func(ctx context.Context, e *env, args []string) error {
		if len(args) == 0 {
			names := make([]string, 0, len(m))
			for k := range m {
				names = append(names, k)
			}
			return fmt.Errorf("missing subcommand; one of: %s (see 'gantryctl help')", strings.Join(names, ", "))
		}
		c, ok := m[args[0]]
		if !ok {
			return fmt.Errorf("unknown subcommand %q (see 'gantryctl help')", args[0])
		}
		return c(ctx, e, args[1:])
	}
}

func flags(e *env, name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	return fs
}

// parseArgs parses flags that may come before or after positional
// arguments (the flag package alone stops at the first positional one)
// and returns the positional arguments.
func parseArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// oneArg parses flags and requires exactly one positional argument.
func oneArg(fs *flag.FlagSet, args []string, what string) (string, error) {
	pos, err := parseArgs(fs, args)
	if err != nil {
		return "", err
	}
	if len(pos) != 1 {
		return "", fmt.Errorf("%s: give exactly one %s", fs.Name(), what)
	}
	return pos[0], nil
}

func cmdLogin(ctx context.Context, e *env, args []string) error {
	fs := flags(e, "login")
	email := fs.String("email", "", "your e-mail address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *email == "" {
		return fmt.Errorf("login: --email is required")
	}
	pw, err := e.password("Password: ")
	if err != nil {
		return err
	}
	conn, err := e.dial()
	if err != nil {
		return err
	}
	resp, err := gantryv1.NewSessionServiceClient(conn).Login(ctx, &gantryv1.LoginRequest{Email: *email, Password: pw})
	if err != nil {
		return err
	}
	if err := saveSession(session{Server: e.g.server, Token: resp.Token}); err != nil {
		return fmt.Errorf("save session: %w", err)
	}
	fmt.Fprintf(e.stdout, "Logged in as %s until %s\n", resp.User.GetEmail(), resp.ExpiresAt.AsTime().Local().Format("2006-01-02 15:04"))
	return nil
}

func cmdLogout(ctx context.Context, e *env, _ []string) error {
	actx, err := e.authed(ctx)
	if err != nil {
		return err
	}
	conn, err := e.dial()
	if err != nil {
		return err
	}
	if _, err := gantryv1.NewSessionServiceClient(conn).Logout(actx, &gantryv1.LogoutRequest{}); err != nil {
		return err
	}
	p, _ := sessionPath()
	_ = saveSession(session{})
	fmt.Fprintf(e.stdout, "Logged out (%s cleared)\n", p)
	return nil
}

// client dials with the saved session.
func (e *env) client(ctx context.Context) (context.Context, error) {
	actx, err := e.authed(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := e.dial(); err != nil {
		return nil, err
	}
	return actx, nil
}

func cmdWhoAmI(ctx context.Context, e *env, _ []string) error {
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewSessionServiceClient(e.conn).WhoAmI(actx, &gantryv1.WhoAmIRequest{})
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "user\t%s (%s)\n", r.User.Email, r.User.Id)
		fmt.Fprintf(w, "tenant\t%s (%s, %s)\n", r.Tenant.Name, r.Tenant.Kind, r.Tenant.Id)
		for _, a := range r.User.Assignments {
			fmt.Fprintf(w, "role\t%s on %s %s\n", a.RoleName, a.Scope.GetKind(), a.Scope.GetId())
		}
		for _, f := range r.Features {
			fmt.Fprintf(w, "feature\t%s = %s\n", f.Feature, f.Level)
		}
		fmt.Fprintf(w, "manage users\t%v\n", r.ManageUsers)
	})
}

func cmdTenantShow(ctx context.Context, e *env, _ []string) error {
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewTenantServiceClient(e.conn).GetTenant(actx, &gantryv1.GetTenantRequest{})
	if err != nil {
		return err
	}
	t := r.Tenant
	return e.print(r, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "id\t%s\nname\t%s\nkind\t%s\ntenant roles\t%s\ncompany info\t%s\nlogo\t%s\ncolour\t%s\n",
			t.Id, t.Name, t.Kind, strings.Join(t.TenantRoles, ", "), t.CompanyInfo, t.LogoUrl, t.PrimaryColor)
	})
}

func cmdTenantUpdate(ctx context.Context, e *env, args []string) error {
	fs := flags(e, "tenant update")
	req := &gantryv1.UpdateTenantRequest{}
	fs.StringVar(&req.Name, "name", "", "company name")
	fs.StringVar(&req.CompanyInfo, "company-info", "", "company information")
	fs.StringVar(&req.LogoUrl, "logo-url", "", "logo URL")
	fs.StringVar(&req.PrimaryColor, "color", "", "primary colour #rrggbb")
	if err := fs.Parse(args); err != nil {
		return err
	}
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewTenantServiceClient(e.conn).UpdateTenant(actx, req)
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) { fmt.Fprintf(w, "updated %s\n", r.Tenant.Name) })
}

func cmdUsersList(ctx context.Context, e *env, _ []string) error {
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewUserServiceClient(e.conn).ListUsers(actx, &gantryv1.ListUsersRequest{})
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) {
		fmt.Fprintln(w, "ID\tE-MAIL\tNAME\tSTATUS\tROLES")
		for _, u := range r.Users {
			var roles []string
			for _, a := range u.Assignments {
				rs := a.RoleName
				if a.Scope.GetKind() != "tenant" {
					rs += "@" + a.Scope.GetKind() + ":" + a.Scope.GetId()
				}
				roles = append(roles, rs)
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", u.Id, u.Email, u.DisplayName, u.Status, strings.Join(roles, ", "))
		}
	})
}

func grants(in multi) ([]*gantryv1.RoleGrant, error) {
	var out []*gantryv1.RoleGrant
	for _, s := range in {
		g, err := parseGrant(s)
		if err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	return out, nil
}

func cmdUsersInvite(ctx context.Context, e *env, args []string) error {
	fs := flags(e, "users invite")
	email := fs.String("email", "", "invitee's e-mail address")
	var roles multi
	fs.Var(&roles, "role", "ROLE[@KIND:ID] to give (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	gs, err := grants(roles)
	if err != nil {
		return err
	}
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewUserServiceClient(e.conn).InviteUser(actx, &gantryv1.InviteUserRequest{Email: *email, Roles: gs})
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "invitation\t%s\nlink\t%s\ntoken\t%s\nexpires\t%s\n", r.InvitationId, r.Link, r.Token, r.ExpiresAt.AsTime().Local().Format("2006-01-02 15:04"))
	})
}

func cmdInvitations(ctx context.Context, e *env, _ []string) error {
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewUserServiceClient(e.conn).ListInvitations(actx, &gantryv1.ListInvitationsRequest{})
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) {
		fmt.Fprintln(w, "ID\tE-MAIL\tEXPIRES\tUSED")
		for _, i := range r.Invitations {
			fmt.Fprintf(w, "%s\t%s\t%s\t%v\n", i.Id, i.Email, i.ExpiresAt.AsTime().Local().Format("2006-01-02 15:04"), i.Used)
		}
	})
}

func cmdAccept(ctx context.Context, e *env, args []string) error {
	fs := flags(e, "users accept")
	token := fs.String("token", "", "invitation token")
	name := fs.String("name", "", "your display name")
	if err := fs.Parse(args); err != nil {
		return err
	}
	pw, err := e.password("Choose a password: ")
	if err != nil {
		return err
	}
	conn, err := e.dial()
	if err != nil {
		return err
	}
	r, err := gantryv1.NewUserServiceClient(conn).AcceptInvitation(ctx, &gantryv1.AcceptInvitationRequest{Token: *token, DisplayName: *name, Password: pw})
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "welcome %s: log in with 'gantryctl login --email %s'\n", r.User.DisplayName, r.User.Email)
	})
}

func cmdRegister(ctx context.Context, e *env, args []string) error {
	fs := flags(e, "users register")
	req := &gantryv1.RegisterRequest{}
	fs.StringVar(&req.TenantId, "tenant", "", "ID of the tenant to join")
	fs.StringVar(&req.Email, "email", "", "your e-mail address")
	fs.StringVar(&req.DisplayName, "name", "", "your display name")
	if err := fs.Parse(args); err != nil {
		return err
	}
	pw, err := e.password("Choose a password: ")
	if err != nil {
		return err
	}
	req.Password = pw
	conn, err := e.dial()
	if err != nil {
		return err
	}
	r, err := gantryv1.NewUserServiceClient(conn).Register(ctx, req)
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "registered %s (%s): pending until an admin of the tenant verifies you\n", r.User.Email, r.User.Id)
	})
}

func cmdVerify(ctx context.Context, e *env, args []string) error {
	fs := flags(e, "users verify")
	var roles multi
	fs.Var(&roles, "role", "ROLE[@KIND:ID] to give (repeatable, at least one)")
	id, err := oneArg(fs, args, "USER_ID")
	if err != nil {
		return err
	}
	gs, err := grants(roles)
	if err != nil {
		return err
	}
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewUserServiceClient(e.conn).VerifyUser(actx, &gantryv1.VerifyUserRequest{Id: id, Roles: gs})
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) { fmt.Fprintf(w, "verified %s\n", r.User.Email) })
}

func cmdUsersDelete(ctx context.Context, e *env, args []string) error {
	id, err := oneArg(flags(e, "users delete"), args, "USER_ID")
	if err != nil {
		return err
	}
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewUserServiceClient(e.conn).DeleteUser(actx, &gantryv1.DeleteUserRequest{Id: id})
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) { fmt.Fprintf(w, "deleted %s\n", id) })
}

func cmdRolesList(ctx context.Context, e *env, args []string) error {
	fs := flags(e, "roles list")
	assignable := fs.Bool("assignable", false, "only roles you may assign")
	if err := fs.Parse(args); err != nil {
		return err
	}
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewRoleServiceClient(e.conn).ListRoles(actx, &gantryv1.ListRolesRequest{AssignableOnly: *assignable})
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) {
		fmt.Fprintln(w, "ID\tNAME\tRANK\tFEATURES")
		for _, ro := range r.Roles {
			var fl []string
			for _, f := range ro.Features {
				fl = append(fl, f.Feature+"="+f.Level)
			}
			if ro.ManageUsers {
				fl = append(fl, "manage_users")
			}
			fmt.Fprintf(w, "%s\t%s\t%d\t%s\n", ro.Id, ro.Name, ro.Rank, strings.Join(fl, " "))
		}
	})
}

func cmdRolesAssign(ctx context.Context, e *env, args []string) error {
	fs := flags(e, "roles assign")
	user := fs.String("user", "", "user ID")
	role := fs.String("role", "", "role ID")
	scope := fs.String("scope", "", "scope KIND:ID (default: whole tenant)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	req := &gantryv1.AssignRoleRequest{UserId: *user, RoleId: *role}
	if *scope != "" {
		sc, err := parseScope(*scope)
		if err != nil {
			return err
		}
		req.Scope = sc
	}
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewRoleServiceClient(e.conn).AssignRole(actx, req)
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "assigned %s (assignment %s)\n", r.Assignment.RoleName, r.Assignment.Id)
	})
}

func cmdRolesRevoke(ctx context.Context, e *env, args []string) error {
	id, err := oneArg(flags(e, "roles revoke"), args, "ASSIGNMENT_ID")
	if err != nil {
		return err
	}
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewRoleServiceClient(e.conn).RevokeRole(actx, &gantryv1.RevokeRoleRequest{AssignmentId: id})
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) { fmt.Fprintf(w, "revoked %s\n", id) })
}

func cmdAssignments(ctx context.Context, e *env, args []string) error {
	fs := flags(e, "roles assignments")
	user := fs.String("user", "", "user ID (default: you)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewRoleServiceClient(e.conn).ListAssignments(actx, &gantryv1.ListAssignmentsRequest{UserId: *user})
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) {
		fmt.Fprintln(w, "ID\tROLE\tSCOPE")
		for _, a := range r.Assignments {
			fmt.Fprintf(w, "%s\t%s\t%s:%s\n", a.Id, a.RoleName, a.Scope.GetKind(), a.Scope.GetId())
		}
	})
}

func cmdCustomCreate(ctx context.Context, e *env, args []string) error {
	fs := flags(e, "custom-roles create")
	name := fs.String("name", "", "role name")
	rank := fs.Int("rank", 0, "rank 1..99 (Tenant Admin is 100)")
	manage := fs.Bool("manage-users", false, "holders may manage users below this rank")
	var feats multi
	fs.Var(&feats, "feature", "FEATURE=LEVEL, e.g. digital_shopfloor=read (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	req := &gantryv1.CreateCustomRoleRequest{Name: *name, Rank: int32(*rank), ManageUsers: *manage}
	for _, f := range feats {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return fmt.Errorf("--feature %q: want FEATURE=LEVEL", f)
		}
		req.Features = append(req.Features, &gantryv1.FeatureLevel{Feature: k, Level: v})
	}
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewRoleServiceClient(e.conn).CreateCustomRole(actx, req)
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) { fmt.Fprintf(w, "created %s (%s)\n", r.Role.Name, r.Role.Id) })
}

func cmdCustomDelete(ctx context.Context, e *env, args []string) error {
	id, err := oneArg(flags(e, "custom-roles delete"), args, "ROLE_ID")
	if err != nil {
		return err
	}
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewRoleServiceClient(e.conn).DeleteCustomRole(actx, &gantryv1.DeleteCustomRoleRequest{Id: id})
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) { fmt.Fprintf(w, "deleted %s\n", id) })
}

func cmdAudit(ctx context.Context, e *env, args []string) error {
	fs := flags(e, "audit")
	limit := fs.Int("limit", 50, "number of events")
	if err := fs.Parse(args); err != nil {
		return err
	}
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewAuditServiceClient(e.conn).ListAudit(actx, &gantryv1.ListAuditRequest{Limit: int32(*limit)})
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) {
		fmt.Fprintln(w, "ID\tWHEN\tACTOR\tACTION\tTARGET\tDETAIL")
		for _, ev := range r.Events {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", strconv.FormatInt(ev.Id, 10), ev.At.AsTime().Local().Format("2006-01-02 15:04:05"), ev.ActorId, ev.Action, ev.Target, ev.Detail)
		}
	})
}
