package identity

import (
	"net/mail"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/gantry-iot/gantry/controlplane/errkind"
)

// Input limits.
const (
	MaxNameLen        = 100
	MaxEmailLen       = 254
	MinPasswordLen    = 10
	MaxPasswordLen    = 256
	MaxCompanyInfoLen = 2000
)

// NormalizeEmail validates an e-mail address and returns it lower-cased.
func NormalizeEmail(field, email string) (string, error) {
	email = strings.TrimSpace(email)
	if email == "" {
		return "", errkind.Invalidf(field, "an e-mail address is required")
	}
	if len(email) > MaxEmailLen {
		return "", errkind.Invalidf(field, "e-mail address is longer than %d characters", MaxEmailLen)
	}
	addr, err := mail.ParseAddress(email)
	if err != nil || addr.Address != email || addr.Name != "" || !strings.Contains(email[strings.LastIndexByte(email, '@')+1:], ".") {
		return "", errkind.Invalidf(field, "%q is not a valid e-mail address (expected name@example.com)", email)
	}
	return strings.ToLower(email), nil
}

// CheckName validates a display or tenant name: 1..MaxNameLen printable characters.
func CheckName(field, name string) (string, error) {
	name = strings.TrimSpace(name)
	if name == "" {
		return "", errkind.Invalidf(field, "a name is required")
	}
	if !utf8.ValidString(name) {
		return "", errkind.Invalidf(field, "name is not valid UTF-8")
	}
	if n := utf8.RuneCountInString(name); n > MaxNameLen {
		return "", errkind.Invalidf(field, "name is %d characters long; at most %d are allowed", n, MaxNameLen)
	}
	for _, r := range name {
		if !unicode.IsPrint(r) {
			return "", errkind.Invalidf(field, "name contains a control character")
		}
	}
	return name, nil
}

// CheckPassword enforces the password policy.
func CheckPassword(field, pw string) error {
	n := utf8.RuneCountInString(pw)
	if n < MinPasswordLen {
		return errkind.Invalidf(field, "password must have at least %d characters", MinPasswordLen)
	}
	if len(pw) > MaxPasswordLen {
		return errkind.Invalidf(field, "password must have at most %d bytes", MaxPasswordLen)
	}
	return nil
}

// CheckID validates an opaque ID from a request (non-empty, bounded, no spaces).
func CheckID(field, id string) error {
	if id == "" {
		return errkind.Invalidf(field, "an ID is required")
	}
	if len(id) > 80 || strings.ContainsFunc(id, func(r rune) bool { return r <= ' ' || r > '~' }) {
		return errkind.Invalidf(field, "%q is not a valid ID", truncate(id, 40))
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
