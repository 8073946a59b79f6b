package load

import (
	"encoding/binary"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/backend"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/l2tp"
	"golang.org/x/sys/unix"
)

// floodEnv overrides the number of bad datagrams sent to the UDP port
// (default 100,000; 1,000,000 with L2TPV3_SOAK=1).
const floodEnv = "L2TPV3_FLOOD"

// floodClass is one kind of bad datagram: the reason it must be counted
// under and how many were sent.
type floodClass struct {
	name   string
	reason l2tp.Drop
	sent   uint64
}

// filtered is the "reason" of a datagram the port's socket filter drops in
// the kernel (over IP: another session, session 0, too short for a session
// ID): the port never sees it, so it is counted nowhere.
const filtered = l2tp.Drop(l2tp.NumDrops)

// floodPlan is a cycle of prebuilt bad datagrams for one socket, repeated
// until the wanted number is sent; cls[i] is pkts[i]'s class.
type floodPlan struct {
	classes []*floodClass
	pkts    [][]byte
	cls     []int
}

// add appends copies datagrams of a new class, built by mk(k) for k = 0….
func (p *floodPlan) add(name string, reason l2tp.Drop, copies int, mk func(k int) []byte) {
	p.classes = append(p.classes, &floodClass{name: name, reason: reason})
	for k := range copies {
		p.pkts = append(p.pkts, mk(k))
		p.cls = append(p.cls, len(p.classes)-1)
	}
}

// interleave reorders the cycle round-robin across classes, so every batch
// mixes them.
func (p *floodPlan) interleave() {
	byClass := make([][]int, len(p.classes))
	for i, c := range p.cls {
		byClass[c] = append(byClass[c], i)
	}
	var pkts [][]byte
	var cls []int
	for round := 0; len(pkts) < len(p.pkts); round++ {
		for c, idx := range byClass {
			if round < len(idx) {
				pkts, cls = append(pkts, p.pkts[idx[round]]), append(cls, c)
			}
		}
	}
	p.pkts, p.cls = pkts, cls
}

// run sends total datagrams from the cycle on s and counts them per class.
func (p *floodPlan) run(s *sender, total int) error {
	for sent := 0; sent < total; {
		i := sent % len(p.pkts)
		k := min(64, len(p.pkts)-i, total-sent)
		if err := s.send(p.pkts[i : i+k]); err != nil {
			return err
		}
		for _, c := range p.cls[i : i+k] {
			p.classes[c].sent++
		}
		sent += k
	}
	return nil
}

// hostilePort is a flooded port: its VM reader counts what reaches the VM.
type hostilePort struct {
	name  string
	port  *backend.Port
	vm    *vmConn
	good  atomic.Uint64 // good frames the VM received
	bad   atomic.Uint64 // anything else the VM received
	plans []*floodPlan
	pre   backend.PortStatus
}

// watch starts counting what the port's VM receives; only kindGood frames
// of stream are good.
func (h *hostilePort) watch(stream uint32) {
	go h.vm.readLoop(func(f []byte) {
		if kind, s, _, ok := parseFrame(f); ok && kind == kindGood && s == stream {
			h.good.Add(1)
			return
		}
		h.bad.Add(1)
	})
}

// drops is the sum of the port's drop counters.
func (h *hostilePort) drops() uint64 { return h.port.Tunnel().Stats().Snapshot().Dropped() }

