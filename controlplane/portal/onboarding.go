package portal

import (
	"errors"
	"net/http"

	"github.com/gantry-iot/gantry/controlplane/errkind"
)

// invitePage shows the invitation-acceptance form (the link invitations carry).
func (p *Portal) invitePage(w http.ResponseWriter, r *http.Request) {
	p.render(w, http.StatusOK, "invite", map[string]any{"Token": r.URL.Query().Get("token")})
}

func (p *Portal) acceptInvite(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		http.Error(w, "cross-site form submissions are refused", http.StatusForbidden)
		return
	}
	token, name := r.PostFormValue("token"), r.PostFormValue("display_name")
	u, err := p.id.AcceptInvitation(r.Context(), token, name, r.PostFormValue("password"))
	if err != nil {
		data := map[string]any{"Token": token, "Name": name}
		var ke *errkind.Error
		switch {
		case errors.As(err, &ke) && ke.Field == "password":
			data["PasswordError"] = ke.Message
		case errors.As(err, &ke) && ke.Field == "display_name":
			data["NameError"] = ke.Message
		case errkind.Of(err) != nil:
			data["Error"] = err.Error()
		default:
			p.log.Error("accept invitation", "err", err)
			data["Error"] = "Something went wrong; try again."
		}
		p.render(w, http.StatusBadRequest, "invite", data)
		return
	}
	p.render(w, http.StatusOK, "invite", map[string]any{"Done": true, "Name": u.DisplayName, "Email": u.Email})
}

func (p *Portal) registerPage(w http.ResponseWriter, r *http.Request) {
	p.render(w, http.StatusOK, "register", map[string]any{"TenantID": r.URL.Query().Get("tenant")})
}

func (p *Portal) register(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		http.Error(w, "cross-site form submissions are refused", http.StatusForbidden)
		return
	}
	f := map[string]string{}
	for _, k := range []string{"tenant_id", "email", "display_name"} {
		f[k] = r.PostFormValue(k)
	}
	_, err := p.id.Register(r.Context(), f["tenant_id"], f["email"], f["display_name"], r.PostFormValue("password"))
	if err != nil {
		data := map[string]any{"TenantID": f["tenant_id"], "Email": f["email"], "Name": f["display_name"], "Errors": map[string]string{}}
		var ke *errkind.Error
		switch {
		case errors.As(err, &ke) && ke.Field != "":
			data["Errors"].(map[string]string)[ke.Field] = ke.Message
		case errkind.Of(err) != nil:
			data["Error"] = err.Error()
		default:
			p.log.Error("register", "err", err)
			data["Error"] = "Something went wrong; try again."
		}
		p.render(w, http.StatusBadRequest, "register", data)
		return
	}
	p.render(w, http.StatusOK, "register", map[string]any{"Done": true})
}
