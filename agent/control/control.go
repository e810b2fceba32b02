// Package control executes verified commands from the control plane and
// produces their acknowledgements. Every command is checked by
// pkg/command (signature, device, validity window, replay) first;
// rejected commands are acknowledged with the reason and never executed.
package control

import (
	"errors"
	"log/slog"
	"sync/atomic"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gantry-iot/gantry/pkg/command"
	gantryv1 "github.com/gantry-iot/gantry/proto/gantry/v1"
)

// Actions are what commands do on this device. Nil functions report that
// the action is not available.
type Actions struct {
	// ReloadConfig runs for a reload_config command without a template.
	ReloadConfig func() error
	// ApplyTemplate runs for a reload_config command that carries the
	// device's OPC-UA template; it returns only once the new configuration
	// is accepted (or refused, the current one still running).
	ApplyTemplate    func(*gantryv1.DeviceTemplate) error
	RestartCollector func() error
	TunnelUp         func(*gantryv1.TunnelUp) error
	TunnelDown       func(grantID string) error
	Browse           func(*gantryv1.Browse) (*gantryv1.BrowseResult, error)
}

// Stats counts command outcomes.
type Stats struct {
	Executed, Rejected, Failed atomic.Int64
}

// Handler turns command payloads into acknowledgements. Safe for
// concurrent use.
type Handler struct {
	v     *command.Verifier
	act   Actions
	log   *slog.Logger
	Stats Stats
}

// New returns a Handler. logger may be nil.
func New(v *command.Verifier, act Actions, logger *slog.Logger) *Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Handler{v: v, act: act, log: logger}
}

// ErrUnavailable is reported for actions this device does not offer.
var ErrUnavailable = errors.New("not available on this device")

// Handle verifies and executes one command payload and returns the ack
// payload to publish on cmdack.
func (h *Handler) Handle(payload []byte) []byte {
	ack := &gantryv1.CommandAck{At: timestamppb.Now()}
	c, err := h.v.Verify(payload)
	if err != nil {
		h.Stats.Rejected.Add(1)
		ack.Nonce = unverifiedNonce(payload)
		ack.Error = "rejected: " + err.Error()
		h.log.Warn("command rejected", "reason", err)
		return marshal(ack)
	}
	ack.Nonce = c.Nonce
	switch c.Body.(type) {
	case *gantryv1.Command_Ping:
		err = nil
	case *gantryv1.Command_ReloadConfig:
		if t := c.GetReloadConfig().GetTemplate(); t != nil {
			err = ErrUnavailable
			if h.act.ApplyTemplate != nil {
				err = h.act.ApplyTemplate(t)
			}
		} else {
			err = run(h.act.ReloadConfig)
		}
	case *gantryv1.Command_RestartCollector:
		err = run(h.act.RestartCollector)
	case *gantryv1.Command_TunnelUp:
		err = ErrUnavailable
		if h.act.TunnelUp != nil {
			err = h.act.TunnelUp(c.GetTunnelUp())
		}
	case *gantryv1.Command_Browse:
		err = ErrUnavailable
		if h.act.Browse != nil {
			ack.Browse, err = h.act.Browse(c.GetBrowse())
		}
	case *gantryv1.Command_TunnelDown:
		err = ErrUnavailable
		if h.act.TunnelDown != nil {
			err = h.act.TunnelDown(c.GetTunnelDown().GetGrantId())
		}
	default:
		err = errors.New("unknown command; update the agent")
	}
	if err != nil {
		h.Stats.Failed.Add(1)
		ack.Error = err.Error()
		h.log.Warn("command failed", "nonce", c.Nonce, "err", err)
	} else {
		h.Stats.Executed.Add(1)
		ack.Ok = true
		h.log.Info("command executed", "nonce", c.Nonce)
	}
	return marshal(ack)
}

func run(f func() error) error {
	if f == nil {
		return ErrUnavailable
	}
	return f()
}

// unverifiedNonce extracts the nonce of a rejected command for the ack,
// so the sender learns why; it is never trusted for anything else.
func unverifiedNonce(payload []byte) string {
	var sc gantryv1.SignedCommand
	if proto.Unmarshal(payload, &sc) != nil {
		return ""
	}
	var c gantryv1.Command
	if proto.Unmarshal(sc.Command, &c) != nil || len(c.Nonce) > 64 {
		return ""
	}
	return c.Nonce
}

func marshal(a *gantryv1.CommandAck) []byte {
	b, _ := proto.Marshal(a)
	return b
}
