package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"github.com/gantry-iot/gantry/controlplane/identity"
	"google.golang.org/protobuf/encoding/protojson"
)

// SessionCookie is the portal's session cookie; it carries the same token
// as "Authorization: Bearer".
const SessionCookie = "gantry_session"

// authenticateHTTP authenticates a plain HTTP request by bearer header or
// session cookie.
func (s *Server) authenticateHTTP(r *http.Request) (*identity.Caller, error) {
	tok := BearerToken(r.Header)
	if tok == "" {
		if c, err := r.Cookie(SessionCookie); err == nil {
			tok = c.Value
		}
	}
	return s.id.Authenticate(r.Context(), tok)
}

// writeError writes err as the same JSON error body connect uses.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	ce := toConnect(r.Context(), s.log, r.URL.Path, err).(*connect.Error)
	status := map[connect.Code]int{
		connect.CodeInvalidArgument: 400, connect.CodeUnauthenticated: 401, connect.CodePermissionDenied: 403,
		connect.CodeNotFound: 404, connect.CodeAlreadyExists: 409, connect.CodeFailedPrecondition: 412,
	}[ce.Code()]
	if status == 0 {
		status = 500
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"code": ce.Code().String(), "message": ce.Message()})
}

// chatEvents streams a case's new chat messages as Server-Sent Events
// (GET /api/cases/{id}/chat/events) for browsers. Each event is
// "event: message" with the ChatMessage as JSON; a comment line every 20 s
// keeps proxies from closing the stream.
func (s *Server) chatEvents(w http.ResponseWriter, r *http.Request) {
	c, err := s.authenticateHTTP(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	ch, err := s.cases.Subscribe(r.Context(), c, r.PathValue("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	fmt.Fprint(w, ": subscribed\n\n")
	fl.Flush()
	tick := time.NewTicker(20 * time.Second)
	defer tick.Stop()
	for {
		select {
		case m, ok := <-ch:
			if !ok {
				return
			}
			b, err := protojson.Marshal(chatPB(m))
			if err != nil {
				return
			}
			fmt.Fprintf(w, "id: %s\nevent: message\ndata: %s\n\n", m.ID, b)
			fl.Flush()
		case <-tick.C:
			fmt.Fprint(w, ": keep-alive\n\n")
			fl.Flush()
		case <-r.Context().Done():
			return
		}
	}
}
