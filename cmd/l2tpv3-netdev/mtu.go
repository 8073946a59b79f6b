package main

import (
	"fmt"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/l2tp"
)

// probeUnderlay is the underlay MTU a port with a config would have if
// opened on this host now (l2tp.ProbeUnderlay); the tests pin it, so that
// golden outputs do not depend on the test machine's routes.
var probeUnderlay = l2tp.ProbeUnderlay

// innerMTU is the MTU a port with c would offer its VM on this host, and
// the underlay MTU it is derived from (given, or the route's).
func innerMTU(c l2tp.Config) (int, l2tp.Underlay) {
	u := probeUnderlay(c)
	return c.InnerMTU(u.MTU), u
}

// underlayNote says where an underlay MTU came from, for people reading
// --check and libvirt-xml.
func underlayNote(u l2tp.Underlay) string {
	switch u.From {
	case l2tp.MTUFromOption:
		return fmt.Sprintf("underlay-mtu=%d", u.MTU)
	case l2tp.MTUFromRoute:
		return fmt.Sprintf("underlay %d: the route toward dst on this host", u.MTU)
	}
	return fmt.Sprintf("underlay %d: the default, the route toward dst could not be asked", u.MTU)
}
