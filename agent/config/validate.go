package config

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// schemaJSON is the canonical schema; firmware-config/agent.schema.json
// must be a byte-identical copy (TestSchemaCopyIdentical).
//
//go:embed agent.schema.json
var schemaJSON []byte

// Schema returns a copy of the embedded JSON Schema.
func Schema() []byte { return bytes.Clone(schemaJSON) }

// maxDepth bounds nesting in a document; the deepest valid path has 6
// levels, so anything deeper is a mistake (and must not exhaust the stack).
const maxDepth = 32

// Problem is one finding in a configuration document.
type Problem struct {
	// Path is the JSON Pointer (RFC 6901) of the offending field, e.g.
	// "/opcua/endpoints/0/url"; "/" stands for the whole document.
	Path string
	// Message says what is wrong and what to do about it.
	Message string
}

func (p Problem) String() string { return p.Path + ": " + p.Message }

// Validate checks a configuration document against the embedded schema and
// the semantic rules, and reports every problem, ordered by path. It
// returns nil for a valid document.
func Validate(data []byte) []Problem {
	_, ps := check(data)
	return ps
}

// check is Validate that also returns the Config built from the document
// (meaningful only when there are no problems).
func check(data []byte) (Config, []Problem) {
	doc, decodePs, err := decode(data)
	if err != nil {
		return Config{}, []Problem{{Path: "/", Message: err.Error()}}
	}
	schemaPs := schemaProblems(doc)
	c, semanticPs := build(doc)
	return c, merge(decodePs, schemaPs, semanticPs)
}

// merge joins the problem lists, dropping semantic problems at or below a
// path the schema already reported (the schema's message is about the
// more basic mistake, like a wrong type), and orders them by path with
// array indexes compared as numbers.
func merge(decodePs, schemaPs, semanticPs []Problem) []Problem {
	all := append(append([]Problem(nil), decodePs...), schemaPs...)
	for _, p := range semanticPs {
		if !slices.ContainsFunc(schemaPs, func(s Problem) bool { return within(p.Path, s.Path) }) {
			all = append(all, p)
		}
	}
	slices.SortStableFunc(all, func(a, b Problem) int { return comparePaths(a.Path, b.Path) })
	return slices.CompactFunc(all, func(a, b Problem) bool { return a == b })
}

// within reports whether path p is q or below it.
func within(p, q string) bool {
	return p == q || q == "/" || strings.HasPrefix(p, q+"/")
}

func comparePaths(a, b string) int {
	as, bs := strings.Split(a, "/"), strings.Split(b, "/")
	for i := 0; i < len(as) && i < len(bs); i++ {
		if as[i] == bs[i] {
			continue
		}
		ai, aerr := strconv.Atoi(as[i])
		bi, berr := strconv.Atoi(bs[i])
		if aerr == nil && berr == nil {
			return ai - bi
		}
		return strings.Compare(as[i], bs[i])
	}
	return len(as) - len(bs)
}

// pointer appends a reference token to a JSON Pointer.
func pointer(base, token string) string {
	token = strings.NewReplacer("~", "~0", "/", "~1").Replace(token)
	if base == "/" {
		return "/" + token
	}
	return base + "/" + token
}

// decode parses data into the generic form the schema validator takes
// (map[string]any, []any, json.Number, string, bool, nil). Duplicate
// fields are problems (the last one would silently win); syntax errors end
// decoding with an error that gives line and column.
func decode(data []byte) (any, []Problem, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, nil, errors.New("the document is empty; write a JSON object, e.g. {} for all defaults")
	}
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	var ps []Problem
	v, err := decodeValue(d, "/", 0, &ps)
	if err == nil {
		if _, terr := d.Token(); terr != io.EOF {
			err = fmt.Errorf("unexpected data after the JSON object at %s; the file must hold exactly one object", position(data, d.InputOffset()))
		}
	}
	if err != nil {
		var se *json.SyntaxError
		switch {
		case errors.As(err, &se):
			return nil, nil, fmt.Errorf("not valid JSON at %s: %v; fix the syntax (comments and trailing commas are not allowed)", position(data, se.Offset), se)
		case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
			return nil, nil, errors.New("not valid JSON: the document ends early; close every { and [")
		}
		return nil, nil, err
	}
	return v, ps, nil
}

var errTooDeep = fmt.Errorf("nested deeper than %d levels; no configuration field is that deep, check the brackets", maxDepth)

func decodeValue(d *json.Decoder, path string, depth int, ps *[]Problem) (any, error) {
	tok, err := d.Token()
	if err != nil {
		return nil, err
	}
	delim, ok := tok.(json.Delim)
	if !ok {
		return tok, nil // string, json.Number, bool or nil
	}
	if depth >= maxDepth {
		return nil, errTooDeep
	}
	switch delim {
	case '{':
		m := map[string]any{}
		for d.More() {
			kt, err := d.Token()
			if err != nil {
				return nil, err
			}
			key, ok := kt.(string)
			if !ok {
				return nil, fmt.Errorf("object key is %v, not a string", kt)
			}
			p := pointer(path, key)
			v, err := decodeValue(d, p, depth+1, ps)
			if err != nil {
				return nil, err
			}
			if _, dup := m[key]; dup {
				*ps = append(*ps, Problem{Path: p, Message: "field appears more than once; keep only one (otherwise the last one would silently win)"})
			}
			m[key] = v
		}
		if _, err := d.Token(); err != nil { // '}'
			return nil, err
		}
		return m, nil
	case '[':
		a := []any{}
		for d.More() {
			v, err := decodeValue(d, pointer(path, strconv.Itoa(len(a))), depth+1, ps)
			if err != nil {
				return nil, err
			}
			a = append(a, v)
		}
		if _, err := d.Token(); err != nil { // ']'
			return nil, err
		}
		return a, nil
	}
	return nil, fmt.Errorf("unexpected %v", delim)
}

