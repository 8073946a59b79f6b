package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/backend"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/l2tp"
)

// dropLogInterval bounds drop logging: each reason at most once per interval.
const dropLogInterval = time.Second

// run opens the tunnel and the QEMU socket (refusing at start what cannot
// work), then forwards until a signal or a fatal network error.
func run(o options) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: o.logLevel}))
	tun, err := l2tp.Open(o.l2tp, l2tp.TunnelOptions{BatchSize: o.batch})
	if err != nil {
		return err
	}
	defer tun.Close()
	log = log.With("port", "port0", "session", o.l2tp.SessionID)
	pump := backend.NewPump(tun, func(n int) { tun.Stats().AddDrop(l2tp.DropVMDown, uint64(n)) })
	fe, err := openFrontEnd(o, pump, log)
	if err != nil {
		return err
	}
	defer fe.Close()

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 2)
	go func() { errc <- pump.RunNetToVM() }()
	go func() { errc <- fe.Run(ctx) }()
	go logDrops(ctx, log, tun.Stats(), dropLogInterval)
	log.Info("ready", "front_end", fe.String(), "local", tun.LocalAddr(), "peer", tun.PeerAddr(),
		"l2tpv3", o.l2tp.String(), "mtu_on_1500_underlay", 1500-o.l2tp.Overhead()-14)

	for {
		select {
		case s := <-sigs:
			if s == syscall.SIGUSR1 {
				logCounters(log, tun, fe)
				continue
			}
			log.Info("exiting", "signal", s.String())
			fe.Close()
			tun.Close()
			logCounters(log, tun, fe)
			return nil
		case err := <-errc:
			fe.Close()
			tun.Close()
			logCounters(log, tun, fe)
			return err
		}
	}
}

// frontEnd is the QEMU side of the port: a stream socket or vhost-user.
type frontEnd interface {
	Run(ctx context.Context) error
	Close() error
	String() string
	counters() []any
}

// openFrontEnd opens the front end the command line names, refusing at
// start a socket that cannot be used.
func openFrontEnd(o options, pump *backend.Pump, log *slog.Logger) (frontEnd, error) {
	if o.vhost != nil {
		v, err := backend.ListenVhostUser(*o.vhost, o.batch, pump, log)
		if err != nil {
			return nil, err
		}
		return vhostFrontEnd{v, *o.vhost}, nil
	}
	st, err := backend.ListenStream(*o.stream, o.batch, log)
	if err != nil {
		return nil, err
	}
	return streamFrontEnd{st, *o.stream, pump}, nil
}

// streamFrontEnd adapts backend.Stream.
type streamFrontEnd struct {
	*backend.Stream
	addr backend.StreamAddr
	pump *backend.Pump
}

func (s streamFrontEnd) Run(ctx context.Context) error { return s.Stream.Run(ctx, s.pump) }
func (s streamFrontEnd) String() string                { return "stream " + s.addr.String() }
func (s streamFrontEnd) counters() []any {
	return []any{"vm_connections", s.Stats.Connections.Load(), "vm_bad_length", s.Stats.BadLength.Load(),
		"vm_stalls", s.Stats.Stalls.Load(), "vm_stall_ms", s.Stats.StallNanos.Load() / 1e6}
}

// vhostFrontEnd adapts backend.VhostUser.
type vhostFrontEnd struct {
	*backend.VhostUser
	addr backend.VhostUserAddr
}

func (v vhostFrontEnd) String() string { return "vhost-user " + v.addr.Path }
func (v vhostFrontEnd) counters() []any {
	s := v.Stats()
	return []any{"vm_connections", s.Connections, "vm_protocol_errors", s.ProtocolErrors,
		"vm_ring_violations", s.RingViolations, "vm_tx_dropped", s.TXDropped, "vm_rx_dropped", s.RXDropped,
		"vm_waits", s.Waits}
}

// logCounters prints the session and front-end counters in one line.
func logCounters(log *slog.Logger, tun *l2tp.Tunnel, fe frontEnd) {
	log.Info("counters", append([]any{"l2tpv3", tun.Stats().Snapshot().String()}, fe.counters()...)...)
}

// logDrops logs, at most once per interval and reason, how many packets
// were dropped since the last line: a flood of bad packets gives a bounded
// number of log lines and costs the data path nothing.
func logDrops(ctx context.Context, log *slog.Logger, stats *l2tp.Stats, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	prev := stats.Snapshot()
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
		prev = cur
	}
}
