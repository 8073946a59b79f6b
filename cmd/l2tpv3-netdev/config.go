package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/backend"
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
	refused  []refusedPort
	nPorts   int // ports the config and flags name, good or bad
	levelSet bool
}

// refusedPort is a port that cannot start as written: reported by name,
// never ending the others.
type refusedPort struct {
	spec backend.PortSpec
	err  error
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
		known[r.spec.Name] = true
	}
	for name := range d.pcaps {
		if !known[name] {
			return fmt.Errorf("--pcap %s=%s: no port named %s", name, d.pcaps[name], name)
		}
	}
	return nil
}

// fileKeys are the config file's top-level keys.
var fileKeys = []string{"admin", "metrics", "log-level", "port"}

// portKeys are the keys of a [[port]] table.
var portKeys = []string{"name", "stream", "vhost-user", "l2tpv3", "batch", "pcap",
	"link", "impair", "impair-in", "impair-out", "qmp", "qmp-id"}

// loadFile reads the config file into o: daemon settings unless a flag set
// them, good ports into o.ports, bad ones into d.refused. Syntax errors and
// unknown top-level keys refuse the whole file.
func (d *daemonOptions) loadFile(o *options) error {
	data, err := os.ReadFile(d.config)
	if err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	var raw map[string]any
	if _, err := toml.Decode(string(data), &raw); err != nil {
		return fmt.Errorf("--config %s: %w", d.config, err)
	}
	if err := unknownKeys(raw, fileKeys, ""); err != nil {
		return fmt.Errorf("--config %s: %w", d.config, err)
	}
	if err := d.fileSettings(o, raw); err != nil {
		return fmt.Errorf("--config %s: %w", d.config, err)
	}
	tables, err := portTables(raw["port"])
	if err != nil {
		return fmt.Errorf("--config %s: %w", d.config, err)
	}
	d.addPorts(o, tables)
	return nil
}

// fileSettings applies admin, metrics and log-level from the file where no
// flag overrides them.
func (d *daemonOptions) fileSettings(o *options, raw map[string]any) error {
	for _, s := range []struct {
		key string
		dst *string
	}{{"admin", &d.admin}, {"metrics", &d.metrics}} {
		v, ok := raw[s.key]
		if !ok || *s.dst != "" {
			continue
		}
		str, ok := v.(string)
		if !ok {
			return fmt.Errorf("%s: want a string, got %T", s.key, v)
		}
		*s.dst = str
	}
	v, ok := raw["log-level"]
	if !ok || d.levelSet {
		return nil
	}
	str, _ := v.(string)
	if err := o.logLevel.UnmarshalText([]byte(str)); err != nil {
		return fmt.Errorf("log-level %v: want debug, info, warn or error", v)
	}
	return nil
}

// portTables checks that "port" is an array of tables ([[port]]).
func portTables(v any) ([]map[string]any, error) {
	switch t := v.(type) {
	case nil:
		return nil, nil
	case []map[string]any:
		return t, nil
	}
	return nil, fmt.Errorf("port: want [[port]] tables, got %T", v)
}

// addPorts validates each [[port]] on its own: a bad one is refused by
// name (with every reason found) and the others are kept.
func (d *daemonOptions) addPorts(o *options, tables []map[string]any) {
	seenName := map[string]int{}
	seenSock := map[string]string{}
	for i, t := range tables {
		spec, pcap, err := decodePort(t, i+1)
		var cfg backend.PortConfig
		if err == nil {
			cfg, err = spec.Parse()
		}
		if err == nil {
			err = portConflict(cfg, seenName, seenSock, i+1)
		}
		d.nPorts++
		if err != nil {
			d.refused = append(d.refused, refusedPort{spec, err})
			continue
		}
		seenName[spec.Name] = i + 1
		if s := cfg.SocketPath(); s != "" {
			seenSock[s] = spec.Name
		}
		o.ports = append(o.ports, cfg)
		if pcap != "" && d.pcaps[spec.Name] == "" {
			d.pcaps[spec.Name] = pcap
		}
	}
}

// portConflict refuses a port that repeats an earlier port's name or
// socket path.
func portConflict(cfg backend.PortConfig, names map[string]int, socks map[string]string, idx int) error {
	if n, ok := names[cfg.Name]; ok {
		return fmt.Errorf("[[port]] %d: name %s is also [[port]] %d's", idx, cfg.Name, n)
	}
	if other, ok := socks[cfg.SocketPath()]; ok && cfg.SocketPath() != "" {
		return fmt.Errorf("socket %s is also port %s's", cfg.SocketPath(), other)
	}
	return nil
}

// decodePort reads one [[port]] table into a spec and its optional pcap
// file; unknown keys and wrong types are errors naming the key.
func decodePort(t map[string]any, idx int) (backend.PortSpec, string, error) {
	var spec backend.PortSpec
	var pcap string
	var errs []error
	if err := unknownKeys(t, portKeys, "port."); err != nil {
		errs = append(errs, err)
	}
	strs := map[string]*string{"name": &spec.Name, "stream": &spec.Stream, "vhost-user": &spec.VhostUser,
		"l2tpv3": &spec.L2TPv3, "pcap": &pcap, "link": &spec.Link, "impair": &spec.Impair,
		"impair-in": &spec.ImpairIn, "impair-out": &spec.ImpairOut, "qmp": &spec.QMP, "qmp-id": &spec.QMPID}
	for key, dst := range strs {
		if v, ok := t[key]; ok {
			s, ok := v.(string)
			if !ok {
				errs = append(errs, fmt.Errorf("port.%s: want a string, got %v", key, v))
			}
			*dst = s
		}
	}
	if v, ok := t["batch"]; ok {
		n, ok := v.(int64)
		if !ok {
			errs = append(errs, fmt.Errorf("port.batch: want an integer, got %v", v))
		}
		spec.Batch = int(n)
		if ok && n == 0 {
			errs = append(errs, errors.New("port.batch 0: must be 1..1024"))
		}
	}
	if spec.Name == "" {
		spec.Name = fmt.Sprintf("[[port]] %d", idx)
		errs = append(errs, errors.New("port.name is required"))
	}
	return spec, pcap, errors.Join(errs...)
}

// unknownKeys refuses keys outside known, naming each (typos must not pass
// silently), with the closest known key as a hint.
func unknownKeys(t map[string]any, known []string, prefix string) error {
	var bad []string
	for k := range t {
		if !contains(known, k) {
			bad = append(bad, k)
		}
	}
	sort.Strings(bad)
	var errs []error
	for _, k := range bad {
		msg := fmt.Sprintf("unknown key %q", prefix+k)
		if near := closest(k, known); near != "" {
			msg += fmt.Sprintf(" (did you mean %q?)", prefix+near)
		}
		errs = append(errs, errors.New(msg))
	}
	return errors.Join(errs...)
}

// contains reports whether list holds s.
func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// closest returns the known key within two edits of k, "" if none.
func closest(k string, known []string) string {
	norm := strings.NewReplacer("_", "-").Replace(strings.ToLower(k))
	best, bestD := "", 3
	for _, c := range known {
		if d := editDistance(norm, c); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance, for typo hints.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
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
		fmt.Fprintf(out, "port %s: %s\n", r.spec.Name, oneLine(r.err))
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
