package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/admin"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/backend"
)

// defaultAdminPath is the admin socket the subcommands use unless --admin
// or $L2TPV3_NETDEV_ADMIN says otherwise.
const defaultAdminPath = admin.DefaultPath

// clientTimeout bounds one admin request (opening a port is quick).
const clientTimeout = 30 * time.Second

const portUsage = `Usage: l2tpv3-netdev port add NAME --stream ...|--vhost-user ... --l2tpv3 OPTIONS [--batch N]
                     [--link down[ in|out]] [--impair SPEC] [--impair-in SPEC] [--impair-out SPEC]
                     [--qmp unix:PATH [--qmp-id ID]]
       l2tpv3-netdev port del NAME
       l2tpv3-netdev port link NAME down|up [in|out|both]
       l2tpv3-netdev port impair NAME [in|out|both] SPEC...|clear
       l2tpv3-netdev port show NAME
       l2tpv3-netdev port capture NAME FILE [--overwrite]
       l2tpv3-netdev port capture NAME --stop
Every form takes --admin PATH (default $L2TPV3_NETDEV_ADMIN or ` + defaultAdminPath + `).
`

// adminFlag registers --admin on fs with its default.
func adminFlag(fs *flag.FlagSet) *string {
	def := os.Getenv("L2TPV3_NETDEV_ADMIN")
	if def == "" {
		def = defaultAdminPath
	}
	return fs.String("admin", def, "")
}

// parseInterleaved parses fs's flags wherever they appear among the
// positional arguments, which it returns in order.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos, args = append(pos, args[0]), args[1:]
	}
}

// newFlagSet is a quiet flag set whose errors become usage errors.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// flagError turns a flag package error into a usage error (or help).
func flagError(err error, usage string, out io.Writer) error {
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(out, usage)
		return errHelpShown
	}
	return usageError{err}
}

// portsMain is `l2tpv3-netdev ports`: a table of the daemon's ports.
func portsMain(args []string, out, _ io.Writer) error {
	fs := newFlagSet("ports")
	path := adminFlag(fs)
	asJSON := fs.Bool("json", false, "")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return flagError(err, "Usage: l2tpv3-netdev ports [--admin PATH] [--json]\n", out)
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	sts, err := admin.NewClient(*path).Ports(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(out, sts)
	}
	printPorts(out, sts)
	return nil
}

// printPorts renders statuses as a table, one port a line.
func printPorts(out io.Writer, sts []backend.PortStatus) {
	tw := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tFRONT END\tCONNECTED\tRX PKTS\tTX PKTS\tDROPS\tSESSION\tNOTE")
	for _, st := range sts {
		fe := st.FrontEnd.String()
		if st.FrontEnd.Kind == "" {
			fe = "-"
		}
		note := st.Error
		if st.Capture != nil {
			note = "capturing to " + st.Capture.Target
		}
		if w := wireNote(st.Wires); w != "" {
			note = strings.TrimPrefix(note+"; "+w, "; ")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\n", st.Name, st.State, fe,
			yesNo(st.FrontEnd.Connected), st.Session.RxPackets, st.Session.TxPackets,
			st.Session.Dropped()+st.FrontEnd.FromVMDropped+st.FrontEnd.ToVMDropped, st.SessionID, note)
	}
	tw.Flush()
}

// yesNo spells a boolean for the table.
func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// printJSON writes v as indented JSON.
func printJSON(out io.Writer, v any) error {
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// portMain is `l2tpv3-netdev port VERB NAME ...`.
func portMain(args []string, out, errOut io.Writer) error {
	if len(args) == 0 {
		return usagef("want add, del, show, capture, link or impair")
	}
	verbs := map[string]func([]string, io.Writer) error{
		"add": portAdd, "del": portDel, "delete": portDel, "rm": portDel,
		"show": portShow, "capture": portCapture, "link": portLink, "impair": portImpair,
	}
	if args[0] == "--help" || args[0] == "-h" || args[0] == "help" {
		fmt.Fprint(out, portUsage)
		return errHelpShown
	}
	verb, ok := verbs[args[0]]
	if !ok {
		return usagef("unknown verb %q: want add, del, show, capture, link or impair", args[0])
	}
	return verb(args[1:], out)
}

// portArgs parses a port verb's line: NAME first (or anywhere), the
// verb's own flags, --admin; it returns the client and the positionals.
func portArgs(fs *flag.FlagSet, args []string, out io.Writer, want int) (*admin.Client, []string, error) {
	path := adminFlag(fs)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return nil, nil, flagError(err, portUsage, out)
	}
	if len(pos) < want {
		return nil, nil, usagef("%s: want %d argument(s), the port's name first", fs.Name(), want)
	}
	if len(pos) > want {
		return nil, nil, usagef("%s: unexpected argument %q", fs.Name(), pos[want])
	}
	return admin.NewClient(*path), pos, nil
}

// portAdd is `port add NAME --stream|--vhost-user ... --l2tpv3 ...`.
func portAdd(args []string, out io.Writer) error {
	fs := newFlagSet("port add")
	var spec backend.PortSpec
	fs.StringVar(&spec.Stream, "stream", "", "")
	fs.StringVar(&spec.VhostUser, "vhost-user", "", "")
	fs.StringVar(&spec.VhostUser, "socket-path", "", "")
	fs.StringVar(&spec.L2TPv3, "l2tpv3", "", "")
	fs.IntVar(&spec.Batch, "batch", 0, "")
	wireFlags(fs, &spec)
	c, pos, err := portArgs(fs, args, out, 1)
	if err != nil {
		return err
	}
	spec.Name = pos[0]
	if _, err := spec.Parse(); err != nil { // say it here, before asking the daemon
		return usageError{err}
	}
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	st, err := c.AddPort(ctx, spec)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "port %s added: %s, session %d, %s\n", st.Name, st.FrontEnd, st.SessionID, st.State)
	return nil
}

// portDel is `port del NAME`.
func portDel(args []string, out io.Writer) error {
	c, pos, err := portArgs(newFlagSet("port del"), args, out, 1)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	st, err := c.RemovePort(ctx, pos[0])
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "port %s removed: %s\n", st.Name, st.Session)
	return nil
}

// portShow is `port show NAME`: the status as JSON.
func portShow(args []string, out io.Writer) error {
	c, pos, err := portArgs(newFlagSet("port show"), args, out, 1)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	st, err := c.Port(ctx, pos[0])
	if err != nil {
		return err
	}
	return printJSON(out, st)
}

// portCapture is `port capture NAME FILE` (start) or `port capture NAME
// --stop`.
func portCapture(args []string, out io.Writer) error {
	fs := newFlagSet("port capture")
	stop := fs.Bool("stop", false, "")
	overwrite := fs.Bool("overwrite", false, "")
	want := 2
	for _, a := range args {
		if a == "--stop" || a == "-stop" {
			want = 1
		}
	}
	c, pos, err := portArgs(fs, args, out, want)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	if *stop {
		st, err := c.StopCapture(ctx, pos[0])
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "port %s: capture to %s stopped: %s frames, %s dropped\n", pos[0], st.Target,
			strconv.FormatUint(st.Captured, 10), strconv.FormatUint(st.Dropped, 10))
		return nil
	}
	file, err := filepath.Abs(pos[1])
	if err != nil {
		return fmt.Errorf("port capture %s: %w", pos[1], err)
	}
	st, err := c.StartCapture(ctx, pos[0], admin.CaptureRequest{Path: file, Overwrite: *overwrite})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "port %s: capturing to %s (stop with: l2tpv3-netdev port capture %s --stop)\n", pos[0], st.Target, pos[0])
	return nil
}
