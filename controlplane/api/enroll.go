package api

import (
	"context"
	"crypto/ed25519"
	"encoding/pem"
	"time"

	"connectrpc.com/connect"
	"github.com/gantry-iot/gantry/controlplane/fleet"
	"github.com/gantry-iot/gantry/controlplane/pki"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
)

// Enrollment is what the enrollment endpoint needs from the control plane.
type Enrollment struct {
	Repo       fleet.EnrollRepo
	CA         *pki.CA
	CommandKey ed25519.PrivateKey
	MQTTURL    string
}

type enrollmentService struct {
	*Server
	e Enrollment
}

func (s *enrollmentService) Enroll(ctx context.Context, req *connect.Request[gantryv1.EnrollRequest]) (*connect.Response[gantryv1.EnrollResponse], error) {
	res, err := fleet.Enroll(ctx, s.e.Repo, s.e.CA, req.Msg.Token, req.Msg.CsrDer, req.Msg.AgentVersion, time.Now(), pki.SerialString)
	if err != nil {
		return nil, err
	}
	s.log.InfoContext(ctx, "device enrolled", "device", res.DeviceID, "serial", pki.SerialString(res.Cert), "agent_version", req.Msg.AgentVersion)
	return connect.NewResponse(&gantryv1.EnrollResponse{
		DeviceId:         res.DeviceID,
		CertificatePem:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: res.Cert.Raw}),
		CaPem:            pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.e.CA.Cert.Raw}),
		MqttUrl:          s.e.MQTTURL,
		CommandPublicKey: s.e.CommandKey.Public().(ed25519.PublicKey),
	}), nil
}
