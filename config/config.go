// Package config reads the daemon's TOML config file: the daemon settings
// (admin, metrics, log-level) and one port spec per [[port]] table. Each
// port is validated on its own: a bad one is refused by name, with every
// reason found, and the others are kept. Syntax errors and unknown
// top-level keys refuse the whole file.
//
// It may import backend (the port specs it fills); cmd merges a File with
// the command line, where a flag given wins over the file.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/backend"
)

// File is what a config file holds.
type File struct {
	Admin, Metrics string      // "" when the file does not set them
	LogLevel       *slog.Level // nil when the file does not set it
	Ports          []backend.PortConfig
	Refused        []Refused         // ports that cannot start as written
	Pcaps          map[string]string // good port's name → its pcap file
}

// Refused is a port that cannot start as written: reported by name,
// never ending the others.
type Refused struct {
	Spec backend.PortSpec
	Err  error
}

// fileKeys are the config file's top-level keys.
var fileKeys = []string{"admin", "metrics", "log-level", "port"}

// portKeys are the keys of a [[port]] table.
var portKeys = []string{"name", "stream", "vhost-user", "l2tpv3", "batch", "pcap",
	"link", "impair", "impair-in", "impair-out", "qmp", "qmp-id"}

// Parse reads a config file's text. Syntax errors and unknown top-level
// keys refuse the whole file; a bad port is refused alone, in Refused.
func Parse(text string) (File, error) {
	f := File{Pcaps: map[string]string{}}
	var raw map[string]any
	if _, err := toml.Decode(text, &raw); err != nil {
		return f, err
	}
	if err := unknownKeys(raw, fileKeys, ""); err != nil {
		return f, err
	}
	if err := f.settings(raw); err != nil {
		return f, err
	}
	tables, err := portTables(raw["port"])
	if err != nil {
		return f, err
	}
	f.addPorts(tables)
	return f, nil
}

// settings reads admin, metrics and log-level.
func (f *File) settings(raw map[string]any) error {
	for _, s := range []struct {
		key string
		dst *string
	}{{"admin", &f.Admin}, {"metrics", &f.Metrics}} {
		v, ok := raw[s.key]
		if !ok {
			continue
		}
		str, ok := v.(string)
		if !ok {
			return fmt.Errorf("%s: want a string, got %T", s.key, v)
		}
		*s.dst = str
	}
	v, ok := raw["log-level"]
	if !ok {
		return nil
	}
	str, _ := v.(string)
	f.LogLevel = new(slog.Level)
	if err := f.LogLevel.UnmarshalText([]byte(str)); err != nil {
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
func (f *File) addPorts(tables []map[string]any) {
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
		if err != nil {
			f.Refused = append(f.Refused, Refused{spec, err})
			continue
		}
		seenName[spec.Name] = i + 1
		if s := cfg.SocketPath(); s != "" {
			seenSock[s] = spec.Name
		}
		f.Ports = append(f.Ports, cfg)
		if pcap != "" {
			f.Pcaps[spec.Name] = pcap
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
		if !slices.Contains(known, k) {
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
