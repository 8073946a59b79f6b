package backend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/capture"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/frontend"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/l2tp"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/pump"
)

// DefaultBatch is the frames per batch in each direction when a port does
// not say: the tunnel's own default.
const DefaultBatch = l2tp.DefaultBatchSize

// PortSpec is a port as a user writes it: on the command line, in the
// config file or in an admin request. The strings use the command line's
// syntax (--stream, --vhost-user, --l2tpv3).
type PortSpec struct {
	Name      string `json:"name" toml:"name"`
	Stream    string `json:"stream,omitempty" toml:"stream"`
	VhostUser string `json:"vhost_user,omitempty" toml:"vhost-user"`
	L2TPv3    string `json:"l2tpv3" toml:"l2tpv3"`
	Batch     int    `json:"batch,omitempty" toml:"batch"`

	// The wire (wire.go): link "down", "down in" or "down out" starts the
	// port cut; impairments in netem's words for both directions, into
	// the VM (in) or from it (out).
	Link      string `json:"link,omitempty" toml:"link"`
	Impair    string `json:"impair,omitempty" toml:"impair"`
	ImpairIn  string `json:"impair_in,omitempty" toml:"impair-in"`
	ImpairOut string `json:"impair_out,omitempty" toml:"impair-out"`
	// QMP is QEMU's QMP socket ("unix:PATH" or a path) through which a
	// cut link also sets the guest NIC's link (set_link); QMPID names that
	// NIC there, its device or netdev id (default: the port's name).
	QMP   string `json:"qmp,omitempty" toml:"qmp"`
	QMPID string `json:"qmp_id,omitempty" toml:"qmp-id"`
}

// PortConfig is a validated PortSpec.
type PortConfig struct {
	Name      string
	Stream    *frontend.StreamAddr
	VhostUser *frontend.VhostUserAddr
	L2TP      l2tp.Config
	Batch     int
	Wire      [2]pump.WireState // by pump.Direction, at start
	QMP       string
	QMPID     string
}

// Parse validates the spec; each error names the field and the reason.
func (s PortSpec) Parse() (PortConfig, error) {
	c := PortConfig{Name: s.Name, Batch: s.Batch, QMP: s.QMP, QMPID: s.QMPID}
	if c.QMPID == "" {
		c.QMPID = s.Name
	}
	if c.Batch == 0 {
		c.Batch = DefaultBatch
	}
	switch {
	case !ValidPortName(s.Name):
		return c, fmt.Errorf("port name %q: want 1..64 letters, digits, '-', '_' or '.'", s.Name)
	case s.Stream == "" && s.VhostUser == "":
		return c, errors.New("--stream or --vhost-user is required (where QEMU meets the sidecar)")
	case s.Stream != "" && s.VhostUser != "":
		return c, errors.New("--stream and --vhost-user are exclusive: one front end per port")
	case s.L2TPv3 == "":
		return c, errors.New("--l2tpv3 is required (the pseudowire's option string)")
	case c.Batch < 1 || c.Batch > 1024:
		return c, fmt.Errorf("--batch %d: must be 1..1024", c.Batch)
	}
	if s.Stream != "" {
		a, err := frontend.ParseStreamAddr(s.Stream)
		if err != nil {
			return c, err
		}
		c.Stream = &a
	} else {
		a, err := frontend.ParseVhostUserAddr(s.VhostUser)
		if err != nil {
			return c, err
		}
		c.VhostUser = &a
	}
	var err error
	if c.L2TP, err = l2tp.ParseOptions(s.L2TPv3); err != nil {
		return c, fmt.Errorf("--%w", err) // "--l2tpv3: missing dst"
	}
	if c.Wire, err = s.parseWires(); err != nil {
		return c, err
	}
	return c, nil // a vhost-user MTU left 0 is the tunnel's inner MTU (OpenPort)
}

// SessionID is the session the spec receives on, 0 when its option string
// does not parse (logs of refused ports still carry a session).
func (s PortSpec) SessionID() uint32 {
	c, err := l2tp.ParseOptions(s.L2TPv3)
	if err != nil {
		return 0
	}
	return c.SessionID
}

// SocketPath is the unix socket the port's front end listens on or dials,
// "" for tcp.
func (c PortConfig) SocketPath() string {
	switch {
	case c.VhostUser != nil:
		return c.VhostUser.Path
	case c.Stream != nil && c.Stream.Network == "unix":
		return c.Stream.Address
	}
	return ""
}

