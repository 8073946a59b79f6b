package l2tp

import (
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// counter reads a tunnel until it closes and counts the frames it got.
type counter struct{ n atomic.Int64 }

// countFrames starts the reader of t.
func countFrames(t *Tunnel) *counter {
	c := &counter{}
	go func() {
		frames := make([][]byte, 64)
		for {
			n, err := t.ReadFrames(frames)
			if err != nil {
				return
			}
			c.n.Add(int64(n))
		}
	}()
	return c
}

// waitFor waits until c has counted want frames, and reports what it has.
func (c *counter) waitFor(want int64) int64 {
	deadline := time.Now().Add(3 * time.Second)
	for c.n.Load() < want && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	return c.n.Load()
}

// sendN writes n 100-byte frames through t.
func sendN(tb testing.TB, t *Tunnel, n int) {
	tb.Helper()
	frames := make([][]byte, n)
	for i := range frames {
		frames[i] = make([]byte, 100)
	}
	send(tb, t, frames...)
}

// learnRig is a sidecar A with peer learning on, its first peer B1 on one
// port and the same peer moved (B2: same session and cookie, another port).
type learnRig struct {
	a, b1, b2 *Tunnel
	moves     chan netip.AddrPort
	pb2       uint16
}

// newLearnRig opens A (peer-learning=on, opts) facing B1, and B2, all on
// 127.0.0.1 UDP; B2 sends with txcookie peerCookie.
func newLearnRig(t *testing.T, opts string, peerCookie string) *learnRig {
	t.Helper()
	pa, pb1, pb2 := freePort(t, "127.0.0.1"), freePort(t, "127.0.0.1"), freePort(t, "127.0.0.1")
	mk := func(src, dst uint16, tx, rx, cookies string) Config {
		c, err := ParseOptions(fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,udp,srcport=%d,dstport=%d,txsession=%s,rxsession=%s%s%s",
			src, dst, tx, rx, cookies, opts))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	r := &learnRig{moves: make(chan netip.AddrPort, 8), pb2: pb2}
	ca := mk(pa, pb1, "0x61", "0x62", ",txcookie=0xa1,rxcookie=0xb2")
	ca.LearnPeer = true
	open := func(c Config, o TunnelOptions) *Tunnel {
		tn, err := Open(c, o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tn.Close() })
		return tn
	}
	r.a = open(ca, TunnelOptions{OnPeerMove: func(to netip.AddrPort) { r.moves <- to }})
	r.b1 = open(mk(pb1, pa, "0x62", "0x61", ",txcookie=0xb2,rxcookie=0xa1"), TunnelOptions{})
	r.b2 = open(mk(pb2, pa, "0x62", "0x61", ",txcookie="+peerCookie+",rxcookie=0xa1"), TunnelOptions{})
	return r
}

// TestPeerLearningFollowsAMovedPeer: A talks to B1; a datagram with the
// session's cookie from B2 moves A's peer there (counted, reported once);
// A's frames then go to B2 and no longer to B1.
func TestPeerLearningFollowsAMovedPeer(t *testing.T) {
	r := newLearnRig(t, "", "0xb2")
	ga, g1, g2 := countFrames(r.a), countFrames(r.b1), countFrames(r.b2)
	sendN(t, r.b1, 10)
	sendN(t, r.a, 10)
	if got, got1 := ga.waitFor(10), g1.waitFor(10); got != 10 || got1 != 10 {
		t.Fatalf("before the move: A got %d, B1 got %d, want 10 each", got, got1)
	}
	sendN(t, r.b2, 10)
	if got := ga.waitFor(20); got != 20 {
		t.Fatalf("A got %d of B2's 10 frames", got-10)
	}
	select {
	case to := <-r.moves:
		if to.Port() != r.pb2 {
			t.Fatalf("moved to %v, want port %d", to, r.pb2)
		}
	case <-time.After(time.Second):
		t.Fatal("OnPeerMove not called")
	}
	if want := fmt.Sprintf("127.0.0.1:%d", r.pb2); r.a.PeerAddr() != want {
		t.Fatalf("PeerAddr %s, want %s", r.a.PeerAddr(), want)
	}
	sendN(t, r.a, 10)
	if got := g2.waitFor(10); got != 10 {
		t.Fatalf("B2 got %d of A's 10 frames after the move", got)
	}
	time.Sleep(50 * time.Millisecond)
	if got := g1.n.Load(); got != 10 {
		t.Fatalf("B1 got %d frames after the move", got-10)
	}
	if st := r.a.Stats().Snapshot(); st.PeerMoves != 1 || !strings.Contains(st.String(), "peer_moves 1") {
		t.Fatalf("peer_moves %d (%s), want 1", st.PeerMoves, st)
	}
}

