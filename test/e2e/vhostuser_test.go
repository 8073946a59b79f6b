package e2e

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/l2tp"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/test/guest"
)

// restartBar is the longest a pinging VM may wait for its first reply after
// the sidecar is killed and started again (issue 3).
const restartBar = 2 * time.Second

// vhostUserNIC returns the QEMU arguments of a vhost-user NIC on the sidecar
// listening at sock: chardev with reconnect=1, netdev with queues, and a
// virtio-net-pci device with MAC(mac) and extra properties. vectors=0:
// QEMU 7.2 under TCG crashes starting a vhost-user device with MSI-X.
func vhostUserNIC(sock string, queues, mac int, extra ...string) []string {
	netdev := "vhost-user,id=n0,chardev=c0"
	dev := append([]string{"vectors=0"}, extra...)
	if queues > 1 {
		netdev += ",queues=" + strconv.Itoa(queues)
		dev = append(dev, "mq=on")
	}
	return []string{
		"-chardev", "socket,id=c0,path=" + sock + ",reconnect=1",
		"-netdev", netdev,
		"-device", guest.VirtioNetDevice("n0", mac, dev...),
	}
}

// offeredMTU is the MTU the sidecar offers by default for an option string
// on a 1500-byte underlay. Loopback's route says 65536: a test that needs
// the sidecar's offer to be this gives it underlay-mtu=1500 (QEMU's own
// l2tpv3 on the other end carries no more than 2048-byte frames anyway).
func offeredMTU(t *testing.T, opts string) int {
	t.Helper()
	c, err := l2tp.ParseOptions(opts)
	if err != nil {
		t.Fatal(err)
	}
	return c.InnerMTU(1500)
}

// guestMTU reads eth0's MTU inside vm.
func guestMTU(t *testing.T, vm *guest.VM) int {
	t.Helper()
	out := vm.MustRun("cat /sys/class/net/eth0/mtu", pingTimeout)
	n, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("%s: eth0 mtu %q", vm.Name, out)
	}
	return n
}

// queueCounts parses the sidecar's vm_queues counters: frames from and to
// the VM per queue pair.
func queueCounts(line string) (from, to []uint64) {
	for _, m := range regexp.MustCompile(`q\d+ from_vm=(\d+) to_vm=(\d+)`).FindAllStringSubmatch(line, -1) {
		f, _ := strconv.ParseUint(m[1], 10, 64)
		g, _ := strconv.ParseUint(m[2], 10, 64)
		from, to = append(from, f), append(to, g)
	}
	return from, to
}

