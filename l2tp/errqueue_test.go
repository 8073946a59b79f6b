package l2tp

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// recvErrCmsg is an IP_RECVERR control message as the kernel writes it for
// an ICMP port unreachable from 127.0.0.1: a 16-byte header (len 48, level
// IPPROTO_IP 0, type IP_RECVERR 11), then struct sock_extended_err
// (ee_errno 111 ECONNREFUSED, origin 2 ICMP, type 3, code 3, pad, info 0,
// data 0) and the offender's sockaddr_in.
var recvErrCmsg = []byte{
	48, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 11, 0, 0, 0,
	111, 0, 0, 0, 2, 3, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	2, 0, 0, 0, 127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0,
}

// TestExtendedErrno reads ee_errno from golden control bytes and ignores
// what is not an IP(V6)_RECVERR message or is cut short.
func TestExtendedErrno(t *testing.T) {
	if errno, ok := extendedErrno(recvErrCmsg); !ok || errno != unix.ECONNREFUSED {
		t.Fatalf("IP_RECVERR: %v %v", errno, ok)
	}
	v6 := bytes.Clone(recvErrCmsg)
	binary.NativeEndian.PutUint32(v6[8:], unix.IPPROTO_IPV6)
	binary.NativeEndian.PutUint32(v6[12:], unix.IPV6_RECVERR)
	binary.NativeEndian.PutUint32(v6[16:], uint32(unix.EMSGSIZE))
	if errno, ok := extendedErrno(v6); !ok || errno != unix.EMSGSIZE {
		t.Fatalf("IPV6_RECVERR: %v %v", errno, ok)
	}
	other := bytes.Clone(recvErrCmsg)
	binary.NativeEndian.PutUint32(other[12:], unix.IP_TTL)
	for name, ctl := range map[string][]byte{"other type": other, "short": recvErrCmsg[:24], "empty": nil,
		"bad length": append([]byte{200}, recvErrCmsg[1:]...)} {
		if errno, ok := extendedErrno(ctl); ok {
			t.Errorf("%s: read %v", name, errno)
		}
	}
}

// TestNetErrorKinds pins how errors from the error queue are counted.
func TestNetErrorKinds(t *testing.T) {
	for errno, want := range map[unix.Errno]NetError{
		unix.EHOSTUNREACH: NetErrUnreachable, unix.ENETUNREACH: NetErrUnreachable,
		unix.ECONNREFUSED: NetErrRefused, unix.ENOPROTOOPT: NetErrRefused,
		unix.EACCES: NetErrProhibited, unix.EMSGSIZE: NetErrTooBig, unix.EPROTO: NetErrOther,
	} {
		if got := netErrorOf(errno); got != want {
			t.Errorf("%v: %v, want %v", errno, got, want)
		}
	}
	want := []string{"unreachable", "refused", "prohibited", "too_big", "other"}
	for i, w := range want {
		if got := NetError(i).String(); got != w {
			t.Errorf("NetError(%d) = %q, want %q", i, got, w)
		}
	}
}

// TestICMPErrorsCounted sends to a UDP port nobody listens on: each ICMP
// port unreachable is counted (net_errors refused) from the error queue,
// and the one-shot socket error it leaves (ECONNREFUSED on the next send)
// is resent, not counted as a drop: once a peer listens there, every frame
// sent after it arrives, and nothing was ever dropped as a send error.
func TestICMPErrorsCounted(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		t.Run(fmt.Sprintf("ipv6=%v", v6), func(t *testing.T) {
			ca, cb := pairConfigs(t, true, v6, "")
			a, err := Open(ca, TunnelOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			for i := range 20 { // no peer yet: lost in the network, ICMP errors back
				send(t, a, frameOf(i, 100))
				time.Sleep(20 * time.Millisecond)
			}
			b, err := Open(cb, TunnelOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			var frames [][]byte
			for i := range 50 {
				frames = append(frames, frameOf(100+i, 100))
			}
			send(t, a, frames...)
			got := collect(t, b, len(frames))
			for i := range frames {
				if !bytes.Equal(got[i], frames[i]) {
					t.Fatalf("frame %d lost or out of order", i)
				}
			}
			s := a.Stats().Snapshot()
			t.Logf("sender: %s", s)
			if s.TxPackets != 70 || s.Dropped() != 0 {
				t.Errorf("sent %d of 70, dropped %d: the one-shot error cost frames", s.TxPackets, s.Dropped())
			}
			if s.NetErrors[NetErrRefused] == 0 {
				t.Error("no port-unreachable error counted")
			}
		})
	}
}

// TestCutsGSO: a tbf on the device toward the peer (a namespace's
// loopback) is seen as a qdisc that cuts GSO messages, so GSO is not used
// through it; none or a fifo is not.
func TestCutsGSO(t *testing.T) {
	ns := netnsLo(t)
	ca, _ := pairConfigs(t, true, false, "")
	peer, err := resolveEndpoints(ca)
	if err != nil {
		t.Fatal(err)
	}
	inNS := func() (cuts bool, gso int) {
		done := make(chan struct{})
		go func() {
			defer close(done)
			runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
			fd, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return
			}
			defer unix.Close(fd)
			if unix.Setns(fd, unix.CLONE_NEWNET) != nil {
				return
			}
			cuts = cutsGSO(peer.peer)
			a, err := Open(ca, TunnelOptions{})
			if err == nil {
				gso = a.tx.gsoMax
				a.Close()
			}
		}()
		<-done
		return cuts, gso
	}
	if cuts, gso := inNS(); cuts || gso == 0 {
		t.Fatalf("noqueue loopback: cuts %v, GSO segment %d", cuts, gso)
	}
	for qdisc, want := range map[string]bool{"pfifo limit 100": false, "tbf rate 1gbit burst 64kb limit 1mb": true} {
		args := append([]string{"-n", ns, "qdisc", "replace", "dev", "lo", "root"}, strings.Fields(qdisc)...)
		if out, err := exec.Command("tc", args...).CombinedOutput(); err != nil {
			t.Skipf("tc: %v %s", err, out)
		}
		if cuts, gso := inNS(); cuts != want || (gso == 0) != want {
			t.Errorf("%s: cuts %v, GSO segment %d; want cuts %v", qdisc, cuts, gso, want)
		}
	}
}
