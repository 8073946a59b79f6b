package backend

import (
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/capture"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/frontend"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/l2tp"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/pump"
)

// PortStatus is a port's state and counters at one moment, as the admin
// API and metrics report it.
type PortStatus struct {
	Name      string             `json:"name"`
	SessionID uint32             `json:"session_id"` // the session received on (rxsession)
	State     PortState          `json:"state"`
	Error     string             `json:"error,omitempty"`
	Uptime    float64            `json:"uptime_seconds"`
	FrontEnd  frontend.Status    `json:"front_end"`
	L2TPv3    string             `json:"l2tpv3"`
	Local     string             `json:"local"`
	Peer      string             `json:"peer"`
	Session   l2tp.StatsSnapshot `json:"session"`
	Capture   *capture.Status    `json:"capture,omitempty"` // a running capture
	// Socket is the shared tunnel the session is on, when other sessions
	// share its socket: their IDs and what belongs to none (unknown session).
	Socket *l2tp.SocketStatus `json:"socket,omitempty"`

	InnerMTU int                `json:"inner_mtu,omitempty"` // what the underlay MTU carries whole
	Underlay *l2tp.Underlay     `json:"underlay,omitempty"`  // the underlay MTU and its source
	Ring     pump.RingOccupancy `json:"ring_occupancy"`      // frames held for the other side
	Wires    []pump.WireStatus  `json:"wires,omitempty"`     // link state and impairments by direction
}

// Status reports the port's state and counters.
func (p *Port) Status() PortStatus {
	p.mu.Lock()
	st := PortStatus{Name: p.cfg.Name, SessionID: p.cfg.L2TP.SessionID, State: p.state}
	if p.err != nil && p.state == PortFailed {
		st.Error = p.err.Error()
	}
	p.mu.Unlock()
	if !p.start.IsZero() {
		st.Uptime = time.Since(p.start).Seconds()
	}
	st.FrontEnd = p.fe.Status()
	st.L2TPv3 = p.cfg.L2TP.String()
	st.Local, st.Peer = p.tun.LocalAddr(), p.tun.PeerAddr()
	st.Session = p.tun.Stats().Snapshot()
	st.Capture = p.CaptureStatus()
	if p.tun.Sessions() > 1 {
		sock := p.tun.Socket()
		st.Socket = &sock
	}
	u := p.tun.Underlay()
	st.InnerMTU, st.Underlay = p.tun.InnerMTU(), &u
	st.Ring = p.pump.Occupancy()
	st.Wires = p.Wires()
	return st
}