// ValidPortName keeps names usable in logs, metric labels, URLs and
// libvirt aliases: 1..64 letters, digits, '-', '_' or '.'.
func ValidPortName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		ok := r == '-' || r == '_' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z'
		if !ok {
			return false
		}
	}
	return true
}

// PortState is where a port is in its life.
type PortState string

// The states a port goes through.
const (
	PortRunning PortState = "running" // front end serving, tunnel open
	PortFailed  PortState = "failed"  // the network side failed; Err says why
	PortClosed  PortState = "closed"  // Close was called
)

// Port is one named NIC: a front end QEMU connects to, an L2TPv3 session,
// and the pump between them, with goroutines of its own so that it starts,
// fails and closes without touching other ports.
type Port struct {
	cfg  PortConfig
	tun  *l2tp.Tunnel
	net  *capture.Tap // tun with an optional capture (portcapture.go)
	pump *pump.Pump
	fe   frontend.FrontEnd
	log  *slog.Logger
	// wireMu serialises link and impairment changes (wire.go).
	wireMu sync.Mutex

	cancel context.CancelFunc
	done   chan struct{}
	mu     sync.Mutex // guards state and err
	state  PortState
	err    error
	start  time.Time
}

// OpenPort opens the port's socket and front end, refusing at start what
// cannot work (address in use, unresolvable peer, bad socket path). The
// port forwards once Start is called.
func OpenPort(cfg PortConfig, log *slog.Logger) (*Port, error) {
	log = log.With("port", cfg.Name, "session", cfg.L2TP.SessionID)
	tun, err := l2tp.Open(cfg.L2TP, l2tp.TunnelOptions{BatchSize: cfg.Batch, OnPeerMove: func(to netip.AddrPort) {
		log.Warn("L2TPv3 peer moved: sending to the new address", "peer", to.String())
	}})
	if err != nil {
		return nil, err
	}
	for _, w := range cfg.L2TP.Warnings() {
		log.Warn(w, "l2tpv3", cfg.L2TP.String())
	}
	cfg = offerMTU(cfg, tun, log)
	p := &Port{cfg: cfg, tun: tun, log: log, done: make(chan struct{}), state: PortRunning}
	p.net = capture.NewTap(tunnelNet{tun})
	p.pump = pump.NewPump(p.net, func(n int) { tun.Stats().AddDrop(l2tp.DropVMDown, uint64(n)) })
	p.pump.CountDropsWith(tun.Stats().AddDrop, tun.Stats().AddTxDrop)
	if p.fe, err = openFrontEnd(cfg, log); err != nil {
		tun.Close()
		return nil, err
	}
	if err := p.pump.SetQueues(p.fe.Queues()); err != nil {
		p.fe.Close()
		tun.Close()
		return nil, err
	}
	if err := p.applyWires(); err != nil { // after SetQueues: a line's sender depends on the queue pairs
		p.fe.Close()
		tun.Close()
		return nil, err
	}
	return p, nil
}

// openFrontEnd opens the front end the config names.
func openFrontEnd(cfg PortConfig, log *slog.Logger) (frontend.FrontEnd, error) {
	if cfg.VhostUser != nil {
		return frontend.ListenVhostUser(*cfg.VhostUser, cfg.Batch, log)
	}
	return frontend.ListenStream(*cfg.Stream, cfg.Batch, log)
}

// Start runs the port's goroutines: the network reader, the front end and
// the drop logger. A network failure ends the port (state failed).
func (p *Port) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	p.start = time.Now()
	errc := make(chan error, 2)
	go func() { errc <- p.pump.RunNetToVM() }()
	go func() { errc <- p.fe.Run(ctx, p.pump) }()
	go logDrops(ctx, p.log, p.tun, DropLogInterval)
	if p.cfg.Wire[pump.ToVM].Down && p.cfg.Wire[pump.ToNetwork].Down {
		go p.startCut(ctx)
	}
	go p.wait(errc)
	u := p.tun.Underlay()
	p.log.Info("ready", "front_end", p.fe.Status().String(), "local", p.tun.LocalAddr(), "peer", p.tun.PeerAddr(),
		"l2tpv3", p.cfg.L2TP.String(), "inner_mtu", p.tun.InnerMTU(), "underlay_mtu", u.MTU, "underlay_mtu_from", u.From)
}

