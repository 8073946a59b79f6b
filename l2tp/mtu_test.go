package l2tp

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestInnerMTU pins the inner MTU for each encapsulation, address family,
// cookie, sublayer and offset on a few underlays, and that underlay-mtu=
// is what ProbeUnderlay reports.
func TestInnerMTU(t *testing.T) {
	const v4udp = "src=192.0.2.1,dst=198.51.100.7,txsession=1,udp,srcport=1,dstport=1"
	const v4ip = "src=192.0.2.1,dst=198.51.100.7,txsession=1"
	const v6udp = "src=2001:db8::1,dst=2001:db8::2,ipv6,txsession=1,udp,srcport=1,dstport=1"
	const v6ip = "src=2001:db8::1,dst=2001:db8::2,ipv6,txsession=1"
	tests := []struct {
		opts     string
		underlay int
		overhead int
		inner    int
	}{
		{v4udp, 1500, 36, 1450},
		{v4udp + ",l2spec=default", 1500, 40, 1446},
		{v4udp + ",counter,txcookie=1,rxcookie=2", 1500, 44, 1442},
		{v4udp + ",cookie64,txcookie=1,rxcookie=2", 9000, 44, 8942},
		{v4udp + ",l2spec=default", 1280, 40, 1226},
		{v4ip, 1500, 24, 1462},
		{v4ip + ",l2spec=default", 1500, 28, 1458},
		{v4ip + ",cookie64,txcookie=1,rxcookie=2,l2spec=default,offset=256", 576, 292, 270},
		{v6udp, 1500, 56, 1430},
		{v6udp, 1280, 56, 1210},
		{v6udp + ",cookie64,txcookie=1,rxcookie=1,l2spec=default,offset=2", 1500, 70, 1416},
		{v6ip, 1280, 44, 1222},
		{v6ip + ",seq=both,txcookie=1,rxcookie=1", 65535, 52, 65469},
	}
	for _, tt := range tests {
		opts := tt.opts + ",underlay-mtu=" + strconv.Itoa(tt.underlay)
		c, err := ParseOptions(opts)
		if err != nil {
			t.Fatal(err)
		}
		if c.Overhead() != tt.overhead || c.InnerMTU(tt.underlay) != tt.inner {
			t.Errorf("%s: overhead %d, inner MTU %d; want %d, %d", opts, c.Overhead(), c.InnerMTU(tt.underlay), tt.overhead, tt.inner)
		}
		if u := ProbeUnderlay(c); u.MTU != tt.underlay || u.From != MTUFromOption || u.String() != fmt.Sprintf("%d (underlay-mtu)", tt.underlay) {
			t.Errorf("%s: ProbeUnderlay %+v", opts, u)
		}
	}
}

// TestProbeUnderlayRoute: without underlay-mtu= the route's MTU is asked
// (loopback: 65536, an IPv4 packet being at most 65535); an address with
// no route falls back to 1500.
func TestProbeUnderlayRoute(t *testing.T) {
	for _, tt := range []struct {
		opts string
		want Underlay
	}{
		{"src=127.0.0.1,dst=127.0.0.1,txsession=1", Underlay{MTU: 65535, From: MTUFromRoute}},
		{"src=::1,dst=::1,ipv6,txsession=1,udp,srcport=1,dstport=2", Underlay{MTU: 65536, From: MTUFromRoute}},
		{"src=::1,dst=unresolvable.invalid,ipv6,txsession=1", Underlay{MTU: 1500, From: MTUFromDefault}},
	} {
		c, err := ParseOptions(tt.opts)
		if err != nil {
			t.Fatal(err)
		}
		if got := ProbeUnderlay(c); got != tt.want {
			t.Errorf("%s: %+v, want %+v", tt.opts, got, tt.want)
		}
	}
}

