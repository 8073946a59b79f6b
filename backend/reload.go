package backend

import (
	"fmt"
	"reflect"
	"slices"
)

// Change is what Apply did to bring the running ports to a wanted set,
// by port name.
type Change struct {
	Added    []string `json:"added"`
	Removed  []string `json:"removed"`
	Replaced []string `json:"replaced"`
	Kept     []string `json:"kept"`
	// Failed are the added or replaced ports that could not start: logged
	// and listed as failed, as a configured port at start is.
	Failed []string `json:"failed"`
}

// String is the one-line summary a reload logs.
func (c Change) String() string {
	return fmt.Sprintf("added %d, removed %d, replaced %d, kept %d, failed to start %d",
		len(c.Added), len(c.Removed), len(c.Replaced), len(c.Kept), len(c.Failed))
}

// Started is the ports Apply started (added or replaced), which may want
// their captures.
func (c Change) Started() []string { return append(append([]string(nil), c.Added...), c.Replaced...) }

// Apply makes the ports named in owned or want what want says, touching
// nothing else: a port in owned but not in want is removed, a port in want
// not running is started (a failed one retried), a running one whose
// config differs from what it was started with is removed then started
// again, and one whose config is the same is kept untouched, so its
// traffic never stops. Ports outside owned and want (added through the
// admin API) are left alone. A wanted port that runs outside owned with
// another config refuses the whole change before anything is touched; with
// the same config it is adopted (kept).
func (ps *Ports) Apply(owned []string, want []PortConfig) (Change, error) {
	var c Change
	if err := ps.checkForeign(owned, want); err != nil {
		return c, err
	}
	wanted := make(map[string]bool, len(want))
	for _, cfg := range want {
		wanted[cfg.Name] = true
	}
	for _, name := range owned {
		if !wanted[name] {
			if _, err := ps.Remove(name); err == nil {
				c.Removed = append(c.Removed, name)
			}
		}
	}
	for _, cfg := range want {
		ps.mu.Lock()
		asked, running := ps.asked[cfg.Name]
		ps.mu.Unlock()
		switch {
		case running && reflect.DeepEqual(asked, cfg):
			c.Kept = append(c.Kept, cfg.Name)
			continue
		case running:
			ps.Remove(cfg.Name)
			c.Replaced = append(c.Replaced, cfg.Name)
		default:
			c.Added = append(c.Added, cfg.Name)
		}
		if _, err := ps.Start(cfg); err != nil {
			c.Failed = append(c.Failed, cfg.Name)
		}
	}
	return c, nil
}

// checkForeign refuses a wanted port that has the name of a running port
// not in owned (one added through the admin API or the command line) but
// another config: replacing it would silently undo that addition.
func (ps *Ports) checkForeign(owned []string, want []PortConfig) error {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for _, cfg := range want {
		asked, running := ps.asked[cfg.Name]
		if running && !slices.Contains(owned, cfg.Name) && !reflect.DeepEqual(asked, cfg) {
			return fmt.Errorf("port %s: a port of that name runs that the config did not start (admin API or command line), with another config: delete it first", cfg.Name)
		}
	}
	return nil
}