// wait ends the port when either side stops, recording a failure unless
// Close caused it.
func (p *Port) wait(errc chan error) {
	err := <-errc
	p.mu.Lock()
	if p.state == PortRunning {
		p.state, p.err = PortFailed, err
		if err == nil {
			p.err = errors.New("front end stopped")
		}
		p.log.Error("port failed", "err", p.err)
	}
	p.mu.Unlock()
	p.cancel()
	p.pump.CloseWires()
	p.fe.Close()
	p.tun.Close()
	<-errc
	close(p.done)
}

// Close stops the port, closes its front end (removing its socket file)
// and its tunnel, and waits for its goroutines; idempotent.
func (p *Port) Close() error {
	defer p.closeCapture()
	p.mu.Lock()
	if p.state == PortRunning {
		p.state = PortClosed
	}
	p.mu.Unlock()
	if p.cancel == nil { // never started
		p.pump.CloseWires()
		p.fe.Close()
		return p.tun.Close()
	}
	p.cancel()
	p.fe.Close()
	p.tun.Close()
	<-p.done
	return nil
}

// Done is closed once the port's goroutines have ended.
func (p *Port) Done() <-chan struct{} { return p.done }

// Err is why the port failed, nil while it runs or after Close.
func (p *Port) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state == PortFailed {
		return p.err
	}
	return nil
}

// Name is the port's name.
func (p *Port) Name() string { return p.cfg.Name }

// Config is the port's validated configuration.
func (p *Port) Config() PortConfig { return p.cfg }

// Tunnel is the port's L2TPv3 session.
func (p *Port) Tunnel() *l2tp.Tunnel { return p.tun }

// Logger is the port's logger (port name and session on every line).
func (p *Port) Logger() *slog.Logger { return p.log }

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

// DropLogInterval bounds drop logging: each reason at most once per interval.
var DropLogInterval = time.Second

// logDrops logs, at most once per interval and reason, how many packets
// were dropped since the last line, and how many frames were above the
// underlay MTU: a flood of bad packets gives a bounded number of log lines
// and costs the data path nothing.
func logDrops(ctx context.Context, log *slog.Logger, tun *l2tp.Tunnel, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	stats := tun.Stats()
	var prev l2tp.StatsSnapshot // from zero: what is counted before the first tick is logged too
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cur := stats.Snapshot()
		for d := range l2tp.Drop(l2tp.NumDrops) {
			if n := cur.Drops[d] - prev.Drops[d]; n > 0 {
				log.Warn("dropped packets", "reason", d.String(), "count", n, "total", cur.Drops[d])
			}
		}
		logAboveMTU(log, tun, cur.AboveMTU-prev.AboveMTU, cur.AboveMTU)
		logSocketDrops(log, tun, every)
		logSendPath(log, prev, cur)
		prev = cur
	}
}

// logSocketDrops logs, once per interval for all the sessions of a shared
// tunnel (whichever port's logger comes first), what its socket dropped
// that belongs to no session: unknown sessions, truncation, kernel drops.
func logSocketDrops(log *slog.Logger, tun *l2tp.Tunnel, every time.Duration) {
	prev, cur, ok := tun.SocketDropsDue(every)
	if !ok {
		return
	}
	for d := range l2tp.Drop(l2tp.NumDrops) {
		if n := cur.Drops[d] - prev.Drops[d]; n > 0 {
			log.Warn("shared tunnel dropped packets of no session on it", "local", tun.LocalAddr(),
				"reason", d.String(), "count", n, "total", cur.Drops[d])
		}
	}
}

// logSendPath logs, once per interval (logDrops calls it), the GSO
// fallbacks and the errors the network reported for sent packets since the
// last line.
func logSendPath(log *slog.Logger, prev, cur l2tp.StatsSnapshot) {
	if n := cur.GSOFallbacks - prev.GSOFallbacks; n > 0 {
		log.Warn("UDP GSO refused by the kernel: sent one by one, probed again after a back-off",
			"count", n, "total", cur.GSOFallbacks)
	}
	for k := range l2tp.NetError(l2tp.NumNetErrors) {
		if n := cur.NetErrors[k] - prev.NetErrors[k]; n > 0 {
			log.Warn("the network reported errors for sent packets", "kind", k.String(), "count", n, "total", cur.NetErrors[k])
		}
	}
}

// tunnelNet is a port's tunnel as the pump's network side: its NewSender
// returns the tunnel's *l2tp.Sender as a pump.NetSender.
type tunnelNet struct{ *l2tp.Tunnel }

// NewSender gives one more queue pair a send queue of the tunnel.
func (n tunnelNet) NewSender() (pump.NetSender, error) {
	s, err := n.Tunnel.NewSender()
	if err != nil {
		return nil, err
	}
	return s, nil
}
