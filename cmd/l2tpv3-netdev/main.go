package main

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "0.1.0-dev"

// exitUsage is the exit status for a refused command line, as flag uses.
const exitUsage = 2

// subcommand is a verb given before any flag: `l2tpv3-netdev NAME args…`.
type subcommand struct {
	// run does the work; errors wrapped by usageError exit with exitUsage.
	run func(args []string, stdout, stderr io.Writer) error
	// failExit is the exit status for any other error.
	failExit int
}

// subcommands are the verbs; adding one is one line here.
var subcommands = map[string]subcommand{
	"ports":       {portsMain, 1},
	"port":        {portMain, 1},
	"libvirt-xml": {libvirtXMLMain, exitUsage},
	"plug":        {plugMain, 1},
	"unplug":      {unplugMain, 1},
	"peer-config": {peerConfigMain, 1},
	"reload":      {reloadMain, 1},
}

// main dispatches to a subcommand or runs the daemon.
func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

// realMain returns the exit status instead of exiting, so tests can call it.
func realMain(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		if sub, ok := subcommands[args[0]]; ok {
			return subcommandExit(args[0], sub, sub.run(args[1:], stdout, stderr), stderr)
		}
	}
	return daemonMain(args, stdout, stderr)
}

// subcommandExit prints a subcommand's error and picks the exit status.
func subcommandExit(name string, sub subcommand, err error, stderr io.Writer) int {
	switch {
	case err == nil, errors.Is(err, errHelpShown):
		return 0
	case errors.As(err, new(usageError)):
		fmt.Fprintf(stderr, "l2tpv3-netdev %s: %v\nTry 'l2tpv3-netdev %s --help'.\n", name, err, name)
		return exitUsage
	}
	fmt.Fprintf(stderr, "l2tpv3-netdev %s: %v\n", name, err)
	return sub.failExit
}

// daemonMain parses the daemon's command line, then checks the config
// (--check) or runs the ports.
func daemonMain(args []string, stdout, stderr io.Writer) int {
	opts, err := parseArgs(args, stdout)
	switch {
	case errors.Is(err, errHelpShown):
		return 0
	case err != nil && opts.daemon.check:
		fmt.Fprintf(stdout, "%v\n", err)
		return 1
	case err != nil:
		fmt.Fprintf(stderr, "l2tpv3-netdev: %v\nTry 'l2tpv3-netdev --help'.\n", err)
		return exitUsage
	case opts.daemon.check:
		return runCheck(opts, stdout)
	}
	if err := run(opts, stderr); err != nil {
		fmt.Fprintf(stderr, "l2tpv3-netdev: %v\n", err)
		return 1
	}
	return 0
}

// usageError is a refused subcommand line (exit status 2, a pointer to
// --help), as opposed to a failure of the work itself.
type usageError struct{ err error }

// Error is the refusal's message.
func (u usageError) Error() string { return u.err.Error() }

// Unwrap exposes the refusal's cause.
func (u usageError) Unwrap() error { return u.err }

// usagef builds a usageError.
func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}
