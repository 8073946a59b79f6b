package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/admin"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/l2tp"
)

const peerConfigUsage = `Usage: l2tpv3-netdev peer-config --for linux|vyos|qemu --l2tpv3 OPTIONS [--l2tpv3 OPTIONS ...]
       l2tpv3-netdev peer-config --for linux|vyos|qemu --config FILE [--port NAME ...]
       l2tpv3-netdev peer-config --for linux|vyos|qemu --port NAME [--port NAME ...] [--admin PATH]
                                 [--ifname PREFIX] [--tunnel-id N]

Prints, on standard output, the configuration of the far end of the given
sessions: what the peer host must run so that it and this sidecar form the
pseudowires. Sessions with the same addresses, encapsulation and ports are one
tunnel at the far end and printed together.

  --for linux      'ip l2tp' and 'ip link' commands (kernel l2tp_eth), one
                   tunnel with all its sessions: pipe them into sh on the peer
  --for vyos       VyOS 'set interfaces l2tpv3 ...' commands (documented VyOS
                   syntax; not run on VyOS). VyOS has no cookie or seq setting
                   and opens one tunnel per interface
  --for qemu       the QEMU -netdev option string of the far end, one per session
  --l2tpv3 OPTIONS the session's --l2tpv3 string (repeatable)
  --config FILE    the sessions of the config file's ports (all, or those --port names)
  --port NAME      a port of the running daemon (asked over --admin), or of --config
  --admin PATH     the daemon's admin socket (default $L2TPV3_NETDEV_ADMIN or ` + defaultAdminPath + `)
  --ifname PREFIX  the far end's interface names, PREFIX0, PREFIX1, ... (default l2tpeth)
  --tunnel-id N    the far end's first tunnel ID (default 1; later tunnels count up)

What the peer cannot express is refused with the reason (seq=recv or an offset
for Linux; cookies or seq for VyOS; per-direction cookie lengths or seq for
QEMU). The interface MTU printed is the inner MTU of underlay-mtu= (1500 if
not given).
`

// peerRequest is a validated peer-config command line.
type peerRequest struct {
	target   string
	sessions []l2tp.Config
	ifname   string
	tunnelID uint32
}

// peerConfigMain is the peer-config subcommand.
func peerConfigMain(args []string, out, _ io.Writer) error {
	r, err := parsePeerConfigArgs(args, out)
	if err != nil {
		return err
	}
	lines, err := peerConfig(r)
	if err != nil {
		return err
	}
	_, err = io.WriteString(out, strings.Join(lines, "\n")+"\n")
	return err
}

// multiFlag collects a repeatable string flag.
type multiFlag []string

// String renders the values for flag's usage text.
func (m *multiFlag) String() string { return strings.Join(*m, " ") }

// Set records one more value.
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// parsePeerConfigArgs reads the flags and gathers the sessions from
// --l2tpv3, --config or the running daemon.
func parsePeerConfigArgs(args []string, out io.Writer) (peerRequest, error) {
	r := peerRequest{}
	var opts, ports multiFlag
	fs := newFlagSet("peer-config")
	fs.StringVar(&r.target, "for", "", "")
	fs.Var(&opts, "l2tpv3", "")
	fs.Var(&ports, "port", "")
	config := fs.String("config", "", "")
	adminPath := adminFlag(fs)
	fs.StringVar(&r.ifname, "ifname", "l2tpeth", "")
	tunnelID := fs.String("tunnel-id", "1", "")
	if err := fs.Parse(args); err != nil {
		return r, flagError(err, peerConfigUsage, out)
	}
	switch {
	case fs.NArg() > 0:
		return r, usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	case r.target != "linux" && r.target != "vyos" && r.target != "qemu":
		return r, usageError{fmt.Errorf("--for %q: want linux, vyos or qemu", r.target)}
	case len(opts) > 0 && (*config != "" || len(ports) > 0):
		return r, usageError{errors.New("--l2tpv3 names the sessions itself: not with --config or --port")}
	case len(opts) == 0 && *config == "" && len(ports) == 0:
		return r, usageError{errors.New("no session: give --l2tpv3 OPTIONS, --config FILE or --port NAME")}
	}
	id, err := strconv.ParseUint(*tunnelID, 10, 32)
	if err != nil || id == 0 {
		return r, usageError{fmt.Errorf("--tunnel-id %q: want 1..4294967295", *tunnelID)}
	}
	r.tunnelID = uint32(id)
	for _, o := range opts {
		c, err := l2tp.ParseOptions(o)
		if err != nil {
			return r, usageError{fmt.Errorf("--l2tpv3: %w", err)}
		}
		r.sessions = append(r.sessions, c)
	}
	switch {
	case *config != "":
		r.sessions, err = configSessions(*config, ports)
	case len(ports) > 0:
		r.sessions, err = daemonSessions(*adminPath, ports)
	}
	return r, err
}