// TestHostileNetworkFlood floods port A (UDP, cookie, seq=both, pinned
// peer) with bad datagrams of every class, and port C (IP protocol 115,
// IPv4 with header options; root only) with the IP classes, while port B
// carries good traffic both ways. Nothing bad reaches A's or C's VM, every
// datagram is counted under its reason (or as a kernel drop), the flood
// logs fewer than 100 lines, and B loses nothing.
func TestHostileNetworkFlood(t *testing.T) {
	total := 100_000
	if soak() {
		total = 1_000_000
		holdMachine(t)
	}
	total = envInt(t, floodEnv, total)
	sink := new(logSink)
	ps := newPorts(t, sink)
	dir := sockDir(t)

	a := newUDPFloodTarget(t, ps, dir, total)
	var c *ipFloodTarget
	var cSend func() error
	if os.Geteuid() == 0 {
		c, cSend = newIPFloodTarget(t, ps, dir, total/5)
	} else {
		t.Log("not root: the IP-encapsulation port (IPv4 options, session 0) is skipped")
	}
	bOpts, bPeerCfg, _ := udpPair(t, 0xb1, 0xb2, "", "")
	pb := addPort(t, ps, "B", dir+"/b.sock", bOpts)
	link := startGoodLink(attachVM(t, pb, dir+"/b.sock"), openPeer(t, bPeerCfg), 0xb, 1000, 256, 256, bothWays)

	targets := []*hostilePort{a.hostilePort}
	if c != nil {
		targets = append(targets, c.hostilePort)
	}
	for _, h := range targets {
		if !waitFor(5*time.Second, func() bool { return h.good.Load() == 10 }) {
			t.Fatalf("port %s: %d of the 10 good frames before the flood reached the VM", h.name, h.good.Load())
		}
		h.pre = h.port.Status()
	}
	logsBefore := sink.count()
	start := time.Now()
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	for _, f := range append([]func() error{a.send}, cSend) {
		if f == nil {
			continue
		}
		wg.Add(1)
		go func() { defer wg.Done(); errc <- f() }()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		if err != nil {
			t.Fatal(err)
		}
	}
	sendTime := time.Since(start)
	for _, h := range targets {
		settle(300*time.Millisecond, 60*time.Second, h.drops)
	}
	drainTime := time.Since(start)
	// Ten good frames after the flood: the port still works, and the last
	// one carries the socket's final kernel drop count (SO_RXQ_OVFL).
	a.sendGood(t, 10, 10)
	if c != nil {
		c.sendGood(t, 10)
	}
	for _, h := range targets {
		if !waitFor(5*time.Second, func() bool { return h.good.Load() == 20 }) {
			t.Errorf("port %s: %d of 20 good frames reached the VM", h.name, h.good.Load())
		}
	}
	time.Sleep(backend.DropLogInterval + 200*time.Millisecond) // the last drop lines
	link.halt()
	if err := link.drain(10 * time.Second); err != nil {
		t.Error(err)
	}
	b := link.requireAll(t)
	logLines := sink.count() - logsBefore

	for _, h := range targets {
		checkFloodCounters(t, h)
	}
	t.Logf("flood: %d datagrams to A%s in %v (%.0f/s sent), all counted %v after the start; %d log lines",
		sumSent(a.plans), cFlood(c), sendTime.Round(time.Millisecond),
		float64(sumSent(a.plans)+sumSent(planOf(c)))/sendTime.Seconds(), drainTime.Round(time.Millisecond), logLines)
	t.Logf("port B meanwhile: %d frames to its VM, %d to its peer, none lost, none out of order",
		b.toVMGot, b.toNetGot)
	if logLines >= 100 {
		t.Errorf("the flood logged %d lines, want < 100:\n%s", logLines, sink.String())
	}
}

// cFlood describes port C's share of the flood for the summary line.
func cFlood(c *ipFloodTarget) string {
	if c == nil {
		return ""
	}
	return fmt.Sprintf(" and %d to C", sumSent(c.plans))
}

// planOf returns port C's plans (none without it).
func planOf(h *ipFloodTarget) []*floodPlan {
	if h == nil {
		return nil
	}
	return h.plans
}

// sumSent is the number of datagrams the plans sent.
func sumSent(plans []*floodPlan) uint64 {
	var n uint64
	for _, p := range plans {
		for _, c := range p.classes {
			n += c.sent
		}
	}
	return n
}