// TestVhostUserWithNativeQEMU: VM A's virtio-net rings are served by the
// sidecar over vhost-user (guest memory shared), VM B is on QEMU's own
// -netdev l2tpv3. A's MTU comes from VIRTIO_NET_F_MTU (host_mtu equal to
// what the sidecar offers); they ping with small and full-size frames; then
// the sidecar is killed with SIGKILL and started again under A, which pings
// on throughout (QEMU chardev reconnect=1), and the time from the restart
// to the first frame delivered back into A is measured against restartBar.
func TestVhostUserWithNativeQEMU(t *testing.T) {
	guest.Require(t)
	sock := filepath.Join(guest.SocketDir(t), "vu.sock")
	ps, pn := guest.FreeUDPPort(), guest.FreeUDPPort()
	opts := fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=%d,txsession=0x31,rxsession=0x32,underlay-mtu=1500", ps, pn)
	native := fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=%d,txsession=0x32,rxsession=0x31", pn, ps)
	mtu := offeredMTU(t, opts)
	sc := startSidecar(t, "--vhost-user", sock, "--l2tpv3", opts)
	if !sc.waitLog(fmt.Sprintf("queues=1 mtu=%d", mtu), time.Second) {
		t.Errorf("ready line does not show mtu=%d", mtu)
	}
	a := guest.Start(t, guest.Options{Name: "vmA", IPs: []string{"169.254.100.1/24"}, SharedMemory: true,
		Args: vhostUserNIC(sock, 1, 1, "host_mtu="+strconv.Itoa(mtu))})
	b := guest.Start(t, guest.Options{Name: "vmB", IPs: []string{"169.254.100.2/24"},
		Args: append(guest.NativeL2TPv3(native), guest.NIC("n0", 2)...)})
	a.MustWaitReady(bootTimeout)
	b.MustWaitReady(bootTimeout)
	if got := guestMTU(t, a); got != mtu {
		t.Errorf("guest MTU %d, want %d (VIRTIO_NET_F_MTU)", got, mtu)
	}
	if err := a.Ping("169.254.100.2", 3, pingTimeout); err != nil {
		t.Fatalf("A→B: %v\n%s", err, sc.counters())
	}
	if err := b.Ping("169.254.100.1", 2, pingTimeout); err != nil {
		t.Fatal(err)
	}
	// Full-size frames through the rings (QEMU's own l2tpv3 on B's side
	// truncates anything over 2048 bytes: jumbo frames are tested below).
	size := mtu - 28
	if out, err := a.Run(fmt.Sprintf("ping -c 2 -s %d -w 10 169.254.100.2", size), pingTimeout); err != nil {
		t.Fatalf("%d-byte ping: %v\n%s", size, err, out)
	}
	t.Logf("counters: %s", sc.counters())
	checkSealed(t, sc)
	if strings.Contains(sc.counters(), "vm_protocol_errors=1") {
		t.Error("protocol error counted")
	}

	t.Run("restart", func(t *testing.T) {
		a.MustRun("ping -i 0.1 169.254.100.2 >/tmp/bg.log 2>&1 &", pingTimeout)
		time.Sleep(time.Second)
		sc.cmd.Process.Signal(syscall.SIGKILL)
		<-sc.done
		time.Sleep(time.Second) // A pings into the void
		start := time.Now()
		sc = startSidecar(t, "--vhost-user", sock, "--l2tpv3", opts)
		first := waitToVM(t, sc, 10*time.Second)
		a.MustRun("killall ping; true", pingTimeout)
		t.Logf("first frame into VM A %v after the restart (process start, QEMU reconnect, negotiation); VM not rebooted",
			first.Sub(start).Round(time.Millisecond))
		if d := first.Sub(start); d > restartBar {
			t.Errorf("link back after %v, bar %v", d.Round(time.Millisecond), restartBar)
		}
		if err := a.Ping("169.254.100.2", 3, pingTimeout); err != nil {
			t.Fatalf("after restart: %v\n%s", err, sc.counters())
		}
	})
}

