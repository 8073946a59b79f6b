package l2tp

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// udpSession opens a UDP tunnel on 127.0.0.1:sport toward dport with the
// sessions tx and rx, closed when the test ends.
func udpSession(t testing.TB, sport, dport uint16, tx, rx uint32, opts string) *Tunnel {
	t.Helper()
	return openTunnel(t, fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,udp,srcport=%d,dstport=%d,txsession=%#x,rxsession=%#x%s",
		sport, dport, tx, rx, opts))
}

// openTunnel opens a tunnel of the option string, closed when the test ends.
func openTunnel(t testing.TB, opts string) *Tunnel {
	t.Helper()
	c, err := ParseOptions(opts)
	if err != nil {
		t.Fatal(err)
	}
	tun, err := Open(c, TunnelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tun.Close() })
	return tun
}

// sharedRig is a sidecar tunnel of three sessions on one port P (s[0..2]),
// the first two facing peer sessions on one peer port (k[0], k[1]: a
// shared tunnel there too), the third one on another peer port (k[2]).
type sharedRig struct {
	p, q1, q2 uint16
	base      uint32
	s, k      [3]*Tunnel
}

func newSharedRig(t *testing.T) *sharedRig {
	r := &sharedRig{p: freePort(t, "127.0.0.1"), q1: freePort(t, "127.0.0.1"), q2: freePort(t, "127.0.0.1"),
		base: 0x4000 + rand.Uint32N(1<<20)}
	for i := range 3 {
		q := r.q1
		if i == 2 {
			q = r.q2
		}
		mine, theirs := r.base+uint32(i), r.base+0x100+uint32(i)
		r.s[i] = udpSession(t, r.p, q, theirs, mine, "")
		r.k[i] = udpSession(t, q, r.p, mine, theirs, "")
	}
	return r
}

// TestSharedTunnelDemux: three sessions on one sidecar port, two peers
// (one of them a shared tunnel itself): each session gets exactly its own
// frames, a datagram for an unknown session is counted on the socket, one
// from the wrong peer on the pinned session, and the socket reports its
// sessions.
func TestSharedTunnelDemux(t *testing.T) {
	r := newSharedRig(t)
	if r.s[0].Sessions() != 3 || r.k[0].Sessions() != 2 || r.k[2].Sessions() != 1 {
		t.Fatalf("sessions: sidecar %d, peer 1 %d, peer 2 %d; want 3, 2, 1", r.s[0].Sessions(), r.k[0].Sessions(), r.k[2].Sessions())
	}
	for i := range 3 {
		send(t, r.k[i], frameOf(i, 60), frameOf(i+10, 1400))
	}
	stranger := udpSession(t, freePort(t, "127.0.0.1"), r.p, 0x7fff0000, 0x7fff0001, "")
	send(t, stranger, frameOf(99, 60))
	// Session 3's peer is port q2: the same session from q1 is not its peer.
	wrong := udpSession(t, freePort(t, "127.0.0.1"), r.p, r.base+2, 0x7fff0002, "")
	send(t, wrong, frameOf(98, 60))
	for i := range 3 {
		got := collect(t, r.s[i], 2)
		if string(got[0]) != string(frameOf(i, 60)) || string(got[1]) != string(frameOf(i+10, 1400)) {
			t.Errorf("session %d got the wrong frames", i)
		}
	}
	// Round trip: every session answers through the shared socket.
	for i := range 3 {
		send(t, r.s[i], frameOf(i+20, 100))
		if got := collect(t, r.k[i], 1); string(got[0]) != string(frameOf(i+20, 100)) {
			t.Errorf("peer %d got the wrong answer", i)
		}
	}
	waitFor(t, func() bool { return r.s[2].Stats().Snapshot().Drops[DropSource] == 1 }, "the wrong peer's datagram counted on session 3")
	waitFor(t, func() bool { return r.s[0].Socket().Stats.Drops[DropSession] == 1 }, "the unknown session counted on the socket")
	for i := range 3 {
		if st := r.s[i].Stats().Snapshot(); st.RxPackets != 2 || st.Drops[DropSession] != 0 || st.Drops[DropVMSlow] != 0 {
			t.Errorf("session %d: %s", i, st)
		}
	}
	sock := r.s[1].Socket()
	if want := fmt.Sprint([]uint32{r.base, r.base + 1, r.base + 2}); fmt.Sprint(sock.Sessions) != want || sock.Local != fmt.Sprintf("127.0.0.1:%d", r.p) {
		t.Errorf("socket %+v, want sessions %s on port %d", sock, want, r.p)
	}
}

