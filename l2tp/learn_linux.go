package l2tp

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Where the peer is can change while a tunnel runs: with peer-learning=on a
// datagram that passes the session and cookie checks from another address
// or port moves it there (a VM migrated to another host, a peer behind
// NAT), and a host name in dst is resolved again. The receive ring and the
// re-resolver write the peerBox; every send queue picks a move up between
// batches.

// reresolveEvery is how often a host name in dst is resolved again.
const reresolveEvery = 30 * time.Second

// moveLogEvery bounds how often OnPeerMove is called: moves in between are
// only counted (a peer flapping between two sources costs no log flood).
const moveLogEvery = 10 * time.Second

// peerBox is a tunnel's current peer address.
type peerBox struct {
	gen  atomic.Uint64 // bumped by every move; send queues compare it once per batch
	mu   sync.Mutex    // guards addr
	addr sockaddr
	// resolve, when dst is a host name, asks for it to be resolved again
	// now (a send error); nil for a literal dst.
	resolve chan struct{}
}

// move installs s as the peer for every queue's next batch.
func (b *peerBox) move(s sockaddr) {
	b.mu.Lock()
	b.addr = s
	b.mu.Unlock()
	b.gen.Add(1)
}

// load returns the current peer.
func (b *peerBox) load() sockaddr {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.addr
}

// askResolve requests a re-resolution without blocking (one pending is enough).
func (b *peerBox) askResolve() {
	if b != nil && b.resolve != nil {
		select {
		case b.resolve <- struct{}{}:
		default:
		}
	}
}

// follow takes up a peer move before a batch is sent: one atomic load when
// nothing moved.
func (q *txQueue) follow() {
	g := q.box.gen.Load()
	if g == q.gen {
		return
	}
	q.peer, q.gen = q.box.load(), g
	for i := range q.msgs {
		q.msgs[i].Hdr.Name = q.peer.ptr()
		q.msgs[i].Hdr.Namelen = q.peer.len
	}
}

// learnPeer moves the peer to the source of message i, whose datagram just
// passed the session and cookie checks (peer-learning=on), counts the move
// and reports it, at most once per moveLogEvery.
func (r *rxRing) learnPeer(i int) {
	r.stranger = false
	s := sockaddrFrom(&r.names[i])
	r.peer = s
	r.box.move(s)
	r.stats.peerMoves.Add(1)
	if r.onMove != nil && time.Since(r.lastMoveLog) >= moveLogEvery {
		r.lastMoveLog = time.Now()
		r.onMove(s.ap)
	}
}

// sockaddrFrom copies a kernel-written source address.
func sockaddrFrom(raw *unix.RawSockaddrInet6) sockaddr {
	s := sockaddr{raw: *raw, ap: addrPort(raw), len: unix.SizeofSockaddrInet6}
	if raw.Family == unix.AF_INET {
		s.len = unix.SizeofSockaddrInet4
	}
	return s
}

// reresolve resolves the host name dst again every reresolveEvery and after
// a send error, moving the peer when the name points elsewhere, until the
// tunnel closes. A learned peer is replaced only when the name changes.
func (t *Tunnel) reresolve(done <-chan struct{}) {
	tick := time.NewTicker(reresolveEvery)
	defer tick.Stop()
	last := t.box.load().ap.Addr()
	for {
		select {
		case <-done:
			return
		case <-tick.C:
		case <-t.box.resolve:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ip, err := resolveCtx(ctx, "dst", t.cfg.Dst, t.cfg.IPv6)
		cancel()
		if err != nil || ip == last {
			continue
		}
		last = ip
		s, err := newSockaddr("dst", netip.AddrPortFrom(ip, t.cfg.DstPort))
		if err != nil {
			continue
		}
		t.box.move(s)
		t.stats.peerMoves.Add(1)
		if t.onMove != nil {
			t.onMove(s.ap)
		}
	}
}
