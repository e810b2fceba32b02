package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/gantry-iot/gantry/agent/config"
)

// configValidateCmd implements 'gantry-agent config validate FILE'.
func configValidateCmd(_ context.Context, args []string, std stdio) error {
	fs := newFlags("config validate", "FILE", std)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usageErrorf("config validate needs exactly one FILE (or - for standard input), got %d arguments", fs.NArg())
	}
	name := fs.Arg(0)
	data, err := readConfigFile(name, std.in)
	if name == "-" {
		name = "standard input"
	}
	if err != nil {
		return err
	}
	ps := config.Validate(data)
	if len(ps) == 0 {
		fmt.Fprintf(std.out, "%s: valid\n", name)
		return nil
	}
	for _, p := range ps {
		fmt.Fprintf(std.out, "%s: %s\n", p.Path, p.Message)
	}
	return problemsError{name: name, count: len(ps)}
}

// readConfigFile reads a configuration file, or standard input for "-",
// bounded like config.Load.
func readConfigFile(name string, stdin io.Reader) ([]byte, error) {
	r := stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, fmt.Errorf("config validate: %w", err)
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, config.MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("config validate: read %s: %w", name, err)
	}
	if len(data) > config.MaxFileSize {
		return nil, fmt.Errorf("config validate %s: %w: more than %d bytes; is this the right file?", name, config.ErrTooLarge, config.MaxFileSize)
	}
	return data, nil
}

// configDefaultCmd implements 'gantry-agent config default'.
func configDefaultCmd(_ context.Context, args []string, std stdio) error {
	fs := newFlags("config default", "", std)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErrorf("config default takes no arguments")
	}
	_, err := std.out.Write(config.DefaultJSON())
	return err
}

// problemsError reports that a command printed problems (exit status 1).
type problemsError struct {
	name  string
	count int
}

func (e problemsError) Error() string {
	return fmt.Sprintf("%s: %d problem(s); fix them and validate again", e.name, e.count)
}
