package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gantry-iot/gantry/pkg/wsconn"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
)

func printGrant(w *tabwriter.Writer, g *gantryv1.Grant) {
	if g == nil {
		fmt.Fprintln(w, "no remote-access grant on this case")
		return
	}
	state := "inactive"
	if g.Active {
		state = fmt.Sprintf("ACTIVE, %s left", time.Until(g.ExpiresAt.AsTime()).Round(time.Second))
	}
	fmt.Fprintf(w, "grant\t%s\t%s\n", g.Id, state)
	fmt.Fprintf(w, "device\t%s\t%s\n", g.DeviceId, strings.Join(g.ConnectionTypes, ", "))
	fmt.Fprintf(w, "expires\t%s\t\n", g.ExpiresAt.AsTime().Local().Format(time.DateTime))
}

func cmdRemoteShow(ctx context.Context, e *env, args []string) error {
	id, err := oneArg(flags(e, "remote show"), args, "CASE_ID")
	if err != nil {
		return err
	}
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewRemoteAccessServiceClient(e.conn).GetRemoteAccess(actx, &gantryv1.GetRemoteAccessRequest{CaseId: id})
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) {
		printGrant(w, r.Grant)
		for _, q := range r.Requests {
			fmt.Fprintf(w, "request\t%s\t%s, %d min: %s\n", q.Id, q.State, q.DurationMinutes, q.Reason)
		}
	})
}

func cmdRemoteActivate(ctx context.Context, e *env, args []string) error {
	fs := flags(e, "remote activate")
	minutes := fs.Uint("minutes", 0, "duration (default 120; at most your company's maximum)")
	id, err := oneArg(fs, args, "CASE_ID")
	if err != nil {
		return err
	}
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewRemoteAccessServiceClient(e.conn).ActivateRemoteAccess(actx, &gantryv1.ActivateRemoteAccessRequest{CaseId: id, DurationMinutes: uint32(*minutes)})
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) { printGrant(w, r.Grant) })
}

func cmdRemoteDeactivate(ctx context.Context, e *env, args []string) error {
	id, err := oneArg(flags(e, "remote deactivate"), args, "CASE_ID")
	if err != nil {
		return err
	}
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewRemoteAccessServiceClient(e.conn).DeactivateRemoteAccess(actx, &gantryv1.DeactivateRemoteAccessRequest{CaseId: id})
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) { printGrant(w, r.Grant) })
}

func cmdRemoteRequest(ctx context.Context, e *env, args []string) error {
	fs := flags(e, "remote request")
	reason := fs.String("reason", "", "why remote access is needed (shown to the operator)")
	minutes := fs.Uint("minutes", 0, "wished duration (default 120)")
	id, err := oneArg(fs, args, "CASE_ID")
	if err != nil {
		return err
	}
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewRemoteAccessServiceClient(e.conn).RequestRemoteAccess(actx, &gantryv1.RequestRemoteAccessRequest{CaseId: id, Reason: *reason, DurationMinutes: uint32(*minutes)})
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "request %s is %s; the operator is asked to approve it\n", r.Request.Id, r.Request.State)
	})
}

func cmdRemoteDecide(ctx context.Context, e *env, args []string) error {
	fs := flags(e, "remote decide")
	approve := fs.Bool("approve", false, "approve (activates remote access)")
	decline := fs.Bool("decline", false, "decline")
	id, err := oneArg(fs, args, "REQUEST_ID")
	if err != nil {
		return err
	}
	if *approve == *decline {
		return errors.New("remote decide: give exactly one of --approve or --decline")
	}
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewRemoteAccessServiceClient(e.conn).DecideAccessRequest(actx, &gantryv1.DecideAccessRequestRequest{RequestId: id, Approve: *approve})
	if err != nil {
		return err
	}
	return e.print(r, func(w *tabwriter.Writer) {
		fmt.Fprintf(w, "request %s %s\n", r.Request.Id, r.Request.State)
		if r.Grant != nil {
			printGrant(w, r.Grant)
		}
	})
}

func cmdVNC(ctx context.Context, e *env, args []string) error {
	fs := flags(e, "vnc")
	listen := fs.String("listen", "127.0.0.1:5900", "local address for the VNC viewer (127.0.0.1:0 picks a free port)")
	target := fs.String("target", "", "VNC server host:port (default: the template's first VNC target)")
	id, err := oneArg(fs, args, "CASE_ID")
	if err != nil {
		return err
	}
	return e.forward(ctx, id, "vnc", *target, *listen, "point your VNC viewer at")
}

func cmdTunnel(ctx context.Context, e *env, args []string) error {
	fs := flags(e, "tunnel")
	listen := fs.String("listen", "127.0.0.1:0", "local address to listen on")
	target := fs.String("target", "", "target host:port on the machine network, as the machine model's template allows (required)")
	id, err := oneArg(fs, args, "CASE_ID")
	if err != nil {
		return err
	}
	if *target == "" {
		return errors.New("tunnel: --target HOST:PORT is required (see the machine model's data-link targets)")
	}
	return e.forward(ctx, id, "data_link", *target, *listen, "connect your tool to")
}

