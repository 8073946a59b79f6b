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
	st, err := backend.ListenStream(o.stream, o.batch, log)
	if err != nil {
		return err
	}
	defer st.Close()

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pump := backend.NewPump(tun, func(n int) { tun.Stats().AddDrop(l2tp.DropVMDown, uint64(n)) })
	errc := make(chan error, 2)
	go func() { errc <- pump.RunNetToVM() }()
	go func() { errc <- st.Run(ctx, pump) }()
	go logDrops(ctx, log, tun.Stats(), dropLogInterval)
	log.Info("ready", "stream", o.stream.String(), "local", tun.LocalAddr(), "peer", tun.PeerAddr(),
		"l2tpv3", o.l2tp.String(), "mtu_on_1500_underlay", 1500-o.l2tp.Overhead()-14)

	for {
		select {
		case s := <-sigs:
			if s == syscall.SIGUSR1 {
				logCounters(log, tun, st)
				continue
			}
			log.Info("exiting", "signal", s.String())
			st.Close()
			tun.Close()
			logCounters(log, tun, st)
			return nil
		case err := <-errc:
			st.Close()
			tun.Close()
			logCounters(log, tun, st)
			return err
		}
	}
}

// logCounters prints the session and stream counters in one line.
func logCounters(log *slog.Logger, tun *l2tp.Tunnel, st *backend.Stream) {
	s := tun.Stats().Snapshot()
	log.Info("counters", "l2tpv3", s.String(),
		"vm_connections", st.Stats.Connections.Load(),
		"vm_bad_length", st.Stats.BadLength.Load(),
		"vm_stalls", st.Stats.Stalls.Load(),
		"vm_stall_ms", st.Stats.StallNanos.Load()/1e6)
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