// checkFloodCounters checks the port's counters against what was sent:
// nothing bad delivered, every datagram counted, each under its reason
// unless the kernel dropped it first, and logs the table.
func checkFloodCounters(t *testing.T, h *hostilePort) {
	t.Helper()
	post := h.port.Status()
	var want [l2tp.NumDrops]uint64
	var b strings.Builder
	fmt.Fprintf(&b, "port %s, per class (sent → expected reason):\n", h.name)
	for _, p := range h.plans {
		for _, c := range p.classes {
			if c.reason == filtered {
				fmt.Fprintf(&b, "  %-40s %9d → filtered in the kernel, not seen\n", c.name, c.sent)
				continue
			}
			want[c.reason] += c.sent
			fmt.Fprintf(&b, "  %-40s %9d → %s\n", c.name, c.sent, c.reason)
		}
	}
	var got [l2tp.NumDrops]uint64
	var sumGot, sumWant uint64
	for d := range got {
		got[d] = post.Session.Drops[d] - h.pre.Session.Drops[d]
		sumGot += got[d]
		sumWant += want[d]
	}
	kernel := got[l2tp.DropKernel]
	fmt.Fprintf(&b, "  counted: ")
	for d := range l2tp.Drop(l2tp.NumDrops) {
		if got[d] != 0 || want[d] != 0 {
			fmt.Fprintf(&b, "%s=%d ", d, got[d])
		}
		if d != l2tp.DropKernel && (got[d] > want[d] || got[d]+kernel < want[d]) {
			t.Errorf("port %s: %s drops %d, want %d (less at most the %d kernel drops)", h.name, d, got[d], want[d], kernel)
		}
	}
	fmt.Fprintf(&b, "\n  sum of drops %d = expected %d; bad frames delivered to the VM: %d", sumGot, sumWant, h.bad.Load())
	t.Log(b.String())
	if sumGot != sumWant {
		t.Errorf("port %s: %d drops counted for %d bad datagrams sent", h.name, sumGot, sumWant)
	}
	if h.bad.Load() != 0 {
		t.Errorf("port %s: %d bad frames reached the VM", h.name, h.bad.Load())
	}
	if rx := post.Session.RxPackets - h.pre.Session.RxPackets; rx != 10 {
		t.Errorf("port %s: %d frames delivered during and after the flood, want the 10 good ones", h.name, rx)
	}
}

// udpFloodTarget is port A: UDP, 32-bit cookie, RFC 4719 sequencing, the
// peer pinned; the test plays its peer on two sockets (the right source
// and a wrong one).
type udpFloodTarget struct {
	*hostilePort
	total       int
	main, other *sender
	session     uint32
	cookie      uint32
}

// newUDPFloodTarget opens port A and its VM and sends the first 10 good
// frames (sequence numbers 0..9).
func newUDPFloodTarget(t *testing.T, ps *backend.Ports, dir string, total int) *udpFloodTarget {
	opts, peer, peerPort := udpPair(t, 0xa1, 0xa2, ",txcookie=0x11111111,rxcookie=0x22222222,seq=both", "")
	p := addPort(t, ps, "A", dir+"/a.sock", opts)
	if !p.Config().L2TP.PinPeer {
		t.Fatal("peer pinning is not on by default for a literal dst")
	}
	a := &udpFloodTarget{hostilePort: &hostilePort{name: "A", port: p, vm: attachVM(t, p, dir+"/a.sock")},
		total: total, session: 0xa2, cookie: 0x22222222}
	a.watch(0xa)
	lo := [4]byte{127, 0, 0, 1}
	side := sa4(lo, int(peer.DstPort))
	a.main = newSender(dgramSocket(t, true, sa4(lo, peerPort), side), 64)
	a.other = newSender(dgramSocket(t, true, sa4(lo, freeUDPPort(t)), side), 64)
	a.plan()
	a.sendGood(t, 0, 10)
	return a
}

// hdr builds A's 16-byte header: flags word, session, cookie, sublayer.
func (a *udpFloodTarget) hdr(flags, session, cookie, sublayer uint32) []byte {
	h := make([]byte, 16)
	binary.BigEndian.PutUint32(h[0:], flags)
	binary.BigEndian.PutUint32(h[4:], session)
	binary.BigEndian.PutUint32(h[8:], cookie)
	binary.BigEndian.PutUint32(h[12:], sublayer)
	return h
}

// good is a correct data packet with sequence number ns.
func (a *udpFloodTarget) good(ns uint32) []byte {
	return append(a.hdr(0x00030000, a.session, a.cookie, 0x40000000|ns), newFrame(kindGood, 0xa, uint64(ns), 60)...)
}

// sendGood sends n good packets from sequence number first.
func (a *udpFloodTarget) sendGood(t testing.TB, first, n uint32) {
	var pkts [][]byte
	for ns := first; ns < first+n; ns++ {
		pkts = append(pkts, a.good(ns))
	}
	if err := a.main.send(pkts); err != nil {
		t.Fatal(err)
	}
}

