package l2tp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/cpu"
	"golang.org/x/sys/unix"
)

// rxRing is the receive side of a tunnel: a recvmmsg vector over
// preallocated slots (buffer, iovec, source address, control buffer) and the
// decoder. Only the ReadFrames goroutine touches it.
type rxRing struct {
	rc      syscall.RawConn
	stats   *Stats
	dec     *Decoder
	peer    sockaddr
	pin     bool // drop sources other than peer
	pinPort bool // compare the source port too (UDP)
	learn   bool // peer-learning=on: a good datagram from elsewhere moves the peer

	box         *peerBox                // the peer the send queues use
	stranger    bool                    // the current message is not from the peer
	onMove      func(to netip.AddrPort) // TunnelOptions.OnPeerMove
	lastMoveLog time.Time

	msgs  []mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6
	ctl   []byte // ctlSpace bytes per slot
	buf   []byte // slot bytes per slot
	slot  int
	// seqs, with a reorder window, receives each delivered frame's
	// sequence number; the window then counts what it delivers.
	seqs []uint32

	want   int        // messages asked of the next recvmmsg
	got    int        // messages the last recvmmsg returned
	next   int        // first of them not yet wholly delivered
	nextAt int        // where its next GRO segment starts (0: not begun)
	seg    int        // its GRO segment size (its length if not coalesced)
	errno  unix.Errno // its error, when it returned none
	readFn func(fd uintptr) bool

	// kernelSeen is the last SO_RXQ_OVFL value seen; atomic because the
	// demultiplexer of a shared socket starts from the value its first
	// session's ring reached.
	kernelSeen atomic.Uint32
	_          cpu.CacheLinePad
}

// newRxRing allocates batch receive slots of slot bytes each and wires the
// message vector to them once, so receiving allocates nothing.
func newRxRing(c Config, batch, slot int, rc syscall.RawConn, peer sockaddr, s *Stats) *rxRing {
	slot = (slot + 63) &^ 63
	r := &rxRing{
		rc:      rc,
		stats:   s,
		dec:     NewDecoder(c, s),
		peer:    peer,
		pin:     c.PinPeer,
		learn:   c.LearnPeer,
		pinPort: c.Encap == EncapUDP,
		msgs:    make([]mmsghdr, batch),
		iovs:    make([]unix.Iovec, batch),
		names:   make([]unix.RawSockaddrInet6, batch),
		ctl:     make([]byte, batch*ctlSpace),
		buf:     make([]byte, batch*slot),
		slot:    slot,
	}
	for i := range r.msgs {
		r.iovs[i].Base = &r.buf[i*slot]
		r.iovs[i].SetLen(slot)
		h := &r.msgs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		h.Iov = &r.iovs[i]
		h.SetIovlen(1)
		h.Control = &r.ctl[i*ctlSpace]
	}
	if slot < 65535 {
		// A coalesced datagram may be as large as the largest datagram;
		// one too big for a slot would lose the whole run as truncated.
		_ = rc.Control(func(fd uintptr) { _ = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 0) })
	}
	r.readFn = r.recv
	return r
}

