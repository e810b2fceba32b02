// Package api serves the control plane's gRPC services and the same
// operations as JSON over HTTP (connect protocol: POST
// /gantry.v1.<Service>/<Method> with a JSON body), authorizing every call.
// Service logic lives in the domain packages (identity, …); this package
// translates between protobuf messages and those packages and maps errors
// to gRPC codes / HTTP statuses in one place (errors.go).
package api

import (
	"context"
	_ "embed"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/gantry-iot/gantry/controlplane/cases"
	"github.com/gantry-iot/gantry/controlplane/commands"
	"github.com/gantry-iot/gantry/controlplane/fleet"
	"github.com/gantry-iot/gantry/controlplane/identity"
	"github.com/gantry-iot/gantry/proto/gantry/v1/gantryv1connect"
)

//go:embed openapi/gantry.swagger.json
var openAPI []byte

// Server implements the gantry.v1 services.
type Server struct {
	id    *identity.Service
	fleet *fleet.Service
	cases *cases.Service
	log   *slog.Logger
	// publicURL is the control plane's external URL, used in the commands
	// it hands out (e.g. gantry-agent enroll).
	publicURL string
	enroll    *Enrollment
	commands  *commands.Dispatcher
	templates *commands.Templates
	remote    RemoteSessions
	ssc       SSCIssuer
}

// SSCIssuer adds an engineer peer to the WireGuard hub for an authorized
// SSC use and returns its config (controlplane/remote).
type SSCIssuer interface {
	IssueSSC(u cases.Use, publicKey string) (SSCConfig, error)
}

// SSCConfig is an issued Secure Service Connect config.
type SSCConfig struct {
	WGQuick            string // the wg-quick file
	Address            string // the engineer's /32
	PublicKey          string // the engineer's, base64
	PrivateKeyIncluded bool
	HubEndpoint        string
	AllowedIPs         []string // virtual subnets
	MachineSubnets     []string // what AllowedIPs map onto, same order
}

// RemoteSessions issues remote-access session tokens and learns about
// grant changes (controlplane/remote).
type RemoteSessions interface {
	Issue(u cases.Use) (id, token string, expires time.Time)
	// GrantsChanged reconciles tunnels with grants now.
	GrantsChanged()
	// WebSocketPath is where tokens are redeemed.
	WebSocketPath() string
}

// WithSSC enables Secure Service Connect configs.
func (s *Server) WithSSC(i SSCIssuer) *Server {
	s.ssc = i
	return s
}

// WithRemote enables remote-access sessions.
func (s *Server) WithRemote(r RemoteSessions) *Server {
	s.remote = r
	return s
}

func (s *Server) grantsChanged() {
	if s.remote != nil {
		s.remote.GrantsChanged()
	}
}

// WithCommands enables sending commands to devices.
func (s *Server) WithCommands(d *commands.Dispatcher) *Server {
	s.commands = d
	return s
}

// WithTemplates makes reload_config deliver the device's OPC-UA template.
func (s *Server) WithTemplates(t *commands.Templates) *Server {
	s.templates = t
	return s
}

// WithEnrollment enables the device enrollment endpoint.
func (s *Server) WithEnrollment(e Enrollment) *Server {
	s.enroll = &e
	return s
}

// New returns a Server. logger may be nil.
func New(id *identity.Service, fl *fleet.Service, cs *cases.Service, publicURL string, logger *slog.Logger) *Server {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Server{id: id, fleet: fl, cases: cs, publicURL: publicURL, log: logger}
}

// public procedures need no session.
var public = map[string]bool{
	gantryv1connect.SessionServiceLoginProcedure:         true,
	gantryv1connect.UserServiceAcceptInvitationProcedure: true,
	gantryv1connect.UserServiceRegisterProcedure:         true,
	gantryv1connect.EnrollmentServiceEnrollProcedure:     true,
}