// configSessions reads the sessions of the config file's ports: all of
// them, or those named (each must exist and be valid).
func configSessions(file string, names []string) ([]l2tp.Config, error) {
	f, err := loadConfig(file)
	if err != nil {
		return nil, err
	}
	byName := map[string]l2tp.Config{}
	var all []l2tp.Config
	for _, p := range f.Ports {
		byName[p.Name] = p.L2TP
		all = append(all, p.L2TP)
	}
	for _, rp := range f.Refused {
		if len(names) == 0 || slices.Contains(names, rp.Spec.Name) {
			return nil, fmt.Errorf("--config %s: port %s: %v", file, rp.Spec.Name, rp.Err)
		}
	}
	if len(names) == 0 {
		return all, nil
	}
	var sel []l2tp.Config
	for _, n := range names {
		c, ok := byName[n]
		if !ok {
			return nil, fmt.Errorf("--port %s: no such port in %s", n, file)
		}
		sel = append(sel, c)
	}
	return sel, nil
}

// daemonSessions asks the running daemon for the named ports' sessions.
func daemonSessions(adminPath string, names []string) ([]l2tp.Config, error) {
	c := admin.NewClient(adminPath)
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	var sessions []l2tp.Config
	for _, n := range names {
		st, err := c.Port(ctx, n)
		if err != nil {
			return nil, err
		}
		cfg, err := l2tp.ParseOptions(st.L2TPv3)
		if err != nil {
			return nil, fmt.Errorf("port %s: the daemon's l2tpv3 %q: %w", n, st.L2TPv3, err)
		}
		sessions = append(sessions, cfg)
	}
	return sessions, nil
}

// peerConfig renders the far end of r's sessions for r.target, tunnel by
// tunnel; interface names and tunnel IDs count up across tunnels.
func peerConfig(r peerRequest) ([]string, error) {
	var lines []string
	next, id := 0, r.tunnelID
	for _, tunnel := range l2tp.PeerTunnels(r.sessions) {
		ifnames := make([]string, len(tunnel))
		for i := range tunnel {
			ifnames[i] = r.ifname + strconv.Itoa(next+i)
		}
		var cmds []string
		var err error
		switch r.target {
		case "linux":
			cmds, err = l2tp.LinuxPeerTunnel(tunnel, id, ifnames)
			id++
		case "vyos":
			cmds, err = l2tp.VyOSPeerCommands(tunnel, id, ifnames)
			id += uint32(len(tunnel))
		case "qemu":
			cmds, err = qemuPeers(tunnel, ifnames)
		}
		if err != nil {
			return nil, err
		}
		lines = append(lines, cmds...)
		next += len(tunnel)
	}
	return lines, nil
}

// qemuPeers is one -netdev option string per session, ids from ifnames.
func qemuPeers(sessions []l2tp.Config, ids []string) ([]string, error) {
	if len(sessions) > 1 && sessions[0].Encap == l2tp.EncapUDP {
		return nil, errors.New("l2tpv3: QEMU opens a socket per -netdev, so sessions sharing one UDP tunnel have no QEMU peer: give each its own UDP port")
	}
	var out []string
	for i, c := range sessions {
		s, err := c.QEMUPeerOptions(ids[i])
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}
