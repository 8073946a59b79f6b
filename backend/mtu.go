package backend

import (
	"log/slog"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/l2tp"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/vhostuser"
)

// offerMTU completes a vhost-user port's config once its tunnel is open:
// without mtu= it offers the tunnel's inner MTU (what its underlay MTU
// carries whole); a given mtu= above that is kept, and warned about once
// here, since the guest's largest frames will then exceed the underlay.
func offerMTU(cfg PortConfig, tun *l2tp.Tunnel, log *slog.Logger) PortConfig {
	if cfg.VhostUser == nil {
		return cfg
	}
	a := *cfg.VhostUser
	inner := tun.InnerMTU()
	switch {
	case a.MTU == 0:
		a.MTU = min(max(inner, vhostuser.MinMTU), vhostuser.MaxMTU)
	case a.MTU > inner:
		u := tun.Underlay()
		log.Warn("vhost-user mtu= is above the inner MTU: the guest's largest frames exceed the underlay MTU",
			"mtu", a.MTU, "inner_mtu", inner, "underlay_mtu", u.MTU, "underlay_mtu_from", u.From,
			"oversize", cfg.L2TP.Oversize.String())
	}
	cfg.VhostUser = &a
	return cfg
}

// logAboveMTU logs, once per interval (logDrops calls it), how many frames
// from the VM were above the underlay MTU since the last line, and the
// oversize policy that sent (fragment) or dropped (drop) them.
func logAboveMTU(log *slog.Logger, tun *l2tp.Tunnel, n, total uint64) {
	if n == 0 {
		return
	}
	u := tun.Underlay()
	log.Warn("frames above the underlay MTU", "count", n, "total", total, "oversize", tun.Config().Oversize.String(),
		"underlay_mtu", u.MTU, "underlay_mtu_from", u.From, "inner_mtu", tun.InnerMTU())
}
