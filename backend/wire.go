package backend

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/impair"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/pump"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/qmp"
)

// A port is a wire that can be cut (SetLink) and degraded (SetImpairment),
// each direction on its own, while traffic flows; the pump does the work
// (pump/wire.go). With a QMP socket on the port the guest NIC's link
// follows the wire: down while both directions are cut.

// BothDirections is every direction of a port.
var BothDirections = []pump.Direction{pump.ToNetwork, pump.ToVM}

// ParseDirections reads the directions a user names: "in" or "to_vm" (into
// the VM), "out" or "to_network" (from the VM), "both" or "" (both).
func ParseDirections(s string) ([]pump.Direction, error) {
	switch s {
	case "", "both":
		return BothDirections, nil
	case "in", "to_vm":
		return []pump.Direction{pump.ToVM}, nil
	case "out", "to_network":
		return []pump.Direction{pump.ToNetwork}, nil
	}
	return nil, fmt.Errorf("direction %q: want in (to_vm), out (to_network) or both", s)
}

// parseLink reads the link key of a port spec: "", "up", "down", "down in",
// "down out" (the directions cut at start).
func parseLink(s string) (down []pump.Direction, err error) {
	f := strings.Fields(s)
	switch {
	case len(f) == 0 || len(f) == 1 && f[0] == "up":
		return nil, nil
	case f[0] == "down" && len(f) <= 2:
		dir := ""
		if len(f) == 2 {
			dir = f[1]
		}
		return ParseDirections(dir)
	}
	return nil, fmt.Errorf("link %q: want up, down, down in or down out", s)
}

// parseWires turns a spec's link and impairment keys into the state each
// direction starts with.
func (s PortSpec) parseWires() ([2]pump.WireState, error) {
	var w [2]pump.WireState
	down, err := parseLink(s.Link)
	if err != nil {
		return w, err
	}
	for _, d := range down {
		w[d].Down = true
	}
	for _, k := range []struct {
		key, text string
		dirs      []pump.Direction
	}{{"impair", s.Impair, BothDirections}, {"impair-in", s.ImpairIn, []pump.Direction{pump.ToVM}},
		{"impair-out", s.ImpairOut, []pump.Direction{pump.ToNetwork}}} {
		if k.text == "" {
			continue
		}
		spec, err := impair.Parse(k.text)
		if err != nil {
			return w, fmt.Errorf("%s: %w", k.key, err)
		}
		for _, d := range k.dirs {
			w[d].Spec = spec
		}
	}
	return w, nil
}

// applyWires sets the wire state the config asks for, before traffic.
func (p *Port) applyWires() error {
	for d, st := range p.cfg.Wire {
		if err := p.pump.SetWire(pump.Direction(d), st); err != nil {
			return err
		}
	}
	return nil
}

// startCut tells QEMU that a port configured cut starts with the guest's
// link down; QEMU may not run yet, so a failure is only logged.
func (p *Port) startCut(ctx context.Context) {
	p.wireMu.Lock()
	defer p.wireMu.Unlock()
	if err := p.syncGuestLink(ctx); err != nil {
		p.log.Warn("link configured down; the guest's link could not be set", "err", err)
	}
}

// SetLink cuts (up false) or restores the directions dirs: a cut direction
// drops every frame (counted link_down) and queues none. With a QMP socket
// on the port, the guest NIC's link is then set to match (down while both
// directions are cut); a QMP failure is returned after the wire changed.
func (p *Port) SetLink(ctx context.Context, dirs []pump.Direction, up bool) error {
	p.wireMu.Lock()
	defer p.wireMu.Unlock()
	for _, d := range dirs {
		st := p.pump.Wire(d)
		st.Down = !up
		if err := p.pump.SetWire(d, st); err != nil {
			return fmt.Errorf("port %s: link: %w", p.cfg.Name, err)
		}
	}
	p.log.Info("link set", "up", up, "directions", dirNames(dirs))
	return p.syncGuestLink(ctx)
}

// SetImpairment applies spec to the directions dirs (the zero Spec clears
// them), keeping frames already in a delay line in order.
func (p *Port) SetImpairment(dirs []pump.Direction, spec impair.Spec) error {
	p.wireMu.Lock()
	defer p.wireMu.Unlock()
	for _, d := range dirs {
		st := p.pump.Wire(d)
		st.Spec = spec
		if err := p.pump.SetWire(d, st); err != nil {
			return fmt.Errorf("port %s: impairment: %w", p.cfg.Name, err)
		}
	}
	p.log.Info("impairment set", "impairment", spec.String(), "directions", dirNames(dirs))
	return nil
}

// qmpTimeout bounds one set_link exchange with QEMU.
const qmpTimeout = 5 * time.Second

// syncGuestLink tells QEMU, if the port has its QMP socket, to set the
// guest NIC's link: down while both directions are cut, up otherwise.
func (p *Port) syncGuestLink(ctx context.Context) error {
	if p.cfg.QMP == "" {
		return nil
	}
	up := !(p.pump.Wire(pump.ToVM).Down && p.pump.Wire(pump.ToNetwork).Down)
	ctx, cancel := context.WithTimeout(ctx, qmpTimeout)
	defer cancel()
	c, err := qmp.Dial(ctx, p.cfg.QMP)
	if err != nil {
		return &GuestLinkError{fmt.Errorf("port %s: guest link: %w", p.cfg.Name, err)}
	}
	defer c.Close()
	if _, err := c.Execute(ctx, "set_link", map[string]any{"name": p.cfg.QMPID, "up": up}); err != nil {
		return &GuestLinkError{fmt.Errorf("port %s: guest link: QMP set_link %s up=%v: %w", p.cfg.Name, p.cfg.QMPID, up, err)}
	}
	p.log.Info("guest link set over QMP", "qmp", p.cfg.QMP, "id", p.cfg.QMPID, "up", up)
	return nil
}

// GuestLinkError is SetLink's failure to set the guest NIC's link over
// QMP, after the wire itself changed.
type GuestLinkError struct{ Err error }

// Error says which port, socket and command failed.
func (e *GuestLinkError) Error() string { return e.Err.Error() }

// Unwrap is the QMP or dial error.
func (e *GuestLinkError) Unwrap() error { return e.Err }

// Wires reports both directions' link state, impairments and lines.
func (p *Port) Wires() []pump.WireStatus {
	return []pump.WireStatus{p.pump.WireStatus(pump.ToNetwork), p.pump.WireStatus(pump.ToVM)}
}

// dirNames lists directions for a log line.
func dirNames(dirs []pump.Direction) string {
	names := make([]string, len(dirs))
	for i, d := range dirs {
		names[i] = d.String()
	}
	return strings.Join(names, ",")
}