// TestPeerLearningNeedsTheCookie: a datagram with the session but a wrong
// cookie from elsewhere is dropped (cookie) and moves nothing.
func TestPeerLearningNeedsTheCookie(t *testing.T) {
	r := newLearnRig(t, "", "0xbad")
	ga, g1 := countFrames(r.a), countFrames(r.b1)
	sendN(t, r.b2, 10)
	deadline := time.Now().Add(3 * time.Second)
	for r.a.Stats().Snapshot().Drops[DropCookie] < 10 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	st := r.a.Stats().Snapshot()
	if st.Drops[DropCookie] != 10 || st.PeerMoves != 0 || ga.n.Load() != 0 {
		t.Fatalf("wrong cookie: %s, %d delivered; want 10 cookie drops, no move", st, ga.n.Load())
	}
	sendN(t, r.a, 5)
	if got := g1.waitFor(5); got != 5 {
		t.Fatalf("B1 got %d of 5: the peer moved", got)
	}
}

// TestPeerLearningSequenceResyncs (issue 13, item 5): a seq=both session
// whose peer moves to a sidecar that numbers from 0 again loses no more
// than the five frames the resync rule waits for.
func TestPeerLearningSequenceResyncs(t *testing.T) {
	r := newLearnRig(t, ",seq=both", "0xb2")
	ga := countFrames(r.a)
	for range 5 {
		sendN(t, r.b1, 20) // numbers 0..99
	}
	if got := ga.waitFor(100); got != 100 {
		t.Fatalf("A got %d of B1's 100", got)
	}
	for range 5 {
		sendN(t, r.b2, 20) // numbers 0..99 again, from the moved peer
	}
	ga.waitFor(195)
	time.Sleep(50 * time.Millisecond) // a straggler would arrive by now
	got := ga.n.Load() - 100
	t.Logf("after the move: %d of 100 delivered, %s", got, r.a.Stats().Snapshot())
	if got < 95 {
		t.Fatalf("after the move A got %d of 100 frames, want at least 95", got)
	}
	if r.a.Stats().Snapshot().PeerMoves != 1 {
		t.Fatal("the peer did not move")
	}
}

// TestPeerLearningConfig: refused without a cookie, named in the error;
// read back by String.
func TestPeerLearningConfig(t *testing.T) {
	_, err := ParseOptions("src=192.0.2.1,dst=198.51.100.7,txsession=1,peer-learning=on")
	if err == nil || !strings.Contains(err.Error(), "peer-learning") || !strings.Contains(err.Error(), "cookie") {
		t.Fatalf("peer-learning without a cookie: %v", err)
	}
	c, err := ParseOptions("src=192.0.2.1,dst=198.51.100.7,txsession=1,txcookie=1,rxcookie=2,peer-learning")
	if err != nil || !c.LearnPeer {
		t.Fatalf("%+v, %v", c, err)
	}
	back, err := ParseOptions(c.String())
	if err != nil || back != c {
		t.Fatalf("String %q reads back as %+v, %v", c.String(), back, err)
	}
}

// TestPeerLearningAllocs: with learning on, the receive path from the
// current peer allocates nothing.
func TestPeerLearningAllocs(t *testing.T) {
	a, b := openPair(t, true, false, ",txcookie=0x11,rxcookie=0x11,peer-learning=on", TunnelOptions{BatchSize: 64}, TunnelOptions{BatchSize: 64})
	r := &ring{a: a, b: b, frames: make([][]byte, 64)}
	for range 64 {
		r.bufs = append(r.bufs, make([]byte, a.Headroom()+1500))
		r.sizes = append(r.sizes, 1500)
	}
	r.run(t)
	if n := testing.AllocsPerRun(50, func() { r.run(t) }); n != 0 {
		t.Fatalf("%v allocations per batch with peer learning on", n)
	}
}

// TestPeerLearningMovesSenders: a Sender made before the move (a
// multiqueue VM's second queue pair) sends to the learned peer too.
func TestPeerLearningMovesSenders(t *testing.T) {
	r := newLearnRig(t, "", "0xb2")
	s, err := r.a.NewSender()
	if err != nil {
		t.Fatal(err)
	}
	ga, g2 := countFrames(r.a), countFrames(r.b2)
	sendN(t, r.b2, 1)
	if got := ga.waitFor(1); got != 1 {
		t.Fatal("A did not get B2's frame")
	}
	bufs, sizes := [][]byte{make([]byte, s.Headroom()+100)}, []int{100}
	if err := s.WriteFrames(bufs, sizes, s.Headroom()); err != nil {
		t.Fatal(err)
	}
	if got := g2.waitFor(1); got != 1 {
		t.Fatalf("B2 got %d frames from A's second sender after the move, want 1", got)
	}
}
