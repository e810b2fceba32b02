// Package errkind classifies control-plane errors for users.
//
// Service packages return errors that wrap one of the Kind sentinels, most
// often through *Error, which also carries the offending field and a
// message that says what was wrong and what to do. The API layer maps the
// kind to a gRPC code / HTTP status in exactly one place.
package errkind

import (
	"errors"
	"fmt"
)

// Kind is a class of failure that callers can act on.
type Kind struct{ name string }

func (k *Kind) Error() string { return k.name }

// Kinds. Each maps to one gRPC code (see controlplane/api).
var (
	Invalid         = &Kind{"invalid argument"}    // bad input: fix the request
	Unauthenticated = &Kind{"unauthenticated"}     // no or bad session: log in
	Denied          = &Kind{"permission denied"}   // authenticated but not allowed
	NotFound        = &Kind{"not found"}           // no such thing (or not visible to the caller)
	Conflict        = &Kind{"already exists"}      // unique value taken
	Precondition    = &Kind{"failed precondition"} // state does not allow it (expired, used, last admin…)
	Exhausted       = &Kind{"resource exhausted"}  // a limit or pool is used up: wait or free something
)

// Error is a user-facing error: what was wrong (Message), about which input
// field (Field, optional), and its Kind.
type Error struct {
	Kind    *Kind
	Field   string
	Message string
}

func (e *Error) Error() string {
	if e.Field != "" {
		return e.Field + ": " + e.Message
	}
	return e.Message
}

// Unwrap lets errors.Is(err, errkind.Invalid) work.
func (e *Error) Unwrap() error { return e.Kind }

// New returns an *Error of kind k.
func New(k *Kind, field, format string, args ...any) *Error {
	return &Error{Kind: k, Field: field, Message: fmt.Sprintf(format, args...)}
}

// Invalidf reports bad input in field.
func Invalidf(field, format string, args ...any) *Error {
	return New(Invalid, field, format, args...)
}

// Deniedf reports a missing permission.
func Deniedf(format string, args ...any) *Error { return New(Denied, "", format, args...) }

// NotFoundf reports a missing (or invisible) resource.
func NotFoundf(format string, args ...any) *Error { return New(NotFound, "", format, args...) }

// Of returns the kind of err, or nil when err carries none (an internal error).
func Of(err error) *Kind {
	for _, k := range []*Kind{Invalid, Unauthenticated, Denied, NotFound, Conflict, Precondition, Exhausted} {
		if errors.Is(err, k) {
			return k
		}
	}
	return nil
}
