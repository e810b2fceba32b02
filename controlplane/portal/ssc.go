package portal

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"html/template"
	"net/http"
	"strings"

	qr "github.com/piglig/go-qr"

	"github.com/gantry-iot/gantry/controlplane/api"
	"github.com/gantry-iot/gantry/controlplane/cases"
	"github.com/gantry-iot/gantry/controlplane/errkind"
	"github.com/gantry-iot/gantry/controlplane/identity"
	"github.com/gantry-iot/gantry/pkg/machinemodel"
)

// Secure Service Connect in the browser: an authorized user generates a
// wg-quick config for the case's active grant, downloads it and scans it
// as a QR code. The cases service decides who may (SSCConfig, the same
// call as the API's GetSSCConfig); the hub issues the peer. The config —
// with a freshly generated private key unless the user gave a public key
// — exists only in the response: nothing stores or logs it. The download
// button posts the text the page shows back to be returned as a file, so
// the file and the QR code carry the same config and the server keeps
// nothing between the two requests.

// SSCIssuer adds an engineer peer to the WireGuard hub for an authorized
// use (the server passes the hub, as for the API).
type SSCIssuer interface {
	IssueSSC(u cases.Use, publicKey string) (SSCConfig, error)
}

// SSCConfig is an issued Secure Service Connect config, as the API
// returns it.
type SSCConfig = api.SSCConfig

// WithSSC enables generating SSC configs. Call it before serving.
func (p *Portal) WithSSC(s SSCIssuer) *Portal {
	p.ssc = s
	return p
}

// maxSSCConfig bounds the config text the download accepts back.
const maxSSCConfig = 4096

// sscOption asks the cases service, without auditing or issuing, whether
// the caller may get an SSC config on the case's grant (the rule of
// SSCConfig); generating one is authorized and audited again.
func (p *Portal) sscOption(r *http.Request, c *identity.Caller, caseID string) connectOption {
	o := connectOption{Type: machinemodel.ConnSSC}
	_, err := p.cases.UseTargets(r.Context(), c, caseID, machinemodel.ConnSSC)
	switch {
	case err != nil:
		o.Reason = p.userMessage(err)
	case p.ssc == nil:
		o.Reason = errNoHub.Message
	default:
		o.Allowed = true
	}
	return o
}

// sscPage is what the generated config page shows.
type sscPage struct {
	Config      string
	QRDataURI   template.URL // PNG as a data: URI (nothing to fetch again)
	FileName    string
	Address     string
	HubEndpoint string
	AllowedIPs  []string
	PrivateKey  bool
}

// generateSSC issues a config and renders it once (POST, so the
// portal's same-origin check applies).
func (p *Portal) generateSSC(w http.ResponseWriter, r *http.Request, c *identity.Caller) {
	id := r.PathValue("id")
	v, err := p.cases.Get(r.Context(), c, id)
	if err != nil {
		p.fail(w, c, err)
		return
	}
	publicKey := strings.TrimSpace(r.PostFormValue("public_key"))
	var cfg SSCConfig
	if p.ssc == nil {
		err = errNoHub
	} else {
		_, err = p.cases.SSCConfig(r.Context(), c, id, func(u cases.Use) (string, error) {
			var err error
			cfg, err = p.ssc.IssueSSC(u, publicKey)
			return fmt.Sprintf("engineer address %s key %s (portal)", cfg.Address, cfg.PublicKey), err
		})
	}
	if err != nil {
		data, derr := p.caseData(r, c, id)
		if derr != nil || errkind.Of(err) == nil || errkind.Of(err) == errkind.NotFound {
			p.fail(w, c, err)
			return
		}
		status, _ := p.statusFor(err)
		if errkind.Of(err) == errkind.Exhausted {
			status = http.StatusTooManyRequests
		}
		data["SSCError"] = p.userMessage(err)
		data["SSCPublicKey"] = publicKey
		p.render(w, status, "case", data)
		return
	}
	png, err := sscQRCode(cfg.WGQuick)
	if err != nil {
		p.fail(w, c, fmt.Errorf("ssc qr code: %w", err))
		return
	}
	w.Header().Set("Cache-Control", "no-store")      // the page carries a private key
	w.Header().Set("Referrer-Policy", "same-origin") // no-referrer would send Origin: null on the download post
	p.render(w, http.StatusOK, "ssc", map[string]any{"Nav": navFor(c, "cases"), "Case": v, "SSC": sscPage{
		Config: cfg.WGQuick, QRDataURI: template.URL("data:image/png;base64," + base64.StdEncoding.EncodeToString(png)), FileName: sscFileName(id),
		Address: cfg.Address, HubEndpoint: cfg.HubEndpoint, AllowedIPs: cfg.AllowedIPs, PrivateKey: cfg.PrivateKeyIncluded}})
}

func sscFileName(caseID string) string { return "gantry-" + caseID + ".conf" }

// sscQRCode renders the config as a PNG QR code (error correction
// medium, 4-module quiet zone as the standard asks).
func sscQRCode(config string) ([]byte, error) {
	code, err := qr.EncodeText(config, qr.Medium)
	if err != nil {
		return nil, err
	}
	return code.ToPNGBytes(qr.NewQrCodeImgConfig(4, 4))
}

// downloadSSC returns the config the page shows as a file. It issues
// nothing: the text comes from the page, which got it from generateSSC;
// the caller must still be able to read the case, and the text must look
// like an SSC config.
func (p *Portal) downloadSSC(w http.ResponseWriter, r *http.Request, c *identity.Caller) {
	id := r.PathValue("id")
	if _, err := p.cases.Get(r.Context(), c, id); err != nil {
		p.fail(w, c, err)
		return
	}
	cfg := strings.ReplaceAll(r.PostFormValue("config"), "\r\n", "\n")
	if len(cfg) > maxSSCConfig || !looksLikeWGQuick(cfg) {
		p.fail(w, c, errkind.Invalidf("config", "that is not a Secure Service Connect config from this page; generate a new one on the case"))
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="`+sscFileName(id)+`"`)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, _ = bytes.NewBufferString(cfg).WriteTo(w)
}

// looksLikeWGQuick reports whether s has the shape of a wg-quick file: an
// [Interface] and a [Peer] section, and otherwise only comments and
// "Key = value" lines.
func looksLikeWGQuick(s string) bool {
	var iface, peer bool
	for _, l := range strings.Split(s, "\n") {
		l = strings.TrimSpace(l)
		switch {
		case l == "" || strings.HasPrefix(l, "#"):
		case l == "[Interface]":
			iface = true
		case l == "[Peer]":
			peer = true
		default:
			k, _, ok := strings.Cut(l, "=")
			if !ok || strings.TrimSpace(k) == "" || strings.ContainsAny(k, "<>[]") {
				return false
			}
		}
	}
	return iface && peer
}