// Mount registers every service, and the OpenAPI document at
// /api/openapi.json, on mux.
func (s *Server) Mount(mux *http.ServeMux) {
	// Requests are small except document uploads (their own, larger limit).
	opts := connect.WithHandlerOptions(connect.WithInterceptors(&authInterceptor{s: s}), connect.WithCodec(strictJSON{}), connect.WithReadMaxBytes(1<<20))
	mux.Handle(gantryv1connect.NewSessionServiceHandler(&sessionService{s}, opts))
	mux.Handle(gantryv1connect.NewTenantServiceHandler(&tenantService{s}, opts))
	mux.Handle(gantryv1connect.NewUserServiceHandler(&userService{s}, opts))
	mux.Handle(gantryv1connect.NewRoleServiceHandler(&roleService{s}, opts))
	mux.Handle(gantryv1connect.NewAuditServiceHandler(&auditService{s}, opts))
	mux.Handle(gantryv1connect.NewShopfloorServiceHandler(&shopfloorService{s}, opts))
	mux.Handle(gantryv1connect.NewCustomerServiceHandler(&customerService{s}, opts))
	mux.Handle(gantryv1connect.NewMachineModelServiceHandler(&modelService{s}, opts))
	mux.Handle(gantryv1connect.NewCaseServiceHandler(&caseService{s}, opts))
	mux.Handle(gantryv1connect.NewDeviceServiceHandler(&deviceService{s}, opts))
	mux.Handle(gantryv1connect.NewNotificationServiceHandler(&notificationService{s}, opts))
	mux.Handle(gantryv1connect.NewRemoteAccessServiceHandler(&remoteService{s}, opts))
	mux.Handle(gantryv1connect.NewDocumentServiceHandler(&documentService{s}, opts, connect.WithReadMaxBytes(16<<20)))
	mux.HandleFunc("GET /api/documents/{id}", s.downloadDocument)
	if s.enroll != nil {
		mux.Handle(gantryv1connect.NewEnrollmentServiceHandler(&enrollmentService{Server: s, e: *s.enroll}, opts))
	}
	mux.HandleFunc("GET /api/cases/{id}/chat/events", s.chatEvents)
	mux.HandleFunc("GET /api/openapi.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(openAPI)
	})
}

type callerKey struct{}

// CallerFrom returns the authenticated caller of a request.
func CallerFrom(ctx context.Context) *identity.Caller {
	c, _ := ctx.Value(callerKey{}).(*identity.Caller)
	return c
}

// WithCaller returns ctx carrying c (used by the portal, which
// authenticates by cookie).
func WithCaller(ctx context.Context, c *identity.Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}

// BearerToken extracts the token of an "Authorization: Bearer" header.
func BearerToken(h http.Header) string {
	v := h.Get("Authorization")
	if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
		return strings.TrimSpace(v[7:])
	}
	return ""
}

// authInterceptor authenticates every non-public call and maps errors.
type authInterceptor struct{ s *Server }

func (a *authInterceptor) authenticate(ctx context.Context, procedure string, h http.Header) (context.Context, error) {
	if public[procedure] {
		return ctx, nil
	}
	c, err := a.s.id.Authenticate(ctx, BearerToken(h))
	if err != nil {
		return ctx, toConnect(ctx, a.s.log, procedure, err)
	}
	return WithCaller(ctx, c), nil
}

func (a *authInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		ctx, err := a.authenticate(ctx, req.Spec().Procedure, req.Header())
		if err != nil {
			return nil, err
		}
		resp, err := next(ctx, req)
		return resp, toConnect(ctx, a.s.log, req.Spec().Procedure, err)
	}
}

func (a *authInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (a *authInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		ctx, err := a.authenticate(ctx, conn.Spec().Procedure, conn.RequestHeader())
		if err != nil {
			return err
		}
		return toConnect(ctx, a.s.log, conn.Spec().Procedure, next(ctx, conn))
	}
}
