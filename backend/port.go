package backend

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/capture"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/frontend"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/l2tp"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/pump"
)

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