// waitToVM polls the sidecar's counters until a frame was delivered into
// the VM and returns when it saw that.
func waitToVM(t *testing.T, sc *sidecar, timeout time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		_, to := queueCounts(sc.counters())
		for _, n := range to {
			if n > 0 {
				return time.Now()
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no frame reached the VM within %v: %s", timeout, sc.counters())
	return time.Time{}
}

// TestVhostUserWithKernelPeer: VM A on vhost-user pings a Linux kernel
// l2tp_eth end (in a guest), with 64-bit cookies, the default sublayer and
// RFC 4719 sequencing both ways, at the MTU the sidecar offers.
func TestVhostUserWithKernelPeer(t *testing.T) {
	guest.Require(t)
	srcPort, hostPort := guest.FreeUDPPort(), guest.FreeUDPPort()
	opts := fmt.Sprintf("src=127.0.0.1,srcport=%d,dst=127.0.0.1,dstport=%d,udp=on,txsession=0x30000,rxsession=11,"+
		"cookie64=on,txcookie=0xa1a2a3a4a5a6a7a8,rxcookie=0x0102030405060708,seq=both,underlay-mtu=1500", srcPort, hostPort)
	k := guest.StartKernelPeer(t, guest.KernelPeerOptions{HostPort: hostPort, PeerPort: srcPort,
		Commands: linuxPeerCommands(t, opts)})
	mtu := offeredMTU(t, opts)
	sock := filepath.Join(guest.SocketDir(t), "vu.sock")
	sc := startSidecar(t, "--vhost-user", sock, "--l2tpv3", opts)
	a := guest.Start(t, guest.Options{Name: "vmA", IPs: []string{"169.254.100.1/24"}, SharedMemory: true,
		Args: vhostUserNIC(sock, 1, 1, "host_mtu="+strconv.Itoa(mtu))})
	k.MustWaitReady(bootTimeout)
	a.MustWaitReady(bootTimeout)
	if err := a.Ping("169.254.100.2", 3, pingTimeout); err != nil {
		t.Log(k.MustRun("ip -s l2tp show session; ip -s link show l2tpeth0", pingTimeout))
		t.Fatalf("%v\nsidecar: %s", err, sc.counters())
	}
	if err := k.Ping("169.254.100.1", 2, pingTimeout); err != nil {
		t.Fatal(err)
	}
	c := sc.counters()
	t.Logf("MTU %d; sidecar: %s", mtu, c)
	if strings.Contains(c, "sequence=") || strings.Contains(c, "cookie=") {
		t.Errorf("drops: %s", c)
	}
}

// TestVhostUserMultiqueue: VM A (2 vCPUs) has a 2-queue-pair vhost-user NIC
// (sidecar queues=2, QEMU queues=2 and mq=on); the guest driver uses both
// pairs. A pings eight addresses of VM B (QEMU's own l2tpv3) from both
// CPUs at once, so its frames leave on both TX queues (the driver picks
// the queue of the sending CPU) and the replies, eight flows, are steered
// over both RX queues. The sidecar's per-queue counters must show frames on
// both pairs in both directions, and every ping must be answered.
func TestVhostUserMultiqueue(t *testing.T) {
	guest.Require(t)
	sock := filepath.Join(guest.SocketDir(t), "vu.sock")
	ps, pn := guest.FreeUDPPort(), guest.FreeUDPPort()
	opts := fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=%d,txsession=0x41,rxsession=0x42,counter=on", ps, pn)
	native := fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=%d,txsession=0x42,rxsession=0x41,counter=on", pn, ps)
	sc := startSidecar(t, "--vhost-user", sock+",queues=2", "--l2tpv3", opts)
	a := guest.Start(t, guest.Options{Name: "vmA", IPs: []string{"169.254.100.1/24"}, SharedMemory: true,
		Args: append([]string{"-smp", "2"}, vhostUserNIC(sock, 2, 1)...)})
	b := guest.Start(t, guest.Options{Name: "vmB", IPs: []string{"169.254.100.2/24"},
		Args: append(guest.NativeL2TPv3(native), guest.NIC("n0", 2)...)})
	a.MustWaitReady(bootTimeout)
	b.MustWaitReady(bootTimeout)
	queues := a.MustRun("ls /sys/class/net/eth0/queues", pingTimeout)
	t.Logf("guest eth0 queues: %s", strings.Join(strings.Fields(queues), " "))
	for _, q := range []string{"rx-0", "rx-1", "tx-0", "tx-1"} {
		if !strings.Contains(queues, q) {
			t.Fatalf("guest eth0 has no %s: %s", q, queues)
		}
	}
	var addrs []string
	for i := 2; i < 10; i++ {
		addrs = append(addrs, fmt.Sprintf("169.254.100.%d", i))
		if i > 2 {
			b.MustRun(fmt.Sprintf("ip addr add 169.254.100.%d/24 dev eth0", i), pingTimeout)
		}
	}
	if err := a.Ping(addrs[0], 3, pingTimeout); err != nil {
		t.Fatalf("A→B: %v\n%s", err, sc.counters())
	}
	// Two pings per address, from CPU 0 and CPU 1, all at once.
	var script strings.Builder
	for i, addr := range addrs {
		fmt.Fprintf(&script, "taskset %d ping -c 5 -i 0.2 -w 15 %s >/tmp/p%d.log 2>&1 &\n", 1+i%2, addr, i)
	}
	script.WriteString("wait; cat /tmp/p*.log | grep -c 'bytes from'")
	out := a.MustRun(script.String(), 40*time.Second)
	replies, _ := strconv.Atoi(strings.TrimSpace(finalLine(out)))
	c := sc.counters()
	t.Logf("%d of %d replies; sidecar: %s", replies, 5*len(addrs), c)
	if replies < 5*len(addrs)-2 {
		t.Errorf("only %d of %d pings answered", replies, 5*len(addrs))
	}
	from, to := queueCounts(c)
	if len(from) != 2 {
		t.Fatalf("counters show %d queue pairs: %s", len(from), c)
	}
	for i := range from {
		if from[i] == 0 || to[i] == 0 {
			t.Errorf("queue pair %d: %d frames from the VM, %d to it", i, from[i], to[i])
		}
	}
}

// finalLine returns the last non-empty line of s.
func finalLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// TestVhostUserJumbo: 9000-byte MTU on both ends. VM A on vhost-user gets
// its MTU from VIRTIO_NET_F_MTU (sidecar mtu=9000, QEMU host_mtu=9000);
// VM B is on a second sidecar over -netdev stream (QEMU's own l2tpv3
// truncates frames over 2048 bytes). ping -s 8000 crosses both ways: a
// frame A receives spans several mergeable RX buffers.
func TestVhostUserJumbo(t *testing.T) {
	guest.Require(t)
	dir := guest.SocketDir(t)
	sockA, sockB := filepath.Join(dir, "a.sock"), filepath.Join(dir, "b.sock")
	p1, p2 := guest.FreeUDPPort(), guest.FreeUDPPort()
	optsA := fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=%d,txsession=0x51,rxsession=0x52,seq=both", p1, p2)
	optsB := fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=%d,txsession=0x52,rxsession=0x51,seq=both", p2, p1)
	sa := startSidecar(t, "--vhost-user", sockA+",mtu=9000", "--l2tpv3", optsA)
	a := guest.Start(t, guest.Options{Name: "vmA", IPs: []string{"169.254.100.1/24"}, SharedMemory: true,
		Args: vhostUserNIC(sockA, 1, 1, "host_mtu=9000")})
	b := guest.Start(t, guest.Options{Name: "vmB", IPs: []string{"169.254.100.2/24"}, MTUs: []int{9000},
		Args: append(qemuStreamServer("n0", sockB), guest.NIC("n0", 2)...)})
	sb := startSidecar(t, "--stream", "unix:"+sockB+",server=off,reconnect-ms=100", "--l2tpv3", optsB)
	a.MustWaitReady(bootTimeout)
	b.MustWaitReady(bootTimeout)
	if got := guestMTU(t, a); got != 9000 {
		t.Errorf("VM A's MTU is %d, want 9000 from VIRTIO_NET_F_MTU", got)
	}
	if err := a.Ping("169.254.100.2", 3, pingTimeout); err != nil {
		t.Fatalf("A→B: %v\nA: %s\nB: %s", err, sa.counters(), sb.counters())
	}
	for _, vm := range []*guest.VM{a, b} {
		peer := map[*guest.VM]string{a: "169.254.100.2", b: "169.254.100.1"}[vm]
		out, err := vm.Run("ping -c 3 -s 8000 -w 20 "+peer, pingTimeout)
		if err != nil || !strings.Contains(out, "8008 bytes from") {
			t.Fatalf("%s: ping -s 8000: %v\n%s\nA: %s\nB: %s", vm.Name, err, out, sa.counters(), sb.counters())
		}
	}
	for _, s := range []*sidecar{sa, sb} {
		c := s.counters()
		t.Logf("counters: %s", c)
		if strings.Contains(c, "drops") {
			t.Errorf("unexpected drops: %s", c)
		}
	}
}

// checkSealed checks the sidecar found every region of QEMU's guest memory sealed against
// shrinking (memory-backend-memfd seals by default), so that memory cannot fault under it:
// QEMU 7.2 adds its regions one by one (ADD_MEM_REG, logged at debug level).
func checkSealed(t *testing.T, sc *sidecar) {
	t.Helper()
	log := sc.stderr.String()
	added := regexp.MustCompile(`region added.* sealed_against_shrinking=(true|false)`).FindAllStringSubmatch(log, -1)
	sealed := 0
	for _, m := range added {
		if m[1] == "true" {
			sealed++
		}
	}
	if len(added) == 0 || sealed != len(added) {
		t.Errorf("%d of %d guest memory regions sealed against shrinking, want all", sealed, len(added))
		return
	}
	t.Logf("QEMU's memfd guest memory: %d of %d regions sealed against shrinking", sealed, len(added))
}
