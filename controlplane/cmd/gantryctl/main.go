// Command gantryctl is the command-line client of the Gantry control plane:
// log in, manage users, roles, custom roles and read the audit log. It talks
// gRPC (google.golang.org/grpc) to the control plane.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"google.golang.org/grpc/status"
)

const usage = `gantryctl — command-line client for the Gantry control plane.

Usage:
  gantryctl [--server URL] [--json] <command> [flags]

Session:
  login --email E            log in (password from GANTRY_PASSWORD or a prompt); the
                             session token is kept in ~/.config/gantry/session.json (0600)
  logout                     end the session
  whoami                     show your user, tenant and effective permissions

Tenant:
  tenant show                show your tenant
  tenant update [--name N] [--company-info T] [--logo-url U] [--color #rrggbb]

Users:
  users list                 list the users of your tenant
  users invite --email E [--role ROLE[@KIND:ID]]...
                             invite a user; without --role they get your own assignable roles
  users invitations          list invitations
  users accept --token T --name N     accept an invitation (password from GANTRY_PASSWORD or a prompt)
  users register --tenant ID --email E --name N   self-register as a pending user
  users verify USER_ID --role ROLE[@KIND:ID]...   verify a pending user with roles
  users delete USER_ID       delete a user

Roles:
  roles list [--assignable]  roles your tenant offers (or only those you may assign)
  roles assign --user USER_ID --role ROLE [--scope KIND:ID]
  roles revoke ASSIGNMENT_ID
  roles assignments [--user USER_ID]
  custom-roles create --name N --rank R --feature FEATURE=LEVEL... [--manage-users]
  custom-roles delete ROLE_ID

Audit:
  audit [--limit N]          your tenant's audit log, newest first (Tenant Admin)

Shop floor (operators):
  facilities list | create --name N | rename ID --name N
  assets list [--facility ID] | create --facility ID --name N [--serial S]
         | update ID --name N [--serial S] [--facility ID]
  proposals list | accept PROPOSAL_ID --facility ID | reject PROPOSAL_ID

Customers and machine models (providers):
  customers orgs | create-org --name N | list [--org ID] | create --org ID --name N
  customers invite CUSTOMER_ID --admin-email E [--tenant-name N]
  customers machines [--customer ID] | add-machine --customer ID --name N [--serial S] [--model ID]
  customers propose CUSTOMER_MACHINE_ID
  customers contracts CUSTOMER_ID | add-contract --customer ID --name N --start YYYY-MM-DD [--end …]
  customers set-external -f external-user.json    restrict a customer's user (seed 002 rules)
  models list | show MODEL_ID | apply -f model.json   (templates are validated on save)

Documents & Media:
  documents list --owner-kind asset|machine_model --owner ID
  documents upload FILE --owner-kind asset|machine_model --owner ID --type application/pdf
  documents get DOCUMENT_ID [-o FILE]

Edge devices:
  devices list | create --name N --serial S [--model M] | link DEVICE_ID --machine MACHINE_ID
  devices get DEVICE_ID                       one device with its OPC-UA template (model, version, delivery)
  devices enroll-token DEVICE_ID [--ttl 1h]   one-time token and the gantry-agent enroll command
  devices command DEVICE_ID ping|reload_config|restart_collector   signed command, waits for the ack
  devices values DEVICE_ID                    latest machine data of the device
  devices browse DEVICE_ID [--endpoint opc.tcp://…] [--node ID] [--depth 3]
                             the agent browses the machine's OPC-UA address space

Service cases:
  cases list [--kind internal|shared] [--mine] [--state S] [--asset ID]
  cases create --asset ID --kind internal|shared --title T [--description D]
  cases show CASE_ID
  cases update CASE_ID [--state in_progress|closed] [--assignee USER_ID] [--unassign]
  cases chat CASE_ID [--follow]      read (and follow) the case's chat
  cases say CASE_ID MESSAGE…         post to the case's chat

Remote access (SPEC §4):
  remote show CASE_ID                 the case's grant and access requests
  remote activate CASE_ID [--minutes N]   activate (or extend) remote access (operator side)
  remote deactivate CASE_ID           end remote access; live sessions close within a second
  remote request CASE_ID --reason R [--minutes N]   ask the operator to activate (providers)
  remote decide REQUEST_ID --approve|--decline
  vnc CASE_ID [--listen 127.0.0.1:5900] [--target HOST:PORT]
                             expose the machine's VNC server on a local port for a
                             native viewer (each viewer connection is one audited session)
  tunnel CASE_ID --target HOST:PORT [--listen 127.0.0.1:N]
                             SSC Data Link: forward a local TCP port to a template-allowed
                             target on the machine network (e.g. a PLC on 102, 502, 4840)
  ssc CASE_ID [--public-key KEY] > gantry.conf
                             Secure Service Connect: a WireGuard (wg-quick) config that
                             routes the machine subnets through the hub while the grant
                             is active; with --public-key (from 'wg pubkey') the config
                             has no private key and you add your own

Global flags:
  --server URL   control plane URL (default $GANTRY_SERVER or http://127.0.0.1:8080)
  --json         print responses as JSON
  --ca FILE      PEM CA bundle for https servers with a private CA

ROLE is a role ID as shown by 'roles list', e.g. maintenance_engineer.
KIND:ID is a scope, e.g. facility:3f2c…; the default scope is the whole tenant.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		if st, ok := status.FromError(err); ok {
			fmt.Fprintf(os.Stderr, "gantryctl: %s: %s\n", st.Code(), st.Message())
		} else {
			fmt.Fprintln(os.Stderr, "gantryctl:", err)
		}
		os.Exit(1)
	}
}

// globals are the flags before the command.
type globals struct {
	server    string
	serverSet bool // --server or GANTRY_SERVER given: it wins over the saved session's server
	json      bool
	ca        string
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	g := globals{server: os.Getenv("GANTRY_SERVER")}
	if g.server == "" {
		g.server = "http://127.0.0.1:8080"
	}
	fs := flag.NewFlagSet("gantryctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	fs.StringVar(&g.server, "server", g.server, "control plane URL")
	fs.BoolVar(&g.json, "json", false, "print JSON")
	fs.StringVar(&g.ca, "ca", "", "PEM CA bundle")
	if err := fs.Parse(args); err != nil {
		return err
	}
	g.serverSet = os.Getenv("GANTRY_SERVER") != ""
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "server" {
			g.serverSet = true
		}
	})
	rest := fs.Args()
	if len(rest) == 0 || rest[0] == "help" {
		fmt.Fprint(stdout, usage)
		return nil
	}
	cmd, ok := lookup(rest[0])
	if !ok {
		return fmt.Errorf("unknown command %q; run 'gantryctl help'", rest[0])
	}
	return cmd(ctx, &env{g: g, stdin: stdin, stdout: stdout, stderr: stderr}, rest[1:])
}