// waitFor polls cond for up to 3 s.
func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	for end := time.Now().Add(3 * time.Second); !cond(); {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestSharedTunnelJoinLeave: a session reading alone keeps receiving, with
// nothing lost, while others join and leave its socket; a session ID
// already on the socket is refused; the last to leave frees the port.
func TestSharedTunnelJoinLeave(t *testing.T) {
	p, q := freePort(t, "127.0.0.1"), freePort(t, "127.0.0.1")
	base := 0x5000 + rand.Uint32N(1<<20)
	a := udpSession(t, p, q, base+0x100, base, "")
	ka := udpSession(t, q, p, base, base+0x100, "")
	ca := countFrames(a) // reads alone, parked on the socket
	sendN(t, ka, 100)
	if got := ca.waitFor(100); got != 100 {
		t.Fatalf("alone: %d of 100", got)
	}
	b := udpSession(t, p, q, base+0x101, base+1, "")
	kb := udpSession(t, q, p, base+1, base+0x101, "")
	cb := countFrames(b)
	sendN(t, ka, 100)
	sendN(t, kb, 50)
	if got, gotB := ca.waitFor(200), cb.waitFor(50); got != 200 || gotB != 50 {
		t.Fatalf("after the join: a %d of 200, b %d of 50", got, gotB)
	}
	if _, err := Open(b.Config(), TunnelOptions{}); err == nil || !strings.Contains(err.Error(), "already received on this socket") {
		t.Fatalf("same session again: %v", err)
	}
	b.Close()
	sendN(t, ka, 100)
	if got := ca.waitFor(300); got != 300 {
		t.Fatalf("after the leave: %d of 300", got)
	}
	if st := a.Stats().Snapshot(); st.Dropped() != 0 {
		t.Errorf("a: %s", st)
	}
	a.Close()
	ka.Close()
	kb.Close()
	again := udpSession(t, p, q, 1, 1, "")
	if again.Sessions() != 1 {
		t.Errorf("reopened port: %d sessions", again.Sessions())
	}
}

// TestSharedTunnelSlowVM: of two sessions, one is not read (its VM is
// stopped). The other receives all its 2000 frames; the stopped one keeps
// exactly a queue's worth (1024) and the rest, 976, are counted vm_slow on
// it and nowhere else. Once alone on the socket the stopped session is
// lossless again: 2000 more frames wait (the socket is not read meanwhile)
// and all arrive when it reads.
func TestSharedTunnelSlowVM(t *testing.T) {
	p, q := freePort(t, "127.0.0.1"), freePort(t, "127.0.0.1")
	base := 0x6000 + rand.Uint32N(1<<20)
	slow := udpSession(t, p, q, base+0x100, base, "")
	fast := udpSession(t, p, q, base+0x101, base+1, "")
	kslow := udpSession(t, q, p, base, base+0x100, "")
	kfast := udpSession(t, q, p, base+1, base+0x101, "")
	cf := countFrames(fast)
	const n = 2000
	for i := range int64(n / 100) {
		sendN(t, kslow, 100)
		sendN(t, kfast, 100)
		cf.waitFor((i + 1) * 100) // the fast VM takes what it is sent
	}
	if got := cf.waitFor(n); got != n {
		t.Fatalf("fast session: %d of %d; fast %s, slow %s, socket %s, peer %s", got, n, fast.Stats().Snapshot(), slow.Stats().Snapshot(), slow.Socket().Stats, kfast.Stats().Snapshot())
	}
	waitFor(t, func() bool { return slow.Stats().Snapshot().Drops[DropVMSlow] == n-sessionQueueFrames },
		fmt.Sprintf("%d vm_slow drops on the slow session", n-sessionQueueFrames))
	if st := fast.Stats().Snapshot(); st.Dropped() != 0 {
		t.Errorf("fast session: %s", st)
	}
	if st := slow.Socket().Stats; st.Dropped() != 0 {
		t.Errorf("socket: %s", st)
	}
	if q := slow.Socket().Queued; q != sessionQueueFrames {
		t.Errorf("the slow session's queue holds %d frames, want %d", q, sessionQueueFrames)
	}
	t.Logf("two sessions: fast got %d/%d, slow queued %d, vm_slow %d", cf.n.Load(), n,
		slow.Socket().Queued, slow.Stats().Snapshot().Drops[DropVMSlow])

	fast.Close()
	for range n / 100 {
		sendN(t, kslow, 100)
	}
	time.Sleep(50 * time.Millisecond) // the demultiplexer waits on the full queue; the socket holds the rest
	cs := countFrames(slow)
	if got := cs.waitFor(sessionQueueFrames + n); got != sessionQueueFrames+n {
		t.Fatalf("alone again: %d of %d", got, sessionQueueFrames+n)
	}
	st := slow.Stats().Snapshot()
	if st.Drops[DropVMSlow] != n-sessionQueueFrames || st.Drops[DropKernel] != 0 || slow.Socket().Stats.Dropped() != 0 {
		t.Errorf("alone again, drops grew: %s; socket %s", st, slow.Socket().Stats)
	}
	t.Logf("one session: all %d frames arrived, vm_slow stays %d", n, st.Drops[DropVMSlow])
}

// TestSharedTunnelOptionsMustAgree: socket-level options are the socket's:
// a session asking for others is refused, naming them.
func TestSharedTunnelOptionsMustAgree(t *testing.T) {
	p, q := freePort(t, "127.0.0.1"), freePort(t, "127.0.0.1")
	udpSession(t, p, q, 1, 1, "")
	for _, tt := range []struct{ opts, want string }{
		{",oversize=drop", "oversize=drop differs from oversize=fragment"},
		{",peer-learning=on,cookie64=on,txcookie=1,rxcookie=1", "peer-learning=on needs a socket of its own"},
		{",tos=0xb8", "tos=0xb8 ttl=0 differ from tos=0x0 ttl=0"},
		{",ttl=9", "tos=0x0 ttl=9 differ from tos=0x0 ttl=0"},
	} {
		c, err := ParseOptions(fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,udp,srcport=%d,dstport=%d,txsession=2%s", p, q, tt.opts))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Open(c, TunnelOptions{}); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.opts, err, tt.want)
		}
	}
}

// TestSharedTunnelNoAllocs: demultiplexing (receive, look up, check, copy
// into the queue) and reading the queues allocate nothing per batch.
func TestSharedTunnelNoAllocs(t *testing.T) {
	r := newSharedRig(t)
	frames := make([][]byte, 64)
	bufs, sizes := make([][]byte, 16), make([]int, 16)
	off := r.k[0].Headroom()
	for i := range bufs {
		bufs[i], sizes[i] = make([]byte, off+200), 200
	}
	round := func() {
		for i := range 3 {
			if err := r.k[i].WriteFrames(bufs, sizes, off); err != nil {
				t.Fatal(err)
			}
		}
		for i := range 3 {
			for got := 0; got < len(bufs); {
				n, err := r.s[i].ReadFrames(frames)
				if err != nil {
					t.Fatal(err)
				}
				got += n
			}
		}
	}
	round()
	if a := testing.AllocsPerRun(50, round); a != 0 {
		t.Errorf("%v allocations per round of 3×16 frames", a)
	}
}

// TestSessionsFilterLogic runs the filter of a shared IP-encapsulation
// socket: its sessions pass, any other and session 0 are dropped.
func TestSessionsFilterLogic(t *testing.T) {
	ids := []uint32{5, 0x12345678, 7}
	for _, ipv6 := range []bool{false, true} {
		vm, err := bpf.NewVM(sessionsFilter(ids, ipv6))
		if err != nil {
			t.Fatal(err)
		}
		for _, tt := range []struct {
			id   uint32
			pass bool
		}{{5, true}, {7, true}, {0x12345678, true}, {6, false}, {0, false}, {0x12345679, false}} {
			pkt := make([]byte, 64)
			at := 0
			if !ipv6 {
				pkt[0], at = 0x45, 20
			}
			pkt[at], pkt[at+1], pkt[at+2], pkt[at+3] = byte(tt.id>>24), byte(tt.id>>16), byte(tt.id>>8), byte(tt.id)
			n, err := vm.Run(pkt)
			if err != nil {
				t.Fatal(err)
			}
			if (n >= len(pkt)) != tt.pass || n != 0 && n < len(pkt) {
				t.Errorf("ipv6=%v session %#x: keeps %d of %d, want pass=%v", ipv6, tt.id, n, len(pkt), tt.pass)
			}
		}
	}
}

// TestSharedTunnelKernelDropsCountedOnce: the kernel's drop count
// (SO_RXQ_OVFL) is cumulative per socket. Drops a session counted while
// it read the socket alone are not counted again on the socket when a
// second session joins and the demultiplexer takes over.
func TestSharedTunnelKernelDropsCountedOnce(t *testing.T) {
	p, q := freePort(t, "127.0.0.1"), freePort(t, "127.0.0.1")
	base := 0x9000 + rand.Uint32N(1<<20)
	a := udpSession(t, p, q, base+0x100, base, "")
	ka := udpSession(t, q, p, base, base+0x100, "")
	frame := frameOf(1, 1400)
	for range 100 { // 6400 frames of 1400 bytes: more than a 4 MiB buffer holds
		frames := make([][]byte, 64)
		for i := range frames {
			frames[i] = frame
		}
		send(t, ka, frames...)
	}
	ca := countFrames(a)
	waitFor(t, func() bool { return a.Stats().Snapshot().Drops[DropKernel] > 0 }, "the socket's overflow counted")
	for last := int64(-1); ca.n.Load() != last; time.Sleep(100 * time.Millisecond) {
		last = ca.n.Load() // until the socket is drained
	}
	kernel := a.Stats().Snapshot().Drops[DropKernel] // GSO runs: one per run
	udpSession(t, p, q, base+0x101, base+1, "")      // the demultiplexer takes over
	send(t, ka, frame)
	if got := ca.waitFor(ca.n.Load() + 1); got == 0 {
		t.Fatal("nothing after the join")
	}
	sock := a.Socket().Stats.Drops[DropKernel]
	total := socketDrops(t, a)
	if kernel+sock != total {
		t.Errorf("kernel drops: session %d + socket %d, the kernel says %d for the socket", kernel, sock, total)
	}
	t.Logf("alone: %d frames, %d kernel drops seen; after the join the socket counts %d; the kernel %d", ca.n.Load(), kernel, sock, total)
}

// socketDrops is the kernel's drop count of t's socket (SO_MEMINFO,
// SK_MEMINFO_DROPS).
func socketDrops(t *testing.T, tun *Tunnel) uint64 {
	t.Helper()
	var info [9]uint32 // SK_MEMINFO_VARS
	var errno unix.Errno
	err := tun.sock.rc.Control(func(fd uintptr) {
		l := uint32(unsafe.Sizeof(info))
		_, _, errno = unix.Syscall6(unix.SYS_GETSOCKOPT, fd, unix.SOL_SOCKET, unix.SO_MEMINFO,
			uintptr(unsafe.Pointer(&info)), uintptr(unsafe.Pointer(&l)), 0)
	})
	if err != nil || errno != 0 {
		t.Fatalf("getsockopt SO_MEMINFO: %v %v", err, errno)
	}
	return uint64(info[unix.SK_MEMINFO_DROPS])
}
