package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/backend"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/config"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/frontend"
)

// daemonOptions are the settings beyond one port: the config file, the
// admin socket, metrics, captures, and ports the config refused.
type daemonOptions struct {
	config   string
	check    bool
	admin    string
	metrics  string
	pcaps    pcapFlag
	refused  []config.Refused
	nPorts   int      // ports the config and flags name, good or bad
	owned    []string // the ports the config file names, good or bad: a reload's to change
	levelSet bool
}

// pcapFlag collects repeated --pcap PORT=FILE flags.
type pcapFlag map[string]string

// String renders the flag for flag's usage text.
func (p pcapFlag) String() string { return fmt.Sprint(map[string]string(p)) }

// Set records one PORT=FILE capture.
func (p pcapFlag) Set(v string) error {
	name, file, ok := strings.Cut(v, "=")
	if !ok || name == "" || file == "" {
		return fmt.Errorf("want PORT=FILE, got %q", v)
	}
	p[name] = file
	return nil
}

// portFlags are the flags that describe the command line's single port.
var portFlags = []string{"stream", "vhost-user", "socket-path", "l2tpv3", "name"}

// register adds the daemon's flags to fs.
func (d *daemonOptions) register(fs *flag.FlagSet) {
	d.pcaps = pcapFlag{}
	fs.StringVar(&d.config, "config", "", "")
	fs.BoolVar(&d.check, "check", false, "")
	fs.StringVar(&d.admin, "admin", "", "")
	fs.StringVar(&d.metrics, "metrics", "", "")
	fs.Var(d.pcaps, "pcap", "")
}

// finish merges the config file with the command line (a flag given wins
// over the file) and validates the single-port flags when they are given
// or when there is no config file.
func (d *daemonOptions) finish(o *options, fs *flag.FlagSet, spec backend.PortSpec) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	d.levelSet = set["log-level"]
	if d.config != "" {
		if err := d.loadFile(o); err != nil {
			return err
		}
		d.owned = portNames(o.ports, d.refused...)
	}
	// The command line's port is wanted when its flags are given, or when
	// nothing else would run: --admin alone starts an empty daemon that
	// port add and plug fill.
	if anySet(set, portFlags) || d.config == "" && d.admin == "" {
		cfg, err := spec.Parse()
		if err != nil {
			return err
		}
		if err := d.checkUnique(o.ports, spec); err != nil {
			return err
		}
		o.ports = append(o.ports, cfg)
		d.nPorts++
	}
	if d.admin != "" {
		if _, _, err := frontend.ParseUnixSpec(d.admin); err != nil {
			return fmt.Errorf("--admin %q: %w", d.admin, err)
		}
	}
	if d.metrics != "" {
		if _, _, err := net.SplitHostPort(d.metrics); err != nil {
			return fmt.Errorf("--metrics %q: want HOST:PORT (e.g. 127.0.0.1:9469): %v", d.metrics, err)
		}
	}
	return d.checkPcaps(o.ports)
}

// anySet reports whether one of names was given on the command line.
func anySet(set map[string]bool, names []string) bool {
	for _, n := range names {
		if set[n] {
			return true
		}
	}
	return false
}

// checkUnique refuses a command-line port that repeats a config port's name.
func (d *daemonOptions) checkUnique(ports []backend.PortConfig, spec backend.PortSpec) error {
	for _, p := range ports {
		if p.Name == spec.Name {
			return fmt.Errorf("--name %s: the config file %s has a port of that name", spec.Name, d.config)
		}
	}
	return nil
}

// checkPcaps refuses a --pcap for a port no one named.
func (d *daemonOptions) checkPcaps(ports []backend.PortConfig) error {
	known := map[string]bool{}
	for _, p := range ports {
		known[p.Name] = true
	}
	for _, r := range d.refused {
		known[r.Spec.Name] = true
	}
	for name := range d.pcaps {
		if !known[name] {
			return fmt.Errorf("--pcap %s=%s: no port named %s", name, d.pcaps[name], name)
		}
	}
	return nil
}

// loadFile reads the config file into o: daemon settings unless a flag set
// them, good ports into o.ports, bad ones into d.refused.
func (d *daemonOptions) loadFile(o *options) error {
	f, err := loadConfig(d.config)
	if err != nil {
		return err
	}
	for _, s := range []struct {
		dst *string
		v   string
	}{{&d.admin, f.Admin}, {&d.metrics, f.Metrics}} {
		if *s.dst == "" {
			*s.dst = s.v
		}
	}
	if f.LogLevel != nil && !d.levelSet {
		o.logLevel = *f.LogLevel
	}
	o.ports = append(o.ports, f.Ports...)
	d.refused = append(d.refused, f.Refused...)
	d.nPorts += len(f.Ports) + len(f.Refused)
	for name, file := range f.Pcaps {
		if d.pcaps[name] == "" {
			d.pcaps[name] = file
		}
	}
	return nil
}

// loadConfig reads and parses the config file, its errors naming --config.
func loadConfig(path string) (config.File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return config.File{}, fmt.Errorf("--config: %w", err)
	}
	f, err := config.Parse(string(data))
	if err != nil {
		return f, fmt.Errorf("--config %s: %w", path, err)
	}
	return f, nil
}

// runCheck prints what the config holds (each port's inner MTU and the
// underlay MTU behind it, the route asked on this host unless underlay-mtu=
// says), every refused port by name, and returns the exit status: 0 when
// every port is good, 1 otherwise.
func runCheck(o options, out io.Writer) int {
	for _, c := range o.ports {
		fe := "stream " + fmt.Sprint(c.Stream)
		if c.VhostUser != nil {
			fe = "vhost-user " + c.VhostUser.Path
		}
		inner, u := innerMTU(c.L2TP)
		mtu := fmt.Sprintf("inner MTU %d (%s)", inner, underlayNote(u))
		if c.VhostUser != nil && c.VhostUser.MTU > inner {
			mtu += fmt.Sprintf("; mtu=%d is above it", c.VhostUser.MTU)
		}
		fmt.Fprintf(out, "port %s: ok (%s, session %d, %s)\n", c.Name, fe, c.L2TP.SessionID, mtu)
	}
	for _, r := range o.daemon.refused {
		fmt.Fprintf(out, "port %s: %s\n", r.Spec.Name, oneLine(r.Err))
	}
	what := "the command line"
	if o.daemon.config != "" {
		what = o.daemon.config
	}
	fmt.Fprintf(out, "%s: %d ports, %d good, %d refused\n", what, o.daemon.nPorts, len(o.ports), len(o.daemon.refused))
	if len(o.daemon.refused) > 0 {
		return 1
	}
	return 0
}

// oneLine joins a multi-error's lines with "; " so each port is one line.
func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }
