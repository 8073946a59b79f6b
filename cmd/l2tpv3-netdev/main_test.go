package main

import (
	"os"
	"testing"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/l2tp"
)

// TestMain pins the route probe of --check and libvirt-xml to a 1500-byte
// underlay (underlay-mtu= still wins), as on a plain Ethernet host, so
// their golden outputs hold on any test machine. Ports the daemon opens
// probe for real: their tests give underlay-mtu=.
func TestMain(m *testing.M) {
	probeUnderlay = func(c l2tp.Config) l2tp.Underlay {
		if c.UnderlayMTU != 0 {
			return l2tp.ProbeUnderlay(c)
		}
		return l2tp.Underlay{MTU: 1500, From: l2tp.MTUFromRoute}
	}
	os.Exit(m.Run())
}