// cmdSSC prints a Secure Service Connect config to stdout (so it can be
// redirected into a file) and hints to stderr.
func cmdSSC(ctx context.Context, e *env, args []string) error {
	fs := flags(e, "ssc")
	pub := fs.String("public-key", "", "your WireGuard public key (base64, from 'wg pubkey'); default: a fresh key pair is generated for you")
	id, err := oneArg(fs, args, "CASE_ID")
	if err != nil {
		return err
	}
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	r, err := gantryv1.NewRemoteAccessServiceClient(e.conn).GetSSCConfig(actx, &gantryv1.GetSSCConfigRequest{CaseId: id, PublicKey: *pub})
	if err != nil {
		return err
	}
	if e.g.json {
		return e.print(r, func(*tabwriter.Writer) {})
	}
	if _, err := io.WriteString(e.stdout, r.Config); err != nil {
		return err
	}
	routes := make([]string, len(r.AllowedIps))
	for i, a := range r.AllowedIps {
		routes[i] = a
		if i < len(r.MachineSubnets) {
			routes[i] = fmt.Sprintf("%s (machine network %s, same host numbers)", a, r.MachineSubnets[i])
		}
	}
	fmt.Fprintf(e.stderr, "SSC config for case %s: address %s, routes %s via %s; valid until the grant ends (%s).\n",
		id, r.Address, strings.Join(routes, ", "), r.HubEndpoint, r.GrantExpiresAt.AsTime().Local().Format(time.DateTime))
	if r.PrivateKeyIncluded {
		fmt.Fprintln(e.stderr, "The config contains a private key: keep the file private (chmod 600). Bring it up with 'wg-quick up ./gantry.conf' or import it into the WireGuard app.")
	} else {
		fmt.Fprintln(e.stderr, "Add your private key as PrivateKey under [Interface] before bringing it up.")
	}
	return nil
}

// forward listens locally and relays every accepted connection through
// its own remote-access session, until ctx ends or the grant ends.
func (e *env) forward(ctx context.Context, caseID, typ, target, listen, hint string) error {
	actx, err := e.client(ctx)
	if err != nil {
		return err
	}
	rc := gantryv1.NewRemoteAccessServiceClient(e.conn)
	open := func() (net.Conn, error) {
		s, err := rc.OpenSession(actx, &gantryv1.OpenSessionRequest{CaseId: caseID, ConnectionType: typ, Target: target})
		if err != nil {
			return nil, err
		}
		u, err := url.Parse(e.g.server)
		if err != nil {
			return nil, err
		}
		u.Scheme = map[string]string{"http": "ws", "https": "wss"}[u.Scheme]
		u.Path, u.RawQuery = s.WebsocketPath, url.Values{"token": {s.Token}}.Encode()
		tlsCfg, err := e.tlsConfig()
		if err != nil {
			return nil, err
		}
		return wsconn.Dial(ctx, u.String(), tlsCfg)
	}
	// Authorize once up front, so a refusal is reported before listening.
	first, err := open()
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		first.Close()
		return fmt.Errorf("listen on %s: %w (choose another with --listen)", listen, err)
	}
	defer ln.Close()
	fmt.Fprintf(e.stdout, "%s session for case %s: %s %s (Ctrl-C to stop)\n", typ, caseID, hint, ln.Addr())
	ended := make(chan error, 1)
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			select {
			case err := <-ended:
				return err
			default:
			}
			if ctx.Err() != nil {
				first.Close()
				return nil
			}
			return err
		}
		ws := first
		first = nil
		if ws == nil {
			if ws, err = open(); err != nil {
				c.Close()
				if st, ok := status.FromError(err); ok && (st.Code() == codes.FailedPrecondition || st.Code() == codes.PermissionDenied || st.Code() == codes.NotFound) {
					fmt.Fprintf(e.stderr, "gantryctl: %s\n", st.Message())
					ln.Close()
					return err
				}
				fmt.Fprintf(e.stderr, "gantryctl: session not opened: %v\n", err)
				continue
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			up, down, err := splice(c, ws)
			var cr *wsconn.CloseReason
			if errors.As(err, &cr) {
				fmt.Fprintf(e.stderr, "gantryctl: %s\n", cr.Text)
				select {
				case ended <- fmt.Errorf("%s", cr.Text):
				default:
				}
				ln.Close()
				return
			}
			fmt.Fprintf(e.stderr, "connection closed (%d bytes sent, %d received)\n", up, down)
		}()
	}
}

// splice copies both ways until either side ends; err is the WebSocket
// side's read error (its close reason), if any.
func splice(local net.Conn, ws net.Conn) (up, down int64, err error) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		var cerr error
		up, cerr = io.CopyBuffer(ws, local, make([]byte, 64<<10))
		// Local EOF: half-close, the target may still answer.
		if cw, ok := ws.(interface{ CloseWrite() error }); ok && cerr == nil && cw.CloseWrite() == nil {
			return
		}
		ws.Close()
	}()
	var rerr error
	down, rerr = io.CopyBuffer(local, ws, make([]byte, 64<<10))
	var cr *wsconn.CloseReason
	if errors.As(rerr, &cr) {
		err = rerr
	}
	local.Close()
	ws.Close()
	<-done
	return up, down, err
}