// pmtuDisc reads the tunnel socket's IP(V6)_MTU_DISCOVER setting.
func pmtuDisc(t *testing.T, tun *Tunnel) int {
	t.Helper()
	var v int
	var err error
	level, opt := unix.IPPROTO_IP, unix.IP_MTU_DISCOVER
	if tun.Config().IPv6 {
		level, opt = unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER
	}
	rc, _ := tun.f.SyscallConn()
	rc.Control(func(fd uintptr) { v, err = unix.GetsockoptInt(int(fd), level, opt) })
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestOversizeLoopback sends frames at, just above and far above a 1280
// underlay MTU over loopback, UDP and IP, IPv4 and IPv6, both policies:
// every frame above is counted; with drop it is dropped (oversize) and the
// socket sets DF; with fragment it arrives whole (loopback's own MTU is
// larger, so the kernel need not fragment here; TestOversizeNetns makes
// it). The GSO segment cap and a multiqueue Sender follow the policy too.
func TestOversizeLoopback(t *testing.T) {
	for _, udp := range []bool{true, false} {
		for _, v6 := range []bool{false, true} {
			for _, policy := range []Oversize{OversizeFragment, OversizeDrop} {
				t.Run(fmt.Sprintf("udp=%v/ipv6=%v/%s", udp, v6, policy), func(t *testing.T) {
					testOversize(t, udp, v6, policy)
				})
			}
		}
	}
}

// testOversize is one case of TestOversizeLoopback.
func testOversize(t *testing.T, udp, v6 bool, policy Oversize) {
	a, b := openPair(t, udp, v6, ",l2spec=default,underlay-mtu=1280,oversize="+policy.String(), TunnelOptions{}, TunnelOptions{})
	if u := a.Underlay(); u.MTU != 1280 || u.From != MTUFromOption {
		t.Fatalf("Underlay %+v", u)
	}
	fit := a.InnerMTU() + 14 // the largest frame that fits whole
	if fit != 1280-a.Config().Overhead() {
		t.Fatalf("inner MTU %d with overhead %d", a.InnerMTU(), a.Config().Overhead())
	}
	if udp && a.tx.gsoMax != 0 && a.tx.gsoMax != 1280-a.Config().outerHeaders() {
		t.Fatalf("GSO segment cap %d, want the underlay's", a.tx.gsoMax)
	}
	wantDisc := map[bool]int{false: unix.IP_PMTUDISC_DONT, true: unix.IPV6_PMTUDISC_WANT}[v6]
	if policy == OversizeDrop {
		wantDisc = unix.IP_PMTUDISC_DO
	}
	if got := pmtuDisc(t, a); got != wantDisc {
		t.Fatalf("MTU_DISCOVER %d, want %d", got, wantDisc)
	}
	frames := [][]byte{frameOf(1, 100), frameOf(2, fit), frameOf(3, fit+1), frameOf(4, 100), frameOf(5, 4000), frameOf(6, fit)}
	send(t, a, frames...)
	want := frames
	if policy == OversizeDrop {
		want = [][]byte{frames[0], frames[1], frames[3], frames[5]}
	}
	got := collect(t, b, len(want))
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("frame %d: %d bytes, want %d", i, len(got[i]), len(want[i]))
		}
	}
	s := a.Stats().Snapshot()
	wantDrops := map[Oversize]uint64{OversizeFragment: 0, OversizeDrop: 2}[policy]
	if s.AboveMTU != 2 || s.Drops[DropOversize] != wantDrops || s.TxPackets != uint64(len(want)) || s.Dropped() != wantDrops {
		t.Fatalf("stats %s", s)
	}
	// A multiqueue VM's sender counts and drops alike.
	snd, err := a.NewSender()
	if err != nil {
		t.Fatal(err)
	}
	off := snd.Headroom()
	if err := snd.WriteFrames([][]byte{append(make([]byte, off), frameOf(7, fit+1)...)}, []int{fit + 1}, off); err != nil {
		t.Fatal(err)
	}
	if policy == OversizeDrop {
		wantDrops++
	}
	if s := a.Stats().Snapshot(); s.AboveMTU != 3 || s.Drops[DropOversize] != wantDrops {
		t.Fatalf("after the sender: stats %s", s)
	}
	if policy == OversizeFragment {
		collect(t, b, 1)
	}
}

