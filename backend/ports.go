package backend

import (
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
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

// Ports is the set of named ports one process runs. Ports are added and
// removed while the others carry traffic; the lock guards only the map,
// never the data path.
type Ports struct {
	log *slog.Logger
	mu  sync.Mutex
	m   map[string]*Port
}

// NewPorts returns an empty set logging through log.
func NewPorts(log *slog.Logger) *Ports { return &Ports{log: log, m: map[string]*Port{}} }

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
	p.Start()
	return p, nil
}

// Remove closes the named port (its front end and socket file, its tunnel)
// and forgets it.
func (ps *Ports) Remove(name string) error {
	ps.mu.Lock()
	p, ok := ps.m[name]
	delete(ps.m, name)
	ps.mu.Unlock()
	if !ok {
		return fmt.Errorf("port %s: %w", name, ErrNoPort)
	}
	p.Close()
	p.log.Info("port removed")
	return nil
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

// Statuses reports every port, sorted by name.
func (ps *Ports) Statuses() []PortStatus {
	list := ps.List()
	out := make([]PortStatus, len(list))
	for i, p := range list {
		out[i] = p.Status()
	}
	return out
}

// Close closes every port.
func (ps *Ports) Close() {
	ps.mu.Lock()
	list := ps.m
	ps.m = map[string]*Port{}
	ps.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range list {
		wg.Add(1)
		go func() { defer wg.Done(); p.Close() }()
	}
	wg.Wait()
}
