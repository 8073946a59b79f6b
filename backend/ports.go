package backend

import (
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/frontend"
)

// ErrNoPort is returned for a port name that is not running.
var ErrNoPort = errors.New("no such port")

// ErrPortExists matches (errors.Is) Add's refusal of a name or socket path
// another port already has.
var ErrPortExists = errors.New("port exists")

// existsError is such a refusal, its message saying what is taken.
type existsError string

// Error says which name or socket is taken.
func (e existsError) Error() string { return string(e) }

// Is makes errors.Is(err, ErrPortExists) true.
func (e existsError) Is(target error) bool { return target == ErrPortExists }

// Ports is the set of named ports one process runs, and the record of
// those it was asked to run that could not start (failed, listed and
// exported until added again or removed). Ports are added and removed
// while the others carry traffic; the lock guards only the maps, never the
// data path.
type Ports struct {
	log    *slog.Logger
	mu     sync.Mutex            // guards m, asked and failed
	m      map[string]*Port      // running ports
	asked  map[string]PortConfig // each running port's config as given to Add
	failed map[string]PortStatus // ports that could not start
}

// NewPorts returns an empty set logging through log.
func NewPorts(log *slog.Logger) *Ports {
	return &Ports{log: log, m: map[string]*Port{}, asked: map[string]PortConfig{}, failed: map[string]PortStatus{}}
}

// Add opens and starts a port. A duplicate name or socket path is refused
// before anything is opened; a port that fails to open leaves the others
// untouched.
func (ps *Ports) Add(cfg PortConfig) (*Port, error) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if _, ok := ps.m[cfg.Name]; ok {
		return nil, existsError(fmt.Sprintf("port %s: a port of that name exists", cfg.Name))
	}
	if path := cfg.SocketPath(); path != "" {
		for _, p := range ps.m {
			if p.cfg.SocketPath() == path {
				return nil, existsError(fmt.Sprintf("port %s: socket %s is port %s's", cfg.Name, path, p.cfg.Name))
			}
		}
	}
	p, err := OpenPort(cfg, ps.log)
	if err != nil {
		return nil, fmt.Errorf("port %s: %w", cfg.Name, err)
	}
	ps.m[cfg.Name] = p
	ps.asked[cfg.Name] = cfg
	delete(ps.failed, cfg.Name)
	p.Start()
	return p, nil
}

// Start is Add for a port the daemon was configured with: if it fails, the
// failure is logged with the port's name and session and the port recorded
// as failed.
func (ps *Ports) Start(cfg PortConfig) (*Port, error) {
	p, err := ps.Add(cfg)
	if err != nil {
		ps.log.Error("port failed to start", "port", cfg.Name, "session", cfg.L2TP.SessionID, "err", err)
		var vhostUser, stream string
		if cfg.VhostUser != nil {
			vhostUser = cfg.VhostUser.Path
		}
		if cfg.Stream != nil {
			stream = cfg.Stream.String()
		}
		ps.recordFailed(cfg.Name, cfg.L2TP.SessionID, cfg.L2TP.String(), vhostUser, stream, err)
	}
	return p, err
}

// Refuse logs and records as failed a configured port whose spec does not
// parse, as Start does for one that does not open.
func (ps *Ports) Refuse(spec PortSpec, err error) {
	ps.log.Error("port refused", "port", spec.Name, "session", spec.SessionID(), "err", oneLine(err))
	ps.recordFailed(spec.Name, spec.SessionID(), spec.L2TPv3, spec.VhostUser, spec.Stream, err)
}

// recordFailed keeps a port that could not start, and why, with what its
// status can say without a front end or a tunnel.
func (ps *Ports) recordFailed(name string, session uint32, l2tpv3, vhostUser, stream string, err error) {
	st := PortStatus{Name: name, SessionID: session, State: PortFailed, Error: oneLine(err), L2TPv3: l2tpv3}
	switch {
	case vhostUser != "":
		st.FrontEnd = frontend.Status{Kind: "vhost-user", Address: vhostUser}
	case stream != "":
		st.FrontEnd = frontend.Status{Kind: "stream", Address: stream}
	}
	ps.mu.Lock()
	ps.failed[name] = st
	ps.mu.Unlock()
}

// oneLine is err's message on one line (a config error may list several).
func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }

// Remove closes the named port (its front end and socket file, its tunnel)
// and forgets it, or forgets a failed one; it returns the port's last
// status.
func (ps *Ports) Remove(name string) (PortStatus, error) {
	ps.mu.Lock()
	p, ok := ps.m[name]
	delete(ps.m, name)
	delete(ps.asked, name)
	failed, wasFailed := ps.failed[name]
	delete(ps.failed, name)
	ps.mu.Unlock()
	switch {
	case ok:
		p.Close()
		p.log.Info("port removed")
		return p.Status(), nil
	case wasFailed:
		return failed, nil
	}
	return PortStatus{}, fmt.Errorf("port %s: %w", name, ErrNoPort)
}

// Get returns the named port.
func (ps *Ports) Get(name string) (*Port, error) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	p, ok := ps.m[name]
	if !ok {
		return nil, fmt.Errorf("port %s: %w", name, ErrNoPort)
	}
	return p, nil
}

// List returns every port, sorted by name.
func (ps *Ports) List() []*Port {
	ps.mu.Lock()
	out := make([]*Port, 0, len(ps.m))
	for _, p := range ps.m {
		out = append(out, p)
	}
	ps.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].cfg.Name < out[j].cfg.Name })
	return out
}

// Statuses reports every port, those that could not start included,
// sorted by name.
func (ps *Ports) Statuses() []PortStatus {
	list := ps.List()
	out := make([]PortStatus, len(list), len(list)+len(ps.failed))
	seen := make(map[string]bool, len(list))
	for i, p := range list {
		out[i] = p.Status()
		seen[p.Name()] = true
	}
	ps.mu.Lock()
	for name, st := range ps.failed {
		if !seen[name] {
			out = append(out, st)
		}
	}
	ps.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Status reports one port, running or failed to start.
func (ps *Ports) Status(name string) (PortStatus, error) {
	if p, err := ps.Get(name); err == nil {
		return p.Status(), nil
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if st, ok := ps.failed[name]; ok {
		return st, nil
	}
	return PortStatus{}, fmt.Errorf("port %s: %w", name, ErrNoPort)
}

// Close closes every port.
func (ps *Ports) Close() {
	ps.mu.Lock()
	list := ps.m
	ps.m = map[string]*Port{}
	ps.asked = map[string]PortConfig{}
	ps.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range list {
		wg.Add(1)
		go func() { defer wg.Done(); p.Close() }()
	}
	wg.Wait()
}