// recv is the netpoller callback: one recvmmsg; false (park until readable)
// when nothing is waiting.
func (r *rxRing) recv(fd uintptr) bool {
	for {
		n, errno := recvmmsg(fd, r.msgs[:r.want])
		switch errno {
		case 0:
			r.got, r.errno = n, 0
			return true
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		r.got, r.errno = 0, errno
		return true
	}
}

// ReadFrames blocks (on the netpoller) until at least one datagram arrives,
// decapsulates the batch and returns how many good frames it put in
// frames[:n]. Bad datagrams are counted by reason and skipped, so n may be
// 0. frames[i] are sub-slices of the tunnel's receive ring (or of its
// reorder window's slots) and stay valid until the next ReadFrames call.
// len(frames) may be less than BatchSize. It returns net.ErrClosed after
// Close. Only one goroutine may call it.
func (t *Tunnel) ReadFrames(frames [][]byte) (int, error) {
	if len(frames) == 0 {
		return 0, fmt.Errorf("l2tpv3: ReadFrames: len(frames) is 0")
	}
	if t.win != nil {
		return t.win.read(frames)
	}
	return t.readFrames(frames)
}

// readFrames is ReadFrames without a reorder window, and the window's
// source: the socket while the session reads it alone, else its queue.
func (t *Tunnel) readFrames(frames [][]byte) (int, error) {
	r := t.rx
	if r == nil || r.next >= r.got {
		if q := t.q.Load(); q != nil { // the socket is shared: read this session's queue
			return t.readQueued(q, frames)
		}
	}
	want := min(len(frames), len(r.msgs))
	if r.next < r.got { // the rest of a coalesced batch
		return r.deliver(frames[:want]), nil
	}
	for {
		if t.closed.Load() {
			return 0, net.ErrClosed
		}
		if q := t.q.Load(); q != nil {
			return t.readQueued(q, frames)
		}
		for i := range want {
			h := &r.msgs[i].Hdr
			h.Namelen = unix.SizeofSockaddrInet6
			h.SetControllen(ctlSpace)
			h.Flags = 0
		}
		r.want = want
		if err := r.rc.Read(r.readFn); err != nil {
			if t.closed.Load() {
				return 0, net.ErrClosed
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if t.q.Load() != nil {
					continue // a second session joined: the queue from now on
				}
				if t.win != nil && t.win.deadline {
					return 0, nil // a held frame is due
				}
			}
			return 0, fmt.Errorf("l2tpv3: recvmmsg %s: %w", t.local, err)
		}
		switch r.errno {
		case 0:
			r.next, r.nextAt = 0, 0
			return r.deliver(frames[:want]), nil
		case unix.ECONNREFUSED, unix.EHOSTUNREACH, unix.ENETUNREACH, unix.EHOSTDOWN,
			unix.ENETDOWN, unix.EPROTO, unix.ENOMEM, unix.ENOBUFS:
			continue // a queued ICMP error or a transient shortage: read on
		}
		return 0, fmt.Errorf("l2tpv3: recvmmsg %s: %w", t.local, r.errno)
	}
}

// deliver checks the received messages from r.next on and puts the good
// frames in frames, splitting coalesced (UDP_GRO) datagrams into their
// segments without copying; what does not fit waits for the next call. It
// counts the bad ones by reason and the totals.
func (r *rxRing) deliver(frames [][]byte) int {
	n, bytes := 0, 0
	for ; r.next < r.got && n < len(frames); r.next, r.nextAt = r.next+1, 0 {
		i := r.next
		if r.nextAt == 0 && !r.admit(i) {
			continue
		}
		pkt := r.buf[i*r.slot : i*r.slot+int(r.msgs[i].Len)]
		for at := r.nextAt; at < len(pkt); at += r.seg {
			if n == len(frames) {
				r.nextAt = at
				r.count(n, bytes)
				return n
			}
			frame, reason, ok := r.dec.Decap(pkt[at:min(at+r.seg, len(pkt))])
			if !ok {
				r.stats.rxDrops[reason].Add(1)
				continue
			}
			if r.stranger {
				r.learnPeer(i)
			}
			frames[n] = frame
			if r.seqs != nil {
				r.seqs[n] = r.dec.ns
			}
			n++
			bytes += len(frame)
		}
	}
	r.count(n, bytes)
	return n
}

// admit checks message i as a whole (kernel drop count, truncation,
// source) and sets its segment size; false: dropped and counted.
func (r *rxRing) admit(i int) bool {
	if !r.admitWhole(i) {
		return false
	}
	m := &r.msgs[i]
	r.stranger = false
	if (r.pin || r.learn) && !r.peer.matches(&r.names[i], m.Hdr.Namelen, r.pinPort) {
		if r.learn {
			r.stranger = true // its first good frame moves the peer
			return true
		}
		r.stats.rxDrops[DropSource].Add(uint64((int(m.Len) + r.seg - 1) / r.seg))
		return false
	}
	return true
}

// count adds delivered frames to the counters (unless a reorder window
// counts them).
func (r *rxRing) count(n, bytes int) {
	if n > 0 && r.seqs == nil {
		r.stats.addRx(uint64(n), uint64(bytes))
	}
}

// control reads message i's control data: it counts the kernel's new drops
// (SO_RXQ_OVFL is cumulative) and returns the GRO segment size, 0 if none.
func (r *rxRing) control(i int) int {
	cl := min(int(r.msgs[i].Hdr.Controllen), ctlSpace)
	if cl == 0 {
		return 0
	}
	v, ok, seg := rxControl(r.ctl[i*ctlSpace : i*ctlSpace+cl])
	if seen := r.kernelSeen.Load(); ok && v != seen {
		r.stats.rxDrops[DropKernel].Add(uint64(v - seen))
		r.kernelSeen.Store(v)
	}
	return seg
}
