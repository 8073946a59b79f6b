package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/test/guest"
)

// TestPlugUnplugCLI is issue 4's hot-plug bar, driven through the built
// binary as a user would: a daemon (--config, --admin) runs port A, on
// which VM1 pings a peer VM (QEMU's own l2tpv3) in the background for the
// whole test. VM2 boots with QMP and shared memory but no NIC; `plug`
// gives it a vhost-user NIC on a new port of the same daemon, the guest
// sees it (with the port's MTU) and pings the peer's second NIC through it;
// `unplug` takes it away (the guest's interface, the daemon's port and its
// socket file are gone); `plug` again pings again; a plug that QEMU
// refuses (a duplicate id) is rolled back (no port left behind); a stream
// NIC is plugged, pings and is unplugged last. Port A's background ping
// must not have lost a reply.
func TestPlugUnplugCLI(t *testing.T) {
	guest.Require(t)
	dir := guest.SocketDir(t)
	adminSock := filepath.Join(dir, "admin.sock")
	aSock := filepath.Join(dir, "a.sock")
	pa, pna, pb, pnb := guest.FreeUDPPort(), guest.FreeUDPPort(), guest.FreeUDPPort(), guest.FreeUDPPort()
	optsA := fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=%d,txsession=0x61,rxsession=0x62", pa, pna)
	nativeA := fmt.Sprintf("id=n0,src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=%d,txsession=0x62,rxsession=0x61", pna, pa)
	// underlay-mtu=1500: host_mtu 1450, as on an Ethernet path (loopback's route says 65536).
	optsB := fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=%d,txsession=0x71,rxsession=0x72,underlay-mtu=1500", pb, pnb)
	nativeB := fmt.Sprintf("id=n1,src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=%d,txsession=0x72,rxsession=0x71", pnb, pb)
	config := filepath.Join(t.TempDir(), "l2tpv3-netdev.toml")
	if err := os.WriteFile(config, []byte(fmt.Sprintf("admin = %q\n\n[[port]]\nname = \"a-net0\"\nstream = \"unix:%s,server=off\"\nl2tpv3 = %q\n",
		adminSock, aSock, optsA)), 0o600); err != nil {
		t.Fatal(err)
	}

	vm1 := guest.Start(t, guest.Options{Name: "vm1", IPs: []string{"169.254.120.1/24"},
		Args: append(qemuStreamServer("n0", aSock), guest.NIC("n0", 1)...)})
	peerArgs := append(guest.NativeL2TPv3(nativeA), guest.NIC("n0", 2)...)
	peerArgs = append(append(peerArgs, guest.NativeL2TPv3(nativeB)...), guest.NIC("n1", 3)...)
	peer := guest.Start(t, guest.Options{Name: "peer", IPs: []string{"169.254.120.2/24", "169.254.121.2/24"}, Args: peerArgs})
	vm2 := guest.Start(t, guest.Options{Name: "vm2", QMP: true, SharedMemory: true})
	sc := startSidecar(t, "--config", config)
	for _, vm := range []*guest.VM{vm1, peer, vm2} {
		vm.MustWaitReady(bootTimeout)
	}
	if err := vm1.Ping("169.254.120.2", 3, pingTimeout); err != nil {
		t.Fatalf("port A: vm1→peer: %v\n%s", err, sc.counters())
	}
	if nics := guestNICs(t, vm2); len(nics) != 0 {
		t.Fatalf("vm2 booted with NICs %v, want none", nics)
	}
	bg := startBackgroundPing(t, vm1, "169.254.120.2")

	qmpAddr := "unix:" + vm2.QMPPath()
	vhost := filepath.Join(dir, "net1.sock")
	mac := guest.MAC(4)
	plugVhost := []string{"plug", "--qmp", qmpAddr, "--id", "net1", "--mac", mac, "--admin", adminSock,
		"--vhost-user", vhost, "--l2tpv3", optsB}
	for round := 1; round <= 2; round++ {
		t.Logf("round %d: %s", round, strings.TrimSpace(cli(t, plugVhost...)))
		plugged(t, vm2, peer, adminSock, 1450)
		if round == 1 {
			unplugged(t, vm2, adminSock, qmpAddr, vhost)
		}
	}

	// QEMU refuses a second NIC with the same id: the port opened for it is
	// closed again and its socket file removed; net1 keeps working.
	dup := filepath.Join(dir, "dup.sock")
	out, err := exec.Command(sidecarBin, "plug", "--qmp", qmpAddr, "--id", "net1", "--name", "dup", "--admin", adminSock,
		"--vhost-user", dup, "--l2tpv3", fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=%d,txsession=0x81",
			guest.FreeUDPPort(), guest.FreeUDPPort())).CombinedOutput()
	t.Logf("duplicate plug: %v\n%s", err, out)
	if err == nil || !regexp.MustCompile(`qmp chardev-add: .*chr-net1.* \(port dup removed again from the daemon\)`).Match(out) {
		t.Errorf("a duplicate id: want exit 1 and QEMU's chardev-add error, the port removed again; got %v:\n%s", err, out)
	}
	if list := cli(t, "ports", "--admin", adminSock); regexp.MustCompile(`(?m)^dup\s`).MatchString(list) {
		t.Errorf("the refused plug left port dup:\n%s", list)
	}
	if _, err := os.Stat(dup); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused plug left its socket file: %v", err)
	}
	if err := vm2.Ping("169.254.121.2", 2, pingTimeout); err != nil {
		t.Errorf("net1 after the refused plug: %v", err)
	}
	unplugged(t, vm2, adminSock, qmpAddr, vhost)

	// A stream NIC under the same id, then unplugged for good.
	stream := filepath.Join(dir, "net1s.sock")
	t.Logf("stream: %s", strings.TrimSpace(cli(t, "plug", "--qmp", qmpAddr, "--id", "net1", "--mac", mac,
		"--admin", adminSock, "--stream", "unix:"+stream, "--l2tpv3", optsB)))
	plugged(t, vm2, peer, adminSock, 1450)
	unplugged(t, vm2, adminSock, qmpAddr, stream)

	sent, got, missing := bg.stop(t)
	ran := time.Since(bg.start).Round(time.Second)
	t.Logf("port A's background ping: %d sent in %v, %d answered, missing seq %v", sent, ran, got, missing)
	if sent < int(ran/time.Second) || len(missing) > 1 || (len(missing) == 1 && missing[0] != sent-1) {
		t.Errorf("port A's ping was disturbed: %d sent in %v (2 a second expected), %d answered, missing seq %v "+
			"(only the last one, in flight at the stop, may be)", sent, ran, got, missing)
	}
	select {
	case <-vm2.Done():
		t.Errorf("vm2's QEMU exited: %s", vm2.Stderr())
	default:
	}
	t.Logf("ports:\n%s", cli(t, "ports", "--admin", adminSock))
}

