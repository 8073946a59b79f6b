package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/test/guest"
)

// Guest timings under TCG on this kind of machine: ready in about 5 s.
const (
	bootTimeout = 60 * time.Second
	pingTimeout = 20 * time.Second
)

// TestNativeL2TPv3Ping proves the harness: two guests on QEMU's own
// -netdev l2tpv3 (UDP over 127.0.0.1, sessions 1 and 2 crossed) ping each
// other.
func TestNativeL2TPv3Ping(t *testing.T) {
	guest.Require(t)
	pa, pb := guest.FreeUDPPort(), guest.FreeUDPPort()
	l2tp := func(src, dst, tx, rx int) []string {
		return guest.NativeL2TPv3(fmt.Sprintf(
			"src=127.0.0.1,srcport=%d,dst=127.0.0.1,dstport=%d,udp=on,txsession=%d,rxsession=%d",
			src, dst, tx, rx))
	}
	a := guest.Start(t, guest.Options{
		Name: "vmA",
		IPs:  []string{"169.254.100.1/24"},
		Args: append(l2tp(pa, pb, 1, 2), guest.NIC("n0", 1)...),
	})
	b := guest.Start(t, guest.Options{
		Name: "vmB",
		IPs:  []string{"169.254.100.2/24"},
		Args: append(l2tp(pb, pa, 2, 1), guest.NIC("n0", 2)...),
	})
	a.MustWaitReady(bootTimeout)
	b.MustWaitReady(bootTimeout)

	start := time.Now()
	if err := a.Ping("169.254.100.2", 3, pingTimeout); err != nil {
		t.Fatal(err)
	}
	t.Logf("A→B ping in %v", time.Since(start).Round(time.Millisecond))
	if err := b.Ping("169.254.100.1", 2, pingTimeout); err != nil {
		t.Fatal(err)
	}
	// IPv6 link-local over the same pseudowire.
	if err := a.Ping("fe80::5054:ff:fe4c:2%eth0", 2, pingTimeout); err != nil {
		t.Fatal(err)
	}
}
