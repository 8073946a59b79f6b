package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/admin"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/backend"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/config"
)

// reload re-reads the config file (SIGHUP, POST /v1/reload) and applies
// its ports: new ones added, gone ones removed, changed ones replaced,
// the same ones untouched. A file that does not parse, or has a port that
// does not validate, changes nothing; the error names the file. Ports
// added through the admin API or the command line are left alone. Only
// the [[port]] tables are applied: admin, metrics and log-level need a
// restart.
func (d *daemon) reload() (backend.Change, error) {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	ports, pcaps, err := loadPorts(d.config)
	if err == nil {
		var ch backend.Change
		if ch, err = d.ports.Apply(d.owned, ports); err == nil {
			d.owned = portNames(ports)
			d.startCaptures(ch.Started(), pcaps)
			d.log.Info("config reloaded", "config", d.config, "added", len(ch.Added), "removed", len(ch.Removed),
				"replaced", len(ch.Replaced), "kept", len(ch.Kept), "failed", len(ch.Failed),
				"changed", changedNames(ch))
			return ch, nil
		}
		err = fmt.Errorf("reload %s: %w", d.config, err)
	}
	d.log.Error("config reload refused, nothing changed", "config", d.config, "err", oneLine(err))
	return backend.Change{}, err
}

// loadPorts reads the config file's ports for a reload: every port must
// be good, since a half-applied file would leave the daemon in neither
// state.
func loadPorts(path string) ([]backend.PortConfig, map[string]string, error) {
	f, err := loadConfig(path)
	if err != nil {
		return nil, nil, err
	}
	var errs []error
	for _, r := range f.Refused {
		errs = append(errs, fmt.Errorf("port %s: %s", r.Spec.Name, oneLine(r.Err)))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, nil, fmt.Errorf("--config %s: %w", path, err)
	}
	return f.Ports, f.Pcaps, nil
}

// startCaptures starts the file's pcap capture of each port named.
func (d *daemon) startCaptures(names []string, pcaps map[string]string) {
	for _, name := range names {
		file := pcaps[name]
		if file == "" {
			continue
		}
		p, err := d.ports.Get(name)
		if err != nil {
			continue // failed to start: logged already
		}
		if _, _, err := admin.StartFileCapture(p, file, true); err != nil {
			p.Logger().Error("pcap refused", "file", file, "err", err)
		}
	}
}

// portNames is the names of ports, and of the refused ports of a config.
func portNames(ports []backend.PortConfig, refused ...config.Refused) []string {
	names := make([]string, 0, len(ports)+len(refused))
	for _, p := range ports {
		names = append(names, p.Name)
	}
	for _, r := range refused {
		names = append(names, r.Spec.Name)
	}
	return names
}

// changedNames lists what a reload touched, e.g. "+c -b ~a", for its log
// line.
func changedNames(ch backend.Change) string {
	var parts []string
	for _, g := range []struct {
		mark  string
		names []string
	}{{"+", ch.Added}, {"-", ch.Removed}, {"~", ch.Replaced}, {"!", ch.Failed}} {
		for _, n := range g.names {
			parts = append(parts, g.mark+n)
		}
	}
	return strings.Join(parts, " ")
}

// reloadMain is `l2tpv3-netdev reload`: the daemon re-reads its config
// file, as on SIGHUP, and what changed is printed.
func reloadMain(args []string, out, _ io.Writer) error {
	fs := newFlagSet("reload")
	path := adminFlag(fs)
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return flagError(err, "Usage: l2tpv3-netdev reload [--admin PATH]\n", out)
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q", pos[0])
	}
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	ch, err := admin.NewClient(*path).Reload(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "reloaded: %s\n", ch)
	if s := changedNames(ch); s != "" {
		fmt.Fprintln(out, s)
	}
	return nil
}
