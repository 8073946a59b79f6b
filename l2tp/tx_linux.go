package l2tp

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/cpu"
	"golang.org/x/sys/unix"
)

// Bounds on one wait for writability. After EAGAIN our own packets in flight
// free send-buffer space and wake us; the bound is only a safety net. ENOBUFS
// (a full device queue) may come with nothing of ours in flight, so no
// writability edge would ever wake us: retry soon.
const (
	stallPollAgain  = 50 * time.Millisecond
	stallPollNoBufs = time.Millisecond
)

// txQueue is the send side of a tunnel: the encoder and a sendmmsg vector
// whose messages all carry the peer's address. Only the WriteFrames
// goroutine touches it.
type txQueue struct {
	rc     syscall.RawConn
	f      *os.File // for the stall deadline
	stats  *Stats
	enc    *Encoder
	peer   sockaddr
	maxPkt int // largest datagram payload for this socket
	fitPkt int // largest datagram payload within the underlay MTU (<= maxPkt)
	// dropAbove drops packets above fitPkt (oversize=drop).
	dropAbove bool

	msgs []mmsghdr
	iovs []unix.Iovec // one per packet; a message takes one or a GSO run

	gsoMax int                 // largest GSO segment; 0: one message per packet
	np     int                 // packets in iovs for the current flush
	first  []int               // msgs[m]'s first packet in iovs
	segs   []int               // packets in msgs[m]
	fbytes []int               // frame bytes in msgs[m]
	ctls   [][gsoCtlSpace]byte // msgs[m]'s UDP_SEGMENT control message

	pos, end int // messages msgs[pos:end] are still to be sent
	hl       int
	sent     int    // messages sent by this WriteFrames call
	sentB    int    // their frame bytes
	sendErrs uint64 // messages dropped on a send error in this call
	stalls   uint64 // stalls begun in this call
	stallNs  time.Duration
	stalled  bool      // EAGAIN/ENOBUFS seen, no progress since
	stallAt  time.Time // when the current stall began
	noBufs   bool      // the last stall errno was ENOBUFS
	armed    bool      // a write deadline is set
	writeFn  func(fd uintptr) bool
	// sendFn is sendmmsg; tests replace it to inject errors.
	sendFn func(fd uintptr, msgs []mmsghdr) (int, unix.Errno)
	_      cpu.CacheLinePad
}

// newTxQueue wires batch messages to their iovecs and the peer address
// once, so sending allocates nothing.
func newTxQueue(c Config, batch int, rc syscall.RawConn, f *os.File, peer sockaddr, s *Stats, ul Underlay, route int) *txQueue {
	q := &txQueue{
		rc: rc, f: f, stats: s, enc: NewEncoder(c), peer: peer,
		maxPkt: maxPayload(c), hl: c.HeaderLen(),
		fitPkt: min(ul.MTU-c.outerHeaders(), maxPayload(c)), dropAbove: c.Oversize == OversizeDrop,
		msgs: make([]mmsghdr, batch), iovs: make([]unix.Iovec, batch),
		first: make([]int, batch), segs: make([]int, batch), fbytes: make([]int, batch),
		ctls: make([][gsoCtlSpace]byte, batch),
	}
	for i := range q.msgs {
		h := &q.msgs[i].Hdr
		h.Name = q.peer.ptr()
		h.Namelen = q.peer.len
	}
	_ = rc.Control(func(fd uintptr) { q.gsoMax = probeGSO(c, int(fd), gsoMTU(ul, route)) })
	q.writeFn = q.send
	q.sendFn = sendmmsg
	return q
}

// maxPayload is the largest payload one datagram of c's socket carries.
func maxPayload(c Config) int {
	switch {
	case c.Encap == EncapUDP && !c.IPv6:
		return 65535 - 20 - 8
	case c.Encap == EncapUDP:
		return 65535 - 8
	case !c.IPv6:
		return 65535 - 20
	}
	return 65535
}

// send is the netpoller callback: sendmmsg from msgs[pos] until all are
// sent. A message the kernel refuses (any error but EAGAIN/ENOBUFS) is
// dropped and counted; on EAGAIN/ENOBUFS it parks (false) if a deadline
// bounds the wait, else returns so WriteFrames can arm one.
func (q *txQueue) send(fd uintptr) bool {
	for q.pos < q.end {
		n, errno := q.sendFn(fd, q.msgs[q.pos:q.end])
		switch errno {
		case 0:
			if n == 0 { // cannot happen with messages to send; never spin
				q.sendErrs += uint64(q.segs[q.pos])
				q.pos++
				continue
			}
			if q.stalled {
				q.stallNs += time.Since(q.stallAt)
				q.stalled = false
			}
			for i := q.pos; i < q.pos+n; i++ {
				q.sent += q.segs[i]
				q.sentB += q.fbytes[i]
			}
			q.pos += n
		case unix.EINTR, unix.ECONNREFUSED:
			// ECONNREFUSED: an ICMP error an earlier datagram earned (on a
			// connected socket), consumed by this call; this one was not
			// sent: resend it.
		case unix.EAGAIN, unix.ENOBUFS:
			if !q.stalled {
				q.stalled, q.stallAt = true, time.Now()
				q.stalls++
			}
			q.noBufs = errno == unix.ENOBUFS
			return !q.armed // park only with a deadline armed
		default:
			if q.segs[q.pos] > 1 {
				// The route refused the run (its MTU shrank, or it cannot
				// segment): from here on every packet goes alone.
				q.gsoMax = 0
				from := q.first[q.pos]
				q.pos, q.end = 0, q.plan(from)
				continue
			}
			q.sendErrs++
			q.pos++
		}
	}
	return true
}

