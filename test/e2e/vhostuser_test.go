package e2e

import (
	"fmt"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/test/guest"
)

// TestVhostUserWithNativeQEMU: VM A's virtio-net rings are served by the
// sidecar over vhost-user (guest memory shared), VM B is on QEMU's own
// -netdev l2tpv3; they ping (small and full-size frames), and a kill -9 and
// restart of the sidecar under the running VM (QEMU chardev reconnect=1).
func TestVhostUserWithNativeQEMU(t *testing.T) {
	guest.Require(t)
	sock := filepath.Join(guest.SocketDir(t), "vu.sock")
	ps, pn := guest.FreeUDPPort(), guest.FreeUDPPort()
	opts := fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=%d,txsession=0x31,rxsession=0x32", ps, pn)
	native := fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=%d,txsession=0x32,rxsession=0x31", pn, ps)
	sc := startSidecar(t, "--vhost-user", sock, "--l2tpv3", opts)
	a := guest.Start(t, guest.Options{Name: "vmA", IPs: []string{"169.254.100.1/24"}, SharedMemory: true,
		Args: []string{
			"-chardev", "socket,id=c0,path=" + sock + ",reconnect=1",
			"-netdev", "vhost-user,id=n0,chardev=c0",
			"-device", guest.VirtioNetDevice("n0", 1, "vectors=0"), // QEMU 7.2 under TCG needs INTx
		}})
	b := guest.Start(t, guest.Options{Name: "vmB", IPs: []string{"169.254.100.2/24"},
		Args: append(guest.NativeL2TPv3(native), guest.NIC("n0", 2)...)})
	a.MustWaitReady(bootTimeout)
	b.MustWaitReady(bootTimeout)
	if err := a.Ping("169.254.100.2", 3, pingTimeout); err != nil {
		t.Fatalf("A→B: %v\n%s", err, sc.counters())
	}
	if err := b.Ping("169.254.100.1", 2, pingTimeout); err != nil {
		t.Fatal(err)
	}
	// Full-size frames through the rings (QEMU's own l2tpv3 on B's side
	// truncates anything over 2048 bytes, so no jumbo check here).
	if out, err := a.Run("ping -c 2 -s 1400 -w 10 169.254.100.2", pingTimeout); err != nil {
		t.Fatalf("1400-byte ping: %v\n%s", err, out)
	}
	t.Logf("counters: %s", sc.counters())

	sc.cmd.Process.Signal(syscall.SIGKILL)
	<-sc.done
	start := time.Now()
	sc = startSidecar(t, "--vhost-user", sock, "--l2tpv3", opts)
	if err := a.Ping("169.254.100.2", 10, pingTimeout); err != nil {
		t.Fatalf("after restart: %v\n%s", err, sc.counters())
	}
	t.Logf("ping resumed %v after the sidecar restart; VM A not rebooted; %s", time.Since(start).Round(time.Millisecond), sc.counters())
}
