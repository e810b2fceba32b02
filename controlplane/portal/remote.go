package portal

import (
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/gantry-iot/gantry/controlplane/cases"
	"github.com/gantry-iot/gantry/controlplane/errkind"
	"github.com/gantry-iot/gantry/controlplane/identity"
	"github.com/gantry-iot/gantry/pkg/machinemodel"
)

// RemoteSessions issues remote-access session tokens and learns about
// grant changes; the server passes controlplane/remote's session broker
// and tunnel manager (the same hooks the API uses).
type RemoteSessions interface {
	Issue(u cases.Use) (id, token string, expires time.Time)
	// GrantsChanged reconciles tunnels with grants now.
	GrantsChanged()
	// WebSocketPath is where tokens are redeemed.
	WebSocketPath() string
}

// WithRemote enables the Connect buttons and the VNC viewer. Call it
// before serving; without it the portal explains that remote access is
// disabled.
func (p *Portal) WithRemote(r RemoteSessions) *Portal {
	p.remote = r
	return p
}

func (p *Portal) grantsChanged() {
	if p.remote != nil {
		p.remote.GrantsChanged()
	}
}

var errNoHub = errkind.New(errkind.Precondition, "", "remote access is not enabled on this control plane (it runs without a WireGuard hub)")

// connectOption is one connection type of an active grant as the
// remote-access panel shows it.
type connectOption struct {
	Type     string
	Allowed  bool
	Reason   string   // why not, from the cases service
	Commands []string // data link: gantryctl commands, one per target
}

// connectOptions asks the cases service, without auditing, which of the
// grant's connection types the caller may use. The portal never decides
// this itself; opening a session is authorized (and audited) again.
func (p *Portal) connectOptions(r *http.Request, c *identity.Caller, caseID string, types []string) []connectOption {
	out := make([]connectOption, 0, len(types))
	for _, t := range types {
		o := connectOption{Type: t}
		switch t {
		case machinemodel.ConnVNC, machinemodel.ConnDataLink:
			targets, err := p.cases.UseTargets(r.Context(), c, caseID, t)
			switch {
			case err != nil:
				o.Reason = p.userMessage(err)
			case p.remote == nil:
				o.Reason = errNoHub.Message
			default:
				o.Allowed = true
				if t == machinemodel.ConnDataLink {
					for _, tg := range targets {
						o.Commands = append(o.Commands, tunnelCommand(caseID, tg))
					}
				}
			}
		case machinemodel.ConnSSC:
			o = p.sscOption(r, c, caseID)
		default:
			o.Reason = "This connection type is not offered in the browser."
		}
		out = append(out, o)
	}
	return out
}

// tunnelCommand is the gantryctl command that forwards a local port to a
// data-link target (browsers cannot open raw TCP). Privileged target
// ports map to 10000+port locally.
func tunnelCommand(caseID, target string) string {
	local := "0"
	if _, port, err := net.SplitHostPort(target); err == nil {
		local = port
		if n, err := strconv.Atoi(port); err == nil && n < 1024 {
			local = strconv.Itoa(10000 + n)
		}
	}
	return "gantryctl tunnel " + caseID + " --target " + target + " --listen 127.0.0.1:" + local
}

// userMessage is the message of a service error for users; internal
// errors are logged and shown generically.
func (p *Portal) userMessage(err error) string {
	var ke *errkind.Error
	if errors.As(err, &ke) {
		return ke.Message // without the API's field name
	}
	if errkind.Of(err) != nil {
		return err.Error()
	}
	p.log.Error("portal request failed", "err", err)
	return "Something went wrong on our side; the server log has the details."
}

// vncSession is what the viewer needs to connect.
type vncSession struct {
	SessionID      string    `json:"sessionId"`
	Token          string    `json:"token"`
	WebSocketPath  string    `json:"websocketPath"`
	TokenExpiresAt time.Time `json:"tokenExpiresAt"`
	Target         string    `json:"target"`
	GrantExpiresAt time.Time `json:"grantExpiresAt"`
}

// openVNC opens a VNC session like the API's OpenSession: the cases
// service authorizes (and audits) the use, then the broker issues a
// single-use token.
func (p *Portal) openVNC(r *http.Request, c *identity.Caller, caseID string) (vncSession, error) {
	if p.remote == nil {
		return vncSession{}, errNoHub
	}
	u, err := p.cases.AuthorizeUse(r.Context(), c, caseID, machinemodel.ConnVNC, "", true)
	if err != nil {
		return vncSession{}, err
	}
	id, tok, exp := p.remote.Issue(u)
	return vncSession{SessionID: id, Token: tok, WebSocketPath: p.remote.WebSocketPath(), TokenExpiresAt: exp, Target: u.Target, GrantExpiresAt: u.GrantExpires}, nil
}

// vncPage opens a session and renders the noVNC viewer with its token.
func (p *Portal) vncPage(w http.ResponseWriter, r *http.Request, c *identity.Caller) {
	id := r.PathValue("id")
	v, err := p.cases.Get(r.Context(), c, id)
	if err != nil {
		p.fail(w, c, err)
		return
	}
	s, err := p.openVNC(r, c, id)
	if err != nil {
		p.fail(w, c, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store") // the page carries a token
	p.render(w, http.StatusOK, "vnc", map[string]any{"Nav": navFor(c, "cases"), "Case": v, "Session": s})
}

// vncSessionJSON issues a fresh token for the viewer's Reconnect button
// (tokens are single-use). POST, so the portal's same-origin check applies.
func (p *Portal) vncSessionJSON(w http.ResponseWriter, r *http.Request, c *identity.Caller) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	s, err := p.openVNC(r, c, r.PathValue("id"))
	if err != nil {
		status, msg := p.statusFor(err)
		if errkind.Of(err) != nil {
			msg = p.userMessage(err)
		}
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
		return
	}
	_ = json.NewEncoder(w).Encode(s)
}
