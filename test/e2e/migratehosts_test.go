package e2e

import (
	"fmt"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/test/guest"
)

// threeHosts builds network namespaces a, b and c (documentation prefix
// 192.0.2.0/24: .1, .2 and .3); c holds a bridge joining all three, so a
// and b are two hosts and c the remote peer's. They are deleted when the
// test ends.
func threeHosts(t *testing.T) (a, b, c string) {
	t.Helper()
	id := rand.IntN(1 << 20)
	a, b, c = fmt.Sprintf("h13a-%d", id), fmt.Sprintf("h13b-%d", id), fmt.Sprintf("h13c-%d", id)
	sh := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	for _, ns := range []string{a, b, c} {
		sh("netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		sh("-n", ns, "link", "set", "lo", "up")
	}
	sh("-n", c, "link", "add", "br0", "type", "bridge")
	sh("-n", c, "link", "set", "br0", "up")
	sh("-n", c, "addr", "add", "192.0.2.3/24", "dev", "br0")
	for i, ns := range []string{a, b} {
		dev, port := fmt.Sprintf("h13v%d", i), fmt.Sprintf("h13p%d", i)
		sh("link", "add", dev, "netns", ns, "type", "veth", "peer", "name", port, "netns", c)
		sh("-n", ns, "addr", "add", fmt.Sprintf("192.0.2.%d/24", i+1), "dev", dev)
		sh("-n", ns, "link", "set", dev, "up")
		sh("-n", c, "link", "set", port, "master", "br0")
		sh("-n", c, "link", "set", port, "up")
	}
	return a, b, c
}

// TestMigrateAcrossHosts: a VM on a vhost-user port of sidecar A (host a)
// pings VM C behind sidecar C (host c, peer-learning=on) and migrates to a
// QEMU on sidecar B (host b: the same session and cookie, another
// address). C's sidecar learns B from the first authentic datagram, and
// the ping goes on; the replies lost during the move are reported.
func TestMigrateAcrossHosts(t *testing.T) {
	guest.Require(t)
	ha, hb, hc := threeHosts(t)
	dir := guest.SocketDir(t)
	sockA, sockB, sockC := filepath.Join(dir, "a.sock"), filepath.Join(dir, "b.sock"), filepath.Join(dir, "c.sock")
	side := "src=%s,dst=192.0.2.3,udp=on,srcport=1701,dstport=1701,txsession=0x71,rxsession=0x72,txcookie=0xa1,rxcookie=0xc3"
	remote := "src=192.0.2.3,dst=192.0.2.1,udp=on,srcport=1701,dstport=1701,txsession=0x72,rxsession=0x71,txcookie=0xc3,rxcookie=0xa1,peer-learning=on"
	scA := startSidecarIn(t, ha, "--vhost-user", sockA, "--l2tpv3", fmt.Sprintf(side, "192.0.2.1"))
	scB := startSidecarIn(t, hb, "--vhost-user", sockB, "--l2tpv3", fmt.Sprintf(side, "192.0.2.2"))
	scC := startSidecarIn(t, hc, "--stream", "unix:"+sockC, "--l2tpv3", remote)

	srcOpts := guest.Options{Name: "vmA", IPs: []string{"169.254.103.1/24"}, SharedMemory: true, QMP: true,
		Args: vhostUserNIC(sockA, 1, 1)}
	src := guest.Start(t, srcOpts)
	vc := guest.Start(t, guest.Options{Name: "vmC", IPs: []string{"169.254.103.3/24"},
		Args: append(guest.StreamNetdev("n0", sockC), guest.NIC("n0", 3)...)})
	src.MustWaitReady(bootTimeout)
	vc.MustWaitReady(bootTimeout)
	if err := src.Ping("169.254.103.3", 3, pingTimeout); err != nil {
		t.Fatalf("A→C before the migration: %v\nA: %s\nC: %s", err, scA.counters(), scC.counters())
	}
	src.MustRun("ping -i 0.1 169.254.103.3 >/tmp/mig.log 2>&1 &", pingTimeout)

	time.Sleep(2 * time.Second)
	dst := migrateVM(t, src, srcOpts, vhostUserNIC(sockB, 1, 1))
	time.Sleep(3 * time.Second)

	out := dst.MustRun("killall -INT ping; sleep 1; cat /tmp/mig.log", pingTimeout)
	sent, got, longest := pingLoss(t, out)
	t.Logf("ping across the move: %d sent, %d answered, %d lost, longest gap %d replies (%v), slowest reply %v",
		sent, got, sent-got, longest, time.Duration(longest)*pingInterval, slowestReply(out))
	countersC := scC.counters()
	t.Logf("C: %s\nA: %s\nB: %s", countersC, scA.counters(), scB.counters())
	if !strings.Contains(countersC, "peer_moves 1") {
		t.Errorf("the remote sidecar did not count one peer move")
	}
	if !scC.waitLog("L2TPv3 peer moved", time.Second) {
		t.Errorf("the remote sidecar did not log the move")
	}
	if got == 0 || longest >= sent {
		t.Fatalf("no ping answered after the move:\n%s", out)
	}
	if gap := time.Duration(longest) * pingInterval; gap > switchBar {
		t.Errorf("%v of ping traffic lost during the move, bar %v", gap, switchBar)
	}
	if err := dst.Ping("169.254.103.3", 2, pingTimeout); err != nil {
		t.Fatalf("A→C from host b: %v", err)
	}
}