// WriteFrames encapsulates bufs[i][offset:offset+sizes[i]] in place (the
// header is written at bufs[i][offset-Headroom():offset]) and sends them
// all, in order, with sendmmsg. While the socket is full it blocks on the
// netpoller (the caller stops reading the VM meanwhile) and resumes from the
// first unsent frame; it returns only when every frame is sent or dropped
// and counted (oversize: too big for one datagram, or above the underlay
// MTU with oversize=drop; send_error: refused by the kernel), or with
// net.ErrClosed after Close. A frame above the underlay MTU is counted
// (AboveMTU) whatever the policy. Nothing is sent if offset is below
// Headroom or a size does not fit its buffer. Only one goroutine may call
// it.
func (t *Tunnel) WriteFrames(bufs [][]byte, sizes []int, offset int) error {
	if t.closed.Load() {
		return net.ErrClosed
	}
	q := t.tx
	if err := checkFrames(bufs, sizes, offset, q.hl); err != nil {
		return err
	}
	q.sent, q.sentB, q.sendErrs, q.stalls, q.stallNs = 0, 0, 0, 0, 0
	var oversize, above uint64
	var err error
	for i := 0; i < len(bufs) && err == nil; {
		np := 0
		for ; i < len(bufs) && np < len(q.iovs); i++ {
			if pl := q.hl + sizes[i]; pl > q.fitPkt { // rare: above the underlay MTU
				above++
				if q.dropAbove || pl > q.maxPkt {
					oversize++
					continue
				}
			}
			pkt := q.enc.Encap(bufs[i], offset, sizes[i])
			q.iovs[np].Base = &pkt[0]
			q.iovs[np].SetLen(len(pkt))
			np++
		}
		err = t.flush(np)
	}
	if oversize != 0 {
		q.stats.txDrops[DropOversize].Add(oversize)
	}
	if above != 0 {
		q.stats.txAbove.Add(above)
	}
	if q.sendErrs != 0 {
		q.stats.txDrops[DropSendError].Add(q.sendErrs)
	}
	if q.sent != 0 {
		q.stats.addTx(uint64(q.sent), uint64(q.sentB))
	}
	if q.stalls != 0 {
		q.stats.addStalls(q.stalls, q.stallNs)
	}
	return err
}

// checkFrames refuses a batch the caller built wrongly, before anything is
// encapsulated or sent.
func checkFrames(bufs [][]byte, sizes []int, offset, hl int) error {
	if offset < hl {
		return fmt.Errorf("l2tpv3: WriteFrames: offset %d is less than headroom %d", offset, hl)
	}
	if len(sizes) < len(bufs) {
		return fmt.Errorf("l2tpv3: WriteFrames: %d sizes for %d buffers", len(sizes), len(bufs))
	}
	for i, b := range bufs {
		if sizes[i] < 0 || offset+sizes[i] > len(b) {
			return fmt.Errorf("l2tpv3: WriteFrames: frame %d: size %d at offset %d exceeds buffer of %d",
				i, sizes[i], offset, len(b))
		}
	}
	return nil
}

// plan groups the packets iovs[from:np] into messages from msgs[0] on, GSO
// runs where allowed, and returns how many messages it made.
func (q *txQueue) plan(from int) int {
	m := 0
	for i := from; i < q.np; m++ {
		k := gsoRun(q.iovs, i, q.np, q.gsoMax, q.maxPkt)
		h := &q.msgs[m].Hdr
		h.Iov = &q.iovs[i]
		h.SetIovlen(k)
		var seg uint64
		if k > 1 {
			seg = q.iovs[i].Len
		}
		setGSO(h, &q.ctls[m], seg)
		fb := 0
		for _, v := range q.iovs[i : i+k] {
			fb += int(v.Len) - q.hl
		}
		q.first[m], q.segs[m], q.fbytes[m] = i, k, fb
		i += k
	}
	return m
}

// flush sends the np packets in iovs, waiting out stalls on the netpoller
// with a bounded deadline, and counts the stall time.
func (t *Tunnel) flush(np int) error {
	q := t.tx
	q.np = np
	q.pos, q.end = 0, q.plan(0)
	var err error
	for q.pos < q.end {
		err = q.rc.Write(q.writeFn)
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			if t.closed.Load() {
				err = net.ErrClosed
			} else {
				err = fmt.Errorf("l2tpv3: sendmmsg %s: %w", t.peer, err)
			}
			break
		}
		err = nil
		if q.pos < q.end {
			// Stalled: wait for writability, with a bound.
			wait := stallPollAgain
			if q.noBufs {
				wait = stallPollNoBufs
			}
			if derr := q.f.SetWriteDeadline(time.Now().Add(wait)); derr != nil {
				err = net.ErrClosed
				if !t.closed.Load() {
					err = fmt.Errorf("l2tpv3: sendmmsg %s: %w", t.peer, derr)
				}
				break
			}
			q.armed = true
		}
	}
	if q.armed {
		_ = q.f.SetWriteDeadline(time.Time{})
		q.armed = false
	}
	if q.stalled { // ended by Close
		q.stallNs += time.Since(q.stallAt)
		q.stalled = false
	}
	for i := range np {
		q.iovs[i].Base = nil // do not keep the caller's buffers reachable
	}
	return err
}