// plan builds the two cycles: every class but the wrong source on the
// peer's own socket, the wrong source on the other one. The next expected
// sequence number during the flood is 10.
func (a *udpFloodTarget) plan() {
	const next = 10
	bad := func(k int) []byte { return newFrame(kindBad, 0xa, uint64(k), 60) }
	ok := uint32(0x00030000)
	s := uint32(0x40000000 | next)
	main := new(floodPlan)
	main.add("wrong session", l2tp.DropSession, 64, func(k int) []byte {
		return append(a.hdr(ok, a.session+1+uint32(k), a.cookie, s), bad(k)...)
	})
	main.add("session 0 (UDP: data, not ours)", l2tp.DropSession, 64, func(k int) []byte { return append(a.hdr(ok, 0, a.cookie, s), bad(k)...) })
	main.add("wrong cookie", l2tp.DropCookie, 64, func(k int) []byte {
		return append(a.hdr(ok, a.session, a.cookie^uint32(1+k), s), bad(k)...)
	})
	huge := append(a.hdr(ok, a.session, ^a.cookie, s), make([]byte, 65507-16)...)
	putFrame(huge[16:], kindBad, 0xa, 0)
	main.add("oversized (65507 B), wrong cookie", l2tp.DropCookie, 1, func(int) []byte { return huge })
	main.add("control (T bit), full header", l2tp.DropControl, 64, func(k int) []byte { return append(a.hdr(0xc8030000, a.session, a.cookie, s), bad(k)...) })
	main.add("control (T bit), 4 bytes", l2tp.DropControl, 64, func(int) []byte { return []byte{0xc8, 0x03, 0, 0x0c} })
	main.add("version 2", l2tp.DropMalformed, 64, func(k int) []byte { return append(a.hdr(0x00020000, a.session, a.cookie, s), bad(k)...) })
	main.add("empty datagram", l2tp.DropMalformed, 64, func(int) []byte { return nil })
	main.add("short (3 bytes)", l2tp.DropMalformed, 64, func(int) []byte { return []byte{0, 3, 0} })
	main.add("header cut (12 of 16 bytes)", l2tp.DropMalformed, 64, func(int) []byte { return a.hdr(ok, a.session, a.cookie, s)[:12] })
	main.add("runt frame (13 bytes)", l2tp.DropMalformed, 64, func(k int) []byte { return append(a.hdr(ok, a.session, a.cookie, s), bad(k)[:13]...) })
	main.add("no S bit under seq=both", l2tp.DropSequence, 64, func(k int) []byte { return append(a.hdr(ok, a.session, a.cookie, next), bad(k)...) })
	main.add("replayed (copy of the last accepted)", l2tp.DropSequence, 64, func(int) []byte { return a.good(next - 1) })
	main.add("out of window (behind, never in a row)", l2tp.DropSequence, 64, func(k int) []byte {
		ns := uint32(next+1<<23+2*k) & 0xffffff
		return append(a.hdr(ok, a.session, a.cookie, 0x40000000|ns), bad(k)...)
	})
	main.interleave()
	other := new(floodPlan)
	other.add("wrong source port (else valid, ahead)", l2tp.DropSource, 64, func(k int) []byte {
		return append(a.hdr(ok, a.session, a.cookie, 0x40000000|uint32(next+k)), bad(k)...)
	})
	a.plans = []*floodPlan{main, other}
}

// send runs the flood: the wrong-source share (one in 14, as one class
// among 14) on the other socket, the rest on the peer's socket, at once.
func (a *udpFloodTarget) send() error {
	nOther := a.total / 14
	errc := make(chan error, 1)
	go func() { errc <- a.plans[1].run(a.other, nOther) }()
	err := a.plans[0].run(a.main, a.total-nOther)
	if e := <-errc; err == nil {
		err = e
	}
	return err
}

// ipFloodTarget is port C: IP protocol 115 over IPv4, 32-bit cookie; its
// peer's datagrams carry 40 bytes of IPv4 options (IHL 15).
type ipFloodTarget struct {
	*hostilePort
	opts    *sender
	session uint32
	cookie  uint32
}