// TestOversizeNoAllocs: frames above the underlay MTU, dropped or sent,
// allocate nothing.
func TestOversizeNoAllocs(t *testing.T) {
	for _, policy := range []Oversize{OversizeFragment, OversizeDrop} {
		a, b := openPair(t, true, false, ",underlay-mtu=1280,oversize="+policy.String(), TunnelOptions{BatchSize: 8}, TunnelOptions{BatchSize: 8})
		off := a.Headroom()
		bufs, sizes := make([][]byte, 8), make([]int, 8)
		for i := range bufs {
			sizes[i] = 64
			if i%2 == 1 {
				sizes[i] = 2000
			}
			bufs[i] = make([]byte, off+sizes[i])
		}
		want := 4
		if policy == OversizeFragment {
			want = 8
		}
		frames := make([][]byte, 8)
		allocs := testing.AllocsPerRun(50, func() {
			if err := a.WriteFrames(bufs, sizes, off); err != nil {
				t.Fatal(err)
			}
			for got := 0; got < want; {
				n, err := b.ReadFrames(frames)
				if err != nil {
					t.Fatal(err)
				}
				got += n
			}
		})
		if allocs != 0 {
			t.Fatalf("%s: %v allocs per batch", policy, allocs)
		}
	}
}

// netnsLo makes a network namespace whose loopback has MTU 1280 and
// returns its path; root only.
func netnsLo(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	name := fmt.Sprintf("l2tp-mtu-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Skipf("ip netns add: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up", "mtu", "1280").CombinedOutput(); err != nil {
		t.Fatalf("ip link set lo: %v %s", err, out)
	}
	return name
}

// openPairIn opens a tunnel pair inside namespace ns, from a thread switched
// into it (that thread is discarded).
func openPairIn(t *testing.T, ns string, v6 bool, opts string) (*Tunnel, *Tunnel) {
	t.Helper()
	ca, cb := pairConfigs(t, true, v6, opts)
	type result struct {
		a, b *Tunnel
		err  error
	}
	done := make(chan result)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		var r result
		defer func() { done <- r }()
		fd, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			r.err = err
			return
		}
		defer unix.Close(fd)
		if r.err = unix.Setns(fd, unix.CLONE_NEWNET); r.err != nil {
			return
		}
		if r.a, r.err = Open(ca, TunnelOptions{}); r.err != nil {
			return
		}
		r.b, r.err = Open(cb, TunnelOptions{})
	}()
	r := <-done
	if r.a != nil {
		t.Cleanup(func() { r.a.Close() })
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { r.b.Close() })
	return r.a, r.b
}

// fragCreates reads the namespace's count of fragments this host made.
func fragCreates(t *testing.T, ns string, v6 bool) uint64 {
	t.Helper()
	file, key := "/proc/net/snmp", "FragCreates"
	if v6 {
		file, key = "/proc/net/snmp6", "Ip6FragCreates"
	}
	out, err := exec.Command("ip", "netns", "exec", ns, "cat", file).Output()
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(out), "\n")
	for i, l := range lines {
		f := strings.Fields(l)
		if v6 && len(f) == 2 && f[0] == key {
			n, _ := strconv.ParseUint(f[1], 10, 64)
			return n
		}
		if !v6 && len(f) > 0 && f[0] == "Ip:" && i+1 < len(lines) {
			vals := strings.Fields(lines[i+1])
			for j, k := range f {
				if k == key && j < len(vals) {
					n, _ := strconv.ParseUint(vals[j], 10, 64)
					return n
				}
			}
		}
	}
	t.Fatalf("%s: no %s", file, key)
	return 0
}