// position turns a byte offset into "line L, column C" (1-based).
func position(data []byte, offset int64) string {
	if offset < 0 {
		offset = 0
	}
	if offset > int64(len(data)) {
		offset = int64(len(data))
	}
	before := data[:offset]
	line := bytes.Count(before, []byte("\n")) + 1
	col := len(before) - bytes.LastIndexByte(before, '\n')
	return fmt.Sprintf("line %d, column %d", line, col)
}

// compiled is the embedded schema, compiled on first use.
var compiled = sync.OnceValues(func() (*jsonschema.Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(schemaJSON))
	if err != nil {
		return nil, fmt.Errorf("embedded schema: %w", err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource(schemaURL, doc); err != nil {
		return nil, fmt.Errorf("embedded schema: %w", err)
	}
	s, err := c.Compile(schemaURL)
	if err != nil {
		return nil, fmt.Errorf("embedded schema: %w", err)
	}
	return s, nil
})

// rawSchema is the embedded schema as a generic document, to look up the
// known fields for an "unknown field" message.
var rawSchema = sync.OnceValue(func() any {
	var v any
	_ = json.Unmarshal(schemaJSON, &v) // compiled reports a broken schema
	return v
})

const schemaURL = "agent.schema.json"

func schemaProblems(doc any) []Problem {
	s, err := compiled()
	if err != nil {
		return []Problem{{Path: "/", Message: fmt.Sprintf("cannot check the file: %v; this agent binary is broken, reinstall it", err)}}
	}
	err = s.Validate(doc)
	if err == nil {
		return nil
	}
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return []Problem{{Path: "/", Message: err.Error()}}
	}
	var ps []Problem
	collect(ve, &ps)
	return ps
}

var printer = message.NewPrinter(language.English)

// collect turns the leaves of a validation error tree into problems.
func collect(ve *jsonschema.ValidationError, ps *[]Problem) {
	if len(ve.Causes) > 0 {
		for _, c := range ve.Causes {
			collect(c, ps)
		}
		return
	}
	path := "/"
	for _, tok := range ve.InstanceLocation {
		path = pointer(path, tok)
	}
	switch k := ve.ErrorKind.(type) {
	case *kind.AdditionalProperties:
		known := knownFields(ve.SchemaURL)
		for _, name := range k.Properties {
			msg := "unknown field; remove it or fix its spelling"
			if len(known) > 0 {
				msg += " (fields allowed here: " + strings.Join(known, ", ") + ")"
			}
			*ps = append(*ps, Problem{Path: pointer(path, name), Message: msg})
		}
	case *kind.Required:
		for _, name := range k.Missing {
			*ps = append(*ps, Problem{Path: pointer(path, name), Message: "required field is missing; add it"})
		}
	default:
		*ps = append(*ps, Problem{Path: path, Message: kindMessage(ve)})
	}
}

func kindMessage(ve *jsonschema.ValidationError) string {
	switch k := ve.ErrorKind.(type) {
	case *kind.Type:
		return fmt.Sprintf("wrong type: got %s, want %s", k.Got, strings.Join(k.Want, " or "))
	case *kind.Enum:
		want := make([]string, len(k.Want))
		for i, w := range k.Want {
			want[i] = fmt.Sprintf("%q", fmt.Sprint(w))
		}
		return fmt.Sprintf("%s is not allowed; use one of %s", display(k.Got), strings.Join(want, ", "))
	case *kind.Minimum:
		return fmt.Sprintf("%s is too small; the minimum is %s", ratString(k.Got), ratString(k.Want))
	case *kind.Maximum:
		return fmt.Sprintf("%s is too large; the maximum is %s", ratString(k.Got), ratString(k.Want))
	case *kind.MinLength:
		if k.Want == 1 {
			return "must not be empty; give a value or leave the field out for the default"
		}
	case *kind.Pattern:
		switch {
		case strings.Contains(ve.SchemaURL, "/$defs/duration"):
			return fmt.Sprintf("%q is not a Go duration; write e.g. \"500ms\", \"5s\", \"2m\" or \"1h30m\"", k.Got)
		case strings.Contains(ve.SchemaURL, "/$defs/endpoint/"):
			return fmt.Sprintf("%q is not a valid name; use 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit", k.Got)
		}
	}
	return ve.ErrorKind.LocalizedString(printer)
}

func display(v any) string {
	if s, ok := v.(string); ok {
		return strconv.Quote(s)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// ratString formats a schema bound or value briefly, even when the
// document holds a number with thousands of digits.
func ratString(r *big.Rat) string {
	if r.IsInt() && r.Num().BitLen() <= 63 {
		return r.Num().String()
	}
	f, _ := r.Float64()
	if math.IsInf(f, 0) {
		return "a number beyond any range"
	}
	return strconv.FormatFloat(f, 'g', 6, 64)
}

// knownFields returns the sorted property names of the schema object at
// the fragment of a schema URL such as "agent.schema.json#/properties/log".
func knownFields(url string) []string {
	_, frag, _ := strings.Cut(url, "#")
	frag = strings.TrimSuffix(frag, "/additionalProperties")
	node := rawSchema()
	if frag != "" {
		for _, tok := range strings.Split(strings.TrimPrefix(frag, "/"), "/") {
			tok = strings.NewReplacer("~1", "/", "~0", "~").Replace(tok)
			m, ok := node.(map[string]any)
			if !ok {
				return nil
			}
			node = m[tok]
		}
	}
	m, _ := node.(map[string]any)
	props, _ := m["properties"].(map[string]any)
	names := make([]string, 0, len(props))
	for name := range props {
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}