// newIPFloodTarget opens port C on a random 127.x.y.0 network and sends
// its first 10 good frames; it returns the port and its flood function.
func newIPFloodTarget(t *testing.T, ps *backend.Ports, dir string, total int) (*ipFloodTarget, func() error) {
	n := loopbackNet()
	side, peer, stranger := [4]byte{n[0], n[1], n[2], 1}, [4]byte{n[0], n[1], n[2], 2}, [4]byte{n[0], n[1], n[2], 3}
	ip := func(a [4]byte) string { return fmt.Sprintf("%d.%d.%d.%d", a[0], a[1], a[2], a[3]) }
	opts := fmt.Sprintf("src=%s,dst=%s,txsession=0xc1,rxsession=0xc2,txcookie=0x33333333,rxcookie=0x44444444", ip(side), ip(peer))
	p := addPort(t, ps, "C", dir+"/c.sock", opts)
	c := &ipFloodTarget{hostilePort: &hostilePort{name: "C", port: p, vm: attachVM(t, p, dir+"/c.sock")},
		session: 0xc2, cookie: 0x44444444}
	c.watch(0xc)
	fd := dgramSocket(t, false, sa4(peer, 0), sa4(side, 0))
	nops := strings.Repeat("\x01", 40) // 40 bytes of NOP options: IHL 15
	if err := unix.SetsockoptString(fd, unix.IPPROTO_IP, unix.IP_OPTIONS, nops); err != nil {
		t.Fatalf("setsockopt IP_OPTIONS: %v", err)
	}
	c.opts = newSender(fd, 64)
	strangerS := newSender(dgramSocket(t, false, sa4(stranger, 0), sa4(side, 0)), 64)
	c.plan()
	c.sendGood(t, 10)
	return c, func() error {
		nOther := total / 6
		errc := make(chan error, 1)
		go func() { errc <- c.plans[1].run(strangerS, nOther) }()
		err := c.plans[0].run(c.opts, total-nOther)
		if e := <-errc; err == nil {
			err = e
		}
		return err
	}
}

// hdr builds C's 8-byte header: session, cookie.
func (c *ipFloodTarget) hdr(session, cookie uint32) []byte {
	return binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, session), cookie)
}

// sendGood sends n good packets (with the IPv4 options).
func (c *ipFloodTarget) sendGood(t testing.TB, n int) {
	var pkts [][]byte
	for i := range n {
		pkts = append(pkts, append(c.hdr(c.session, c.cookie), newFrame(kindGood, 0xc, uint64(i), 60)...))
	}
	if err := c.opts.send(pkts); err != nil {
		t.Fatal(err)
	}
}

// plan builds C's cycles: the IP classes on the options socket, the wrong
// source address on the other.
func (c *ipFloodTarget) plan() {
	bad := func(k int) []byte { return newFrame(kindBad, 0xc, uint64(k), 60) }
	main := new(floodPlan)
	main.add("IPv4 options (IHL 15), wrong session", filtered, 64, func(k int) []byte {
		return append(c.hdr(c.session+1+uint32(k), c.cookie), bad(k)...)
	})
	main.add("IPv4 options, wrong cookie", l2tp.DropCookie, 64, func(k int) []byte {
		return append(c.hdr(c.session, c.cookie^uint32(1+k)), bad(k)...)
	})
	main.add("session 0 (control over IP)", filtered, 64, func(k int) []byte { return append(c.hdr(0, c.cookie), bad(k)...) })
	main.add("short (2 bytes after the IP header)", filtered, 64, func(int) []byte { return []byte{0, 0} })
	main.add("header cut (6 of 8 bytes)", l2tp.DropMalformed, 64, func(int) []byte { return c.hdr(c.session, c.cookie)[:6] })
	main.add("runt frame (13 bytes)", l2tp.DropMalformed, 64, func(k int) []byte { return append(c.hdr(c.session, c.cookie), bad(k)[:13]...) })
	main.interleave()
	other := new(floodPlan)
	other.add("wrong source address (else valid)", l2tp.DropSource, 64, func(k int) []byte {
		return append(c.hdr(c.session, c.cookie), bad(k)...)
	})
	c.plans = []*floodPlan{main, other}
}
