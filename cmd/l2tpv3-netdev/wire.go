package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/admin"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/backend"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/pump"
)

// wireFlags registers a port's wire options (link state at start,
// impairments, QEMU's QMP socket) on a flag set that fills spec.
func wireFlags(fs interface {
	StringVar(p *string, name, value, usage string)
}, spec *backend.PortSpec) {
	fs.StringVar(&spec.Link, "link", "", "")
	fs.StringVar(&spec.Impair, "impair", "", "")
	fs.StringVar(&spec.ImpairIn, "impair-in", "", "")
	fs.StringVar(&spec.ImpairOut, "impair-out", "", "")
	fs.StringVar(&spec.QMP, "qmp", "", "")
	fs.StringVar(&spec.QMPID, "qmp-id", "", "")
}

// portLink is `port link NAME down|up [in|out|both]`.
func portLink(args []string, out io.Writer) error {
	c, pos, err := portWireArgs("port link", args, out)
	if err != nil {
		return err
	}
	if len(pos) < 2 || len(pos) > 3 || pos[1] != "up" && pos[1] != "down" {
		return usagef("port link: want NAME down|up [in|out|both]")
	}
	req := admin.LinkRequest{Up: pos[1] == "up"}
	if len(pos) == 3 {
		req.Direction = pos[2]
	}
	if _, err := backend.ParseDirections(req.Direction); err != nil {
		return usageError{err}
	}
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	ans, err := c.SetLink(ctx, pos[0], req)
	if err != nil {
		return err
	}
	printWires(out, pos[0], ans.Wires)
	if ans.QMPError != "" {
		fmt.Fprintf(out, "port %s: the guest's link was not set: %s\n", pos[0], ans.QMPError)
	}
	return nil
}

// portImpair is `port impair NAME [in|out|both] SPEC...` (netem's words)
// or `port impair NAME [in|out|both] clear`.
func portImpair(args []string, out io.Writer) error {
	c, pos, err := portWireArgs("port impair", args, out)
	if err != nil {
		return err
	}
	if len(pos) < 2 {
		return usagef("port impair: want NAME [in|out|both] SPEC... (netem's words, e.g. delay 50ms 10ms loss 1%%) or clear")
	}
	req := admin.ImpairRequest{}
	words := pos[1:]
	if _, err := backend.ParseDirections(words[0]); err == nil {
		req.Direction, words = words[0], words[1:]
	}
	if len(words) == 1 && (words[0] == "clear" || words[0] == "none") {
		words = nil
	}
	req.Spec = strings.Join(words, " ")
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	ans, err := c.SetImpairment(ctx, pos[0], req)
	if err != nil {
		return err
	}
	printWires(out, pos[0], ans.Wires)
	return nil
}

// portWireArgs parses --admin anywhere on a link or impair line and
// returns the client and the words in order. Impairment words never start
// with '-', so they are positionals.
func portWireArgs(name string, args []string, out io.Writer) (*admin.Client, []string, error) {
	fs := newFlagSet(name)
	path := adminFlag(fs)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return nil, nil, flagError(err, portUsage, out)
	}
	if len(pos) == 0 {
		return nil, nil, usagef("%s: want the port's name first", name)
	}
	return admin.NewClient(*path), pos, nil
}

// wireNote is the ports table's word on a port's wire: which directions
// are cut or impaired ("" for a plain wire).
func wireNote(wires []pump.WireStatus) string {
	var notes []string
	for _, w := range wires {
		switch {
		case !w.LinkUp:
			notes = append(notes, w.Direction+" link down")
		case w.Impairment != "":
			notes = append(notes, w.Direction+" "+w.Impairment)
		}
	}
	return strings.Join(notes, "; ")
}

// printWires says, one line per direction, what the port's wire is now.
func printWires(out io.Writer, port string, wires []pump.WireStatus) {
	for _, w := range wires {
		link := "up"
		if !w.LinkUp {
			link = "down"
		}
		imp := w.Impairment
		if imp == "" {
			imp = "no impairment"
		}
		fmt.Fprintf(out, "port %s %s: link %s, %s\n", port, w.Direction, link, imp)
	}
}
