package api

import (
	"context"
	"errors"
	"log/slog"

	"connectrpc.com/connect"
	"github.com/gantry-iot/gantry/controlplane/errkind"
)

// toConnect is the one place where control-plane errors become gRPC codes
// (and, through connect, HTTP statuses and JSON error bodies). Errors
// without a kind are internal: the client gets a generic message, the log
// gets the detail.
func toConnect(ctx context.Context, log *slog.Logger, procedure string, err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return err
	}
	var code connect.Code
	switch errkind.Of(err) {
	case errkind.Invalid:
		code = connect.CodeInvalidArgument
	case errkind.Unauthenticated:
		code = connect.CodeUnauthenticated
	case errkind.Denied:
		code = connect.CodePermissionDenied
	case errkind.NotFound:
		code = connect.CodeNotFound
	case errkind.Conflict:
		code = connect.CodeAlreadyExists
	case errkind.Precondition:
		code = connect.CodeFailedPrecondition
	case errkind.Exhausted:
		code = connect.CodeResourceExhausted
	default:
		if errors.Is(err, context.Canceled) {
			return connect.NewError(connect.CodeCanceled, errors.New("request canceled"))
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return connect.NewError(connect.CodeDeadlineExceeded, errors.New("request timed out"))
		}
		log.ErrorContext(ctx, "internal error", "procedure", procedure, "err", err)
		return connect.NewError(connect.CodeInternal, errors.New("internal error; the server log has the details"))
	}
	return connect.NewError(code, errors.New(err.Error()))
}