// plugged waits for vm2's one NIC, checks its MTU is the port's, addresses
// it and pings the peer through it; the daemon lists net1 running.
func plugged(t *testing.T, vm2, peer *guest.VM, adminSock string, mtu int) {
	t.Helper()
	eth := waitNICs(t, vm2, 1)[0]
	if got := strings.TrimSpace(vm2.MustRun("cat /sys/class/net/"+eth+"/mtu", pingTimeout)); got != strconv.Itoa(mtu) {
		t.Errorf("vm2 %s: MTU %s, want host_mtu %d", eth, got, mtu)
	}
	vm2.MustRun(fmt.Sprintf("ip link set %s up && ip addr add 169.254.121.1/24 dev %s", eth, eth), 10*time.Second)
	if err := vm2.Ping("169.254.121.2", 3, pingTimeout); err != nil {
		t.Fatalf("vm2→peer over the plugged NIC: %v\n%s", err, cli(t, "ports", "--admin", adminSock))
	}
	if err := peer.Ping("169.254.121.1", 2, pingTimeout); err != nil {
		t.Fatalf("peer→vm2: %v", err)
	}
	if list := cli(t, "ports", "--admin", adminSock); !regexp.MustCompile(`(?m)^net1\s+running\s.*\syes\s`).MatchString(list) {
		t.Errorf("ports does not list net1 running and connected:\n%s", list)
	}
}

// unplugged runs `unplug` and checks the guest lost its NIC, the daemon
// its port net1 and the port its socket file.
func unplugged(t *testing.T, vm2 *guest.VM, adminSock, qmpAddr, sock string) {
	t.Helper()
	t.Logf("unplug: %s", strings.TrimSpace(cli(t, "unplug", "--qmp", qmpAddr, "--id", "net1", "--admin", adminSock, "--timeout", "60s")))
	waitNICs(t, vm2, 0)
	if list := cli(t, "ports", "--admin", adminSock); regexp.MustCompile(`(?m)^net1\s`).MatchString(list) {
		t.Errorf("ports still lists net1 after unplug:\n%s", list)
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket file %s after unplug: %v", sock, err)
	}
}

// backgroundPing is a busybox ping running in a guest until stopped.
type backgroundPing struct {
	vm    *guest.VM
	start time.Time
}

// startBackgroundPing pings addr twice a second in vm's background.
func startBackgroundPing(t *testing.T, vm *guest.VM, addr string) *backgroundPing {
	t.Helper()
	vm.MustRun(fmt.Sprintf("ping -i 0.5 %s >/tmp/bgping.log 2>&1 & echo $! >/tmp/bgping.pid", addr), 10*time.Second)
	return &backgroundPing{vm: vm, start: time.Now()}
}

// stop ends the ping with SIGINT (busybox prints its summary) and returns
// the requests sent, the replies and the sequence numbers never answered.
func (b *backgroundPing) stop(t *testing.T) (sent, got int, missing []int) {
	t.Helper()
	out := b.vm.MustRun("kill -INT $(cat /tmp/bgping.pid) && sleep 1; cat /tmp/bgping.log", 20*time.Second)
	m := regexp.MustCompile(`(\d+) packets transmitted, (\d+) packets received`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no ping summary (did the background ping die?):\n%s", out)
	}
	sent, _ = strconv.Atoi(m[1])
	got, _ = strconv.Atoi(m[2])
	seen := map[int]bool{}
	for _, s := range regexp.MustCompile(`seq=(\d+) `).FindAllStringSubmatch(out, -1) {
		n, _ := strconv.Atoi(s[1])
		seen[n] = true
	}
	for i := 0; i < sent; i++ {
		if !seen[i] {
			missing = append(missing, i)
		}
	}
	return sent, got, missing
}
