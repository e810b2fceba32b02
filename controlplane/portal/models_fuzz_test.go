package portal

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

// knownField matches every form field name the model form has.
var knownField = regexp.MustCompile(`^(name|remote_access\.(connection_types|vnc_targets|data_link_targets|machine_subnets|ssc_ports)|opcua\.(endpoint_url|security_mode|data_points)|opcua\.data_points\[\d+\]\.[a-z_]+)$`)

// FuzzModelForm: any posted form parses without panicking, and every
// problem lands on a field the form has (or is reported in general).
func FuzzModelForm(f *testing.F) {
	f.Add("name=P&remote_access.connection_types=vnc&remote_access.vnc_targets=10.0.0.1%3A5900&opcua.data_points%5B0%5D.node_id=ns%3D2%3Bs%3DX&opcua.data_points%5B0%5D.name=X")
	f.Add("opcua.data_points%5B3%5D.warn_above=abc&opcua.data_points%5B3%5D.alarm_above=1&remote_access.machine_subnets=10.0.0.1%2F8%0Ax")
	f.Add("remote_access.connection_types=ssc&remote_access.connection_types=ssc&remote_access.ssc_ports=tcp%2F0&opcua.endpoint_url=http%3A%2F%2Fx")
	f.Add("opcua.data_points%5B999999%5D.name=x")
	f.Fuzz(func(t *testing.T, body string) {
		for _, keep := range []bool{false, true} {
			r := httptest.NewRequest(http.MethodPost, "/models", strings.NewReader(body))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			form, err := formFromRequest(r, keep)
			if err != nil {
				continue
			}
			m := form.model()
			form.addProblems(m)
			for k := range form.Errors {
				if !knownField.MatchString(k) {
					t.Fatalf("problem on unknown field %q (body %q)", k, body)
				}
			}
			if len(m.OPCUA.DataPoints) != len(form.Points) {
				t.Fatalf("%d data points from %d rows", len(m.OPCUA.DataPoints), len(form.Points))
			}
			_ = form.Rows()
		}
	})
}
