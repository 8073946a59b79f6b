package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/test/guest"
)

// TestKernelPeerNative checks the Linux-peer recipe: a guest running the
// kernel's l2tp_eth, reached from the host through QEMU user networking,
// and a guest on QEMU's native -netdev l2tpv3 ping each other.
func TestKernelPeerNative(t *testing.T) {
	guest.Require(t)
	cases := []struct {
		name   string
		kernel guest.KernelPeerOptions // ports filled in below
		qemu   string                  // extra -netdev l2tpv3 options
	}{
		{
			name:   "plain",
			kernel: guest.KernelPeerOptions{SessionID: 2, PeerSessionID: 1},
			qemu:   "txsession=2,rxsession=1",
		},
		{
			// Linux sends "cookie" and expects "peer_cookie"; QEMU writes
			// its 64-bit cookies big-endian; counter=on fills the 4-byte
			// default sublayer.
			name: "cookie64+sublayer",
			kernel: guest.KernelPeerOptions{SessionID: 0x10000, PeerSessionID: 7,
				Cookie: "a1b2c3d4e5f60718", PeerCookie: "1122334455667788", L2SpecType: "default"},
			qemu: "txsession=0x10000,rxsession=7,cookie64=on,txcookie=0x1122334455667788,rxcookie=0xa1b2c3d4e5f60718,counter=on",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srcPort := guest.FreeUDPPort()
			ko := tc.kernel
			ko.PeerPort = srcPort
			k := guest.StartKernelPeer(t, ko)
			a := guest.Start(t, guest.Options{
				Name: "vmA",
				IPs:  []string{"169.254.100.1/24"},
				Args: append(guest.NativeL2TPv3(fmt.Sprintf(
					"src=127.0.0.1,srcport=%d,dst=127.0.0.1,dstport=%d,udp=on,%s",
					srcPort, k.HostPort, tc.qemu)), guest.NIC("n0", 1)...),
			})
			k.MustWaitReady(bootTimeout)
			a.MustWaitReady(bootTimeout)
			if err := a.Ping("169.254.100.2", 3, pingTimeout); err != nil {
				t.Log(k.MustRun("ip -s l2tp show session; ip -s link show l2tpeth0", pingTimeout))
				t.Fatal(err)
			}
			if err := k.Ping("169.254.100.1", 2, pingTimeout); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestSidecarWithKernelPeer: VM A on the sidecar pings a Linux kernel
// l2tp_eth end (inside a guest, reached through QEMU user networking) set
// up with the commands `l2tpv3-netdev peer-config --for linux` prints for the
// sidecar's options: plain, with 64-bit cookies and sequencing, and with an
// 8-byte cookie one way and a 4-byte one the other (txcookie64/rxcookie64:
// the kernel's cookie and peer_cookie of different lengths). No datagram is
// dropped as cookie.
func TestSidecarWithKernelPeer(t *testing.T) {
	guest.Require(t)
	cases := []struct {
		name    string
		sidecar string // --l2tpv3 options besides addresses and ports
	}{
		{"plain", "txsession=2,rxsession=1"},
		{"cookie64+seq", "txsession=0x20000,rxsession=9,cookie64=on,txcookie=0x5566778899aabbcc,rxcookie=0x0a0b0c0d0e0f1011,seq=both"},
		{"cookie-tx8-rx4", "txsession=0x31,rxsession=0x32,l2spec=default,txcookie64=on,rxcookie64=off,txcookie=0x1122334455667788,rxcookie=0x99aabbcc"},
		{"cookie-tx4-rx8", "txsession=0x31,rxsession=0x32,txcookie64=off,rxcookie64=on,txcookie=0x99aabbcc,rxcookie=0x1122334455667788"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srcPort, hostPort := guest.FreeUDPPort(), guest.FreeUDPPort()
			opts := fmt.Sprintf("src=127.0.0.1,srcport=%d,dst=127.0.0.1,dstport=%d,udp=on,%s", srcPort, hostPort, tc.sidecar)
			k := guest.StartKernelPeer(t, guest.KernelPeerOptions{HostPort: hostPort, PeerPort: srcPort,
				Commands: linuxPeerCommands(t, opts)})
			sock := filepath.Join(guest.SocketDir(t), "a.sock")
			a := guest.Start(t, guest.Options{Name: "vmA", IPs: []string{"169.254.100.1/24"},
				Args: append(qemuStreamServer("n0", sock), guest.NIC("n0", 1)...)})
			sc := startSidecar(t, "--stream", "unix:"+sock+",server=off,reconnect-ms=100", "--l2tpv3", opts)
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
			t.Logf("sidecar: %s", c)
			if strings.Contains(c, "cookie=") {
				t.Errorf("cookie drops: %s", c)
			}
		})
	}
}
