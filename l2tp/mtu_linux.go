package l2tp

import (
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// Where an Underlay's MTU came from, as logs and the admin API name it.
const (
	// MTUFromOption: the underlay-mtu= key.
	MTUFromOption = "underlay-mtu"
	// MTUFromRoute: the MTU of the kernel's route toward dst.
	MTUFromRoute = "route"
	// MTUFromDefault: neither, so 1500 (DefaultUnderlayMTU).
	MTUFromDefault = "default"
)

// DefaultUnderlayMTU is the underlay MTU assumed when underlay-mtu= is not
// given and the route toward the peer cannot be asked: Ethernet's.
const DefaultUnderlayMTU = 1500

// Underlay is the MTU a tunnel's encapsulated datagrams are measured
// against, and where it came from.
type Underlay struct {
	MTU  int    `json:"mtu"`  // bytes of IP packet, outer headers included
	From string `json:"from"` // MTUFromOption, MTUFromRoute or MTUFromDefault
}

// String renders the underlay for logs and --check ("1500 (route)").
func (u Underlay) String() string { return fmt.Sprintf("%d (%s)", u.MTU, u.From) }

// ProbeUnderlay is the underlay MTU a tunnel with c would use if opened
// now on this host: underlay-mtu= if given, else the route's MTU toward
// Dst (a host name is resolved), else DefaultUnderlayMTU. It opens no
// tunnel socket, for --check and configuration helpers.
func ProbeUnderlay(c Config) Underlay {
	if c.UnderlayMTU != 0 {
		return Underlay{MTU: c.UnderlayMTU, From: MTUFromOption}
	}
	dst, err := resolve("dst", c.Dst, c.IPv6)
	if err != nil {
		return Underlay{MTU: DefaultUnderlayMTU, From: MTUFromDefault}
	}
	peer, err := newSockaddr("dst", netip.AddrPortFrom(dst, c.DstPort))
	if err != nil {
		return Underlay{MTU: DefaultUnderlayMTU, From: MTUFromDefault}
	}
	u, _ := underlayFor(c, peer)
	return u
}

// underlayFor decides the underlay MTU of a tunnel to peer: underlay-mtu=
// if given, else the route's, else the default. It also returns the
// route's MTU (0 if unknown), asked either way, for the GSO segment cap.
func underlayFor(c Config, peer sockaddr) (Underlay, int) {
	route := routeMTU(peer)
	if !c.IPv6 && route > MaxUnderlayMTU {
		route = MaxUnderlayMTU // loopback says 65536; an IPv4 packet is at most 65535
	}
	switch {
	case c.UnderlayMTU != 0:
		return Underlay{MTU: c.UnderlayMTU, From: MTUFromOption}, route
	case route > 0:
		return Underlay{MTU: route, From: MTUFromRoute}, route
	}
	return Underlay{MTU: DefaultUnderlayMTU, From: MTUFromDefault}, 0
}

// gsoMTU is the largest IP packet a GSO segment may make: the route's MTU
// (the kernel refuses larger segments), no more than the underlay's (a
// segment is never fragmented); 0 when the route is unknown.
func gsoMTU(u Underlay, route int) int {
	if route == 0 {
		return 0
	}
	return min(route, u.MTU)
}

// setPMTUDisc sets the socket's path MTU discovery for the oversize policy:
// with drop the kernel never fragments (DF set, a datagram above the path
// MTU refused with EMSGSIZE); with fragment, IPv4 leaves DF clear (as the
// kernel's L2TP with ignore_df: a router on a narrower path fragments) and
// IPv6 fragments here. Both DONT and WANT make the kernel fragment a
// datagram above the route's MTU locally instead of refusing it
// (TestOversizeNetns checks it).
func setPMTUDisc(fd int, c Config) error {
	level, opt, name := unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, "IP_MTU_DISCOVER"
	val := unix.IP_PMTUDISC_DONT
	if c.Oversize == OversizeDrop {
		val = unix.IP_PMTUDISC_DO
	}
	if c.IPv6 {
		level, opt, name = unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, "IPV6_MTU_DISCOVER"
		val = unix.IPV6_PMTUDISC_WANT
		if c.Oversize == OversizeDrop {
			val = unix.IPV6_PMTUDISC_DO
		}
	}
	if err := unix.SetsockoptInt(fd, level, opt, val); err != nil {
		return fmt.Errorf("l2tpv3: oversize=%s: setsockopt %s: %w", c.Oversize, name, err)
	}
	return nil
}
