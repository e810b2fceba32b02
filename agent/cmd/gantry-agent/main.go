// Command gantry-agent is Gantry's edge agent: it runs on a shop-floor
// gateway beside a machine, enrolls with the control plane, reads machine
// data over OPC-UA and reports it over an mTLS MQTT session through an
// on-disk store-and-forward queue.
//
// main only parses the command line and reports the one error; each
// subcommand is an entry in the commands table below, so a new one is a
// new entry plus its function.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], stdio{in: os.Stdin, out: os.Stdout, err: os.Stderr})
	stop()
	os.Exit(report(err, os.Stderr))
}

// stdio are the streams a command uses; tests pass buffers.
type stdio struct {
	in       io.Reader
	out, err io.Writer
}

// cliCommand is one subcommand, or a group of them (subs).
type cliCommand struct {
	name     string
	synopsis string // arguments shown after the name in help
	summary  string // what it does, for help
	run      func(ctx context.Context, args []string, std stdio) error
	subs     []cliCommand
}

// commands returns the command line, in the order help lists it.
func commands() []cliCommand {
	return []cliCommand{
		{
			name:     "enroll",
			synopsis: "--token TOKEN [--server URL] [--config FILE] [flags]",
			summary: "Generate the device key, have the control plane certify it with a one-time token " +
				"(from 'gantryctl devices enroll-token'), and write the state directory (files 0600). " +
				"Enrolling again revokes the old certificate. --server, --state-dir and --server-ca default to " +
				"server, state_dir and server_ca_file of the configuration file.",
			run: enrollCmd,
		},
		{
			name:     "run",
			synopsis: "[--config FILE] [flags]",
			summary: "Run the agent: connect to the control plane's MQTT broker with the device certificate, report " +
				"online/offline state, forward queued data, execute signed commands, and serve Prometheus metrics " +
				"(default 127.0.0.1:9101, \"off\" to disable). Flags override the configuration file.",
			run: runCmd,
		},
		{
			name:    "config",
			summary: "Work with the configuration file (JSON; schema in firmware-config/agent.schema.json).",
			subs: []cliCommand{
				{
					name:     "validate",
					synopsis: "FILE",
					summary: "Check FILE (\"-\" for standard input) against the schema and the agent's rules; print every " +
						"problem as PATH: message (PATH is a JSON Pointer such as /opcua/endpoints/0/url) and exit 1, " +
						"or print \"FILE: valid\" and exit 0.",
					run: configValidateCmd,
				},
				{
					name:    "default",
					summary: "Print the default configuration, every field present; a starting point for /etc/gantry/agent.json.",
					run:     configDefaultCmd,
				},
			},
		},
		{name: "version", summary: "Print the agent's version.", run: versionCmd},
		{name: "help", summary: "Print this help (also -h, --help).", run: helpCmd},
	}
}

// run dispatches args to a command.
func run(ctx context.Context, args []string, std stdio) error {
	if len(args) == 0 {
		printHelp(std.out)
		return nil
	}
	switch args[0] {
	case "-h", "-help", "--help":
		printHelp(std.out)
		return nil
	}
	list, prefix := commands(), "gantry-agent"
	for {
		if len(args) == 0 {
			return usageErrorf("'%s' needs a subcommand: %s", prefix, names(list))
		}
		c, ok := find(list, args[0])
		if !ok {
			return usageErrorf("unknown command '%s %s'; the commands are %s", prefix, args[0], names(list))
		}
		prefix += " " + c.name
		if c.run != nil {
			return c.run(ctx, args[1:], std)
		}
		list, args = c.subs, args[1:]
	}
}

func find(list []cliCommand, name string) (cliCommand, bool) {
	for _, c := range list {
		if c.name == name {
			return c, true
		}
	}
	return cliCommand{}, false
}

func names(list []cliCommand) string {
	s := make([]string, len(list))
	for i, c := range list {
		s[i] = c.name
	}
	return strings.Join(s, ", ")
}

const helpIntro = `gantry-agent is Gantry's edge agent for shop-floor gateways. It enrolls with
the control plane, collects machine data over OPC-UA, and reports it over
MQTT with mutual TLS through an on-disk store-and-forward queue, so nothing
is lost while the network is away. It runs as the unprivileged user
'gantry' under systemd (firmware-config/gantry-agent.service); its state
(key, certificate, CA, command-signing key) lives in /var/lib/gantry-agent.

Usage:
`

// printHelp writes the introduction and every runnable command.
func printHelp(w io.Writer) {
	var b strings.Builder
	b.WriteString(helpIntro)
	var walk func(prefix string, list []cliCommand)
	walk = func(prefix string, list []cliCommand) {
		for _, c := range list {
			name := prefix + " " + c.name
			if c.run == nil {
				walk(name, c.subs)
				continue
			}
			b.WriteString("  " + strings.TrimSpace(name+" "+c.synopsis) + "\n")
			b.WriteString(wrap(c.summary, "      ", 78))
		}
	}
	walk("gantry-agent", commands())
	b.WriteString("\nRun 'gantry-agent COMMAND -h' for a command's flags.\n")
	fmt.Fprint(w, b.String())
}

// wrap breaks text into indented lines of at most width columns.
func wrap(text, indent string, width int) string {
	var b, line strings.Builder
	for _, word := range strings.Fields(text) {
		if line.Len() > 0 && len(indent)+line.Len()+1+len(word) > width {
			b.WriteString(indent + line.String() + "\n")
			line.Reset()
		}
		if line.Len() > 0 {
			line.WriteByte(' ')
		}
		line.WriteString(word)
	}
	if line.Len() > 0 {
		b.WriteString(indent + line.String() + "\n")
	}
	return b.String()
}

func helpCmd(_ context.Context, args []string, std stdio) error {
	if len(args) > 0 {
		return usageErrorf("help takes no arguments; run 'gantry-agent %s -h' for a command's flags", strings.Join(args, " "))
	}
	printHelp(std.out)
	return nil
}

func versionCmd(_ context.Context, args []string, std stdio) error {
	fs := newFlags("version", "", std)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErrorf("version takes no arguments")
	}
	fmt.Fprintf(std.out, "gantry-agent %s (%s %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}

// newFlags returns a flag set for a subcommand that prints its usage to
// std.err on -h.
func newFlags(name, synopsis string, std stdio) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(std.err)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: gantry-agent %s\n", strings.TrimSpace(name+" "+synopsis))
		fs.PrintDefaults()
	}
	return fs
}

// usageError is a mistake on the command line (exit status 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return usageError{msg: fmt.Sprintf(format, args...)}
}

// report prints err once and returns the exit status: 0 on success, on
// an interrupt and after -h; 2 for a usage error; 1 otherwise.
func report(err error, stderr io.Writer) int {
	switch {
	case err == nil, errors.Is(err, context.Canceled), errors.Is(err, flag.ErrHelp):
		return 0
	}
	fmt.Fprintln(stderr, "gantry-agent:", err)
	if errors.As(err, new(usageError)) {
		fmt.Fprintln(stderr, "Run 'gantry-agent help' for usage.")
		return 2
	}
	return 1
}

// parseFlags parses args with fs; a bad flag is a usage error (fs has
// already printed its flags).
func parseFlags(fs *flag.FlagSet, args []string) error {
	err := fs.Parse(args)
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return err
	}
	return usageErrorf("%s: %v", fs.Name(), err)
}