// TestOversizeNetns runs over a loopback of MTU 1280 (a namespace of its
// own), where the route's MTU is the underlay's: probed, not given.
// oversize=fragment: a frame above it is fragmented by the kernel
// (IP_PMTUDISC_DONT, IPV6_PMTUDISC_WANT) and arrives reassembled. With
// oversize=drop it is dropped before the kernel; and with underlay-mtu
// claiming more than the route carries, the kernel refuses the datagram
// (DF: send_error) rather than fragmenting it.
func TestOversizeNetns(t *testing.T) {
	ns := netnsLo(t)
	for _, v6 := range []bool{false, true} {
		t.Run(fmt.Sprintf("ipv6=%v", v6), func(t *testing.T) {
			a, b := openPairIn(t, ns, v6, ",oversize=fragment")
			if u := a.Underlay(); u.MTU != 1280 || u.From != MTUFromRoute {
				t.Fatalf("Underlay %+v, want 1280 from the route", u)
			}
			before := fragCreates(t, ns, v6)
			big := frameOf(1, 3000)
			send(t, a, frameOf(0, 100), big)
			if got := collect(t, b, 2); !bytes.Equal(got[1], big) {
				t.Fatalf("fragmented frame: %d bytes back", len(got[1]))
			}
			if n := fragCreates(t, ns, v6) - before; n < 3 {
				t.Fatalf("%d fragments made, want 3", n)
			}
			if s := a.Stats().Snapshot(); s.AboveMTU != 1 || s.Dropped() != 0 {
				t.Fatalf("fragment: stats %s", s)
			}

			a, b = openPairIn(t, ns, v6, ",oversize=drop")
			send(t, a, big, frameOf(2, 100))
			if got := collect(t, b, 1); len(got[0]) != 100 {
				t.Fatalf("drop: got a %d-byte frame", len(got[0]))
			}
			if s := a.Stats().Snapshot(); s.AboveMTU != 1 || s.Drops[DropOversize] != 1 || s.Dropped() != 1 {
				t.Fatalf("drop: stats %s", s)
			}

			a, b = openPairIn(t, ns, v6, ",oversize=drop,underlay-mtu=9000")
			before = fragCreates(t, ns, v6)
			send(t, a, big, frameOf(3, 100))
			if got := collect(t, b, 1); len(got[0]) != 100 {
				t.Fatalf("drop, underlay-mtu=9000: got a %d-byte frame", len(got[0]))
			}
			if s := a.Stats().Snapshot(); s.AboveMTU != 0 || s.Drops[DropSendError] != 1 || s.Dropped() != 1 {
				t.Fatalf("drop, underlay-mtu=9000: stats %s", s)
			}
			if n := fragCreates(t, ns, v6) - before; n != 0 {
				t.Fatalf("drop, underlay-mtu=9000: %d fragments made", n)
			}
		})
	}
}

// TestLinuxPeerMTU: the kernel peer's interface gets the inner MTU of
// underlay-mtu=, else of 1500.
func TestLinuxPeerMTU(t *testing.T) {
	for opts, want := range map[string]string{
		"src=192.0.2.1,dst=198.51.100.7,txsession=1,udp,srcport=1,dstport=2":                   "ip link set l2tpeth0 up mtu 1450",
		"src=192.0.2.1,dst=198.51.100.7,txsession=1,udp,srcport=1,dstport=2,underlay-mtu=9000": "ip link set l2tpeth0 up mtu 8950",
	} {
		c, err := ParseOptions(opts)
		if err != nil {
			t.Fatal(err)
		}
		cmds, err := c.LinuxPeerCommands("l2tpeth0", 1)
		if err != nil {
			t.Fatal(err)
		}
		if got := cmds[2]; got != want {
			t.Errorf("%s: %q, want %q", opts, got, want)
		}
	}
}
