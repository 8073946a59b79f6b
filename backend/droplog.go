package backend

import (
	"context"
	"log/slog"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/l2tp"
)

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
