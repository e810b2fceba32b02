package config

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalid is wrapped by every error that reports problems in a
// configuration document; errors.As with *InvalidError yields the problems.
var ErrInvalid = errors.New("invalid agent configuration")

// ErrTooLarge is returned by Load for a file larger than MaxFileSize.
var ErrTooLarge = errors.New("configuration file too large")

// InvalidError lists every problem found in a configuration document. It
// unwraps to ErrInvalid.
type InvalidError struct {
	Problems []Problem
}

func (e *InvalidError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v: %d problem(s)", ErrInvalid, len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	return b.String()
}

// Unwrap returns ErrInvalid.
func (e *InvalidError) Unwrap() error { return ErrInvalid }
