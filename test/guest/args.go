package guest

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/internal/testport"
)

// NativeL2TPv3 returns the QEMU arguments for QEMU's own L2TPv3 back end:
// "-netdev", "l2tpv3,id=n0,"+opts. If opts sets id= itself, no id is added.
// Example opts: "src=127.0.0.1,srcport=P1,dst=127.0.0.1,dstport=P2,udp=on,
// txsession=1,rxsession=2" (see QEMU's -netdev l2tpv3 for the rest).
func NativeL2TPv3(opts string) []string {
	if hasKey(opts, "id") {
		return []string{"-netdev", "l2tpv3," + opts}
	}
	return []string{"-netdev", "l2tpv3,id=n0," + opts}
}

// StreamNetdev returns "-netdev stream" arguments connecting (server=off) to
// the unix socket path, plus any extra options such as "reconnect=1".
func StreamNetdev(id, path string, extra ...string) []string {
	return []string{"-netdev", join("stream,id="+id+",server=off,addr.type=unix,addr.path="+path, extra)}
}

// VhostUserNetdev returns "-chardev socket" and "-netdev vhost-user"
// arguments for the back end listening on path; the guest needs
// Options.SharedMemory, and under TCG its device needs "vectors=0"
// (see NIC).
func VhostUserNetdev(id, path string, extra ...string) []string {
	chr := id + "-chr"
	return []string{
		"-chardev", "socket,id=" + chr + ",path=" + path,
		"-netdev", join("vhost-user,id="+id+",chardev="+chr, extra),
	}
}

// VirtioNetDevice returns a virtio-net-pci device string for netdev with
// MAC(i) and romfile= (no iPXE ROM: faster boot, and QEMU 7.2 needs none),
// followed by extra properties. Use "vectors=0" for vhost-user under TCG,
// where QEMU 7.2 crashes starting an MSI-X vhost-user device.
func VirtioNetDevice(netdev string, i int, extra ...string) string {
	return join(fmt.Sprintf("virtio-net-pci,netdev=%s,mac=%s,romfile=", netdev, MAC(i)), extra)
}

// NIC returns "-device", VirtioNetDevice(netdev, i, extra...).
func NIC(netdev string, i int, extra ...string) []string {
	return []string{"-device", VirtioNetDevice(netdev, i, extra...)}
}

// MAC returns a deterministic locally administered unicast MAC for index i
// (0 … 65535): 52:54:00:4c:HH:LL. Different i give different MACs.
func MAC(i int) string {
	return fmt.Sprintf("52:54:00:4c:%02x:%02x", (i>>8)&0xff, i&0xff)
}

// FreeUDPPort returns a UDP port that is free on 127.0.0.1 at the time of
// the call, that it has not returned before in this process and that the
// kernel will not pick for a socket bound to port 0 (internal/testport). It
// panics if none is left.
func FreeUDPPort() int {
	p, err := testport.Free("udp", "127.0.0.1")
	if err != nil {
		panic(err)
	}
	return p
}

// SocketDir returns a short new directory for unix sockets (t.TempDir paths
// can pass the 108-byte limit of a socket address), removed at cleanup.
func SocketDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "l2ts-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// hasKey reports whether a QEMU option string sets key.
func hasKey(opts, key string) bool {
	for _, kv := range strings.Split(opts, ",") {
		if k, _, _ := strings.Cut(kv, "="); k == key {
			return true
		}
	}
	return false
}

func join(base string, extra []string) string {
	for _, e := range extra {
		if e != "" {
			base += "," + e
		}
	}
	return base
}
