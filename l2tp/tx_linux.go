package l2tp

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/cpu"
	"golang.org/x/sys/unix"
)

// stallPollAgain bounds one wait for writability after EAGAIN: our own
// packets in flight free send-buffer space and wake us; the bound is only a
// safety net.
const stallPollAgain = 50 * time.Millisecond

// After ENOBUFS (the host's egress queue is full) the datagram is freed at
// once, so the socket stays writable and waiting for writability would
// spin: the sender sleeps instead, from noBufsWaitMin, doubling while no
// datagram gets through, up to noBufsWaitMax.
const (
	noBufsWaitMin = 50 * time.Microsecond
	noBufsWaitMax = time.Millisecond
	noBufsChunk   = 8 // messages a wake-up should move before the sleep stops growing
)

// After the kernel refuses a GSO message, GSO stays off for gsoBackoffMin,
// doubling (up to gsoBackoffMax) while the probe or the next GSO message
// fails again.
const (
	gsoBackoffMin = 250 * time.Millisecond
	gsoBackoffMax = 2 * time.Second
)

// errQueueDrainEvery is how often a sending tunnel reads its error queue
// even when no send failed (ICMP errors arrive on their own).
const errQueueDrainEvery = 100 * time.Millisecond

// txQueue is one send queue of a tunnel: the encoder, a descriptor of the
// socket and a sendmmsg vector whose messages all carry the peer's address.
// The tunnel sends through its first queue; NewSender makes more (Sender).
// Only the goroutine calling its WriteFrames touches it.
type txQueue struct {
	rc       syscall.RawConn
	f        *os.File     // for the stall deadline
	closed   *atomic.Bool // the tunnel's: set before its descriptors close
	peerName string       // the peer, for errors
	// order is the tunnel's lock under seq=send|both: queues take turns so
	// that sequence numbers leave in order (a Linux peer drops the others).
	order  *sync.Mutex
	stats  *Stats
	enc    *Encoder
	peer   sockaddr
	box    *peerBox // the tunnel's current peer; follow copies a move into peer
	gen    uint64   // box.gen when peer was copied
	maxPkt int      // largest datagram payload for this socket
	fitPkt int      // largest datagram payload within the underlay MTU (<= maxPkt)
	// dropAbove drops packets above fitPkt (oversize=drop).
	dropAbove bool

	msgs []mmsghdr
	iovs []unix.Iovec // one per packet; a message takes one or a GSO run

	gsoMax int                // largest GSO segment; 0: one message per packet
	np     int                // packets in iovs for the current flush
	first  []int              // msgs[m]'s first packet in iovs
	segs   []int              // packets in msgs[m]
	fbytes []int              // frame bytes in msgs[m]
	ctls   [][txCtlSpace]byte // msgs[m]'s UDP_SEGMENT and IP_TOS control messages
	// inherit (tos=inherit) sends each packet with its frame's TOS, marks[p]
	// for iovs[p], in an IP_TOS / IPV6_TCLASS control message.
	inherit bool
	v6      bool
	marks   []uint8

	// GSO after a refusal: off until gsoRetry, then probed again.
	gsoOff     bool
	gsoRetry   time.Time
	gsoBackoff time.Duration
	gsoProbeFn func(fd uintptr) // sets gsoMax from a fresh probe

	pos, end int // messages msgs[pos:end] are still to be sent
	hl       int
	sent     int    // messages sent by this WriteFrames call
	sentB    int    // their frame bytes
	sendErrs uint64 // messages dropped on a send error in this call
	stalls   uint64 // stalls begun in this call
	noBufsN  uint64 // ENOBUFS refusals in this call
	gsoFalls uint64 // GSO fallbacks in this call
	gsoPkts  uint64 // packets sent in GSO messages in this call
	stallNs  time.Duration
	stalled  bool      // EAGAIN/ENOBUFS seen, no progress since
	stallAt  time.Time // when the current stall began
	noBufs   bool      // the last stall errno was ENOBUFS
	armed    bool      // a write deadline is set

	noBufsWait time.Duration // the next sleep after ENOBUFS
	sinceSleep int           // messages sent since the last sleep
	sawNoBufs  bool          // ENOBUFS in the current flush
	retried    int           // msgs index+1 of the message resent after one refusal
	hardErr    unix.Errno    // an errno that refused a message twice in this flush

	errq    *errQueue
	drainAt time.Time // next periodic read of the error queue
	drainFn func(fd uintptr)

	writeFn func(fd uintptr) bool
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
		ctls:    make([][txCtlSpace]byte, batch),
		inherit: c.TOSInherit, v6: c.IPv6, marks: make([]uint8, batch),
		gsoBackoff: gsoBackoffMin, noBufsWait: noBufsWaitMin, errq: newErrQueue(s),
	}
	for i := range q.msgs {
		h := &q.msgs[i].Hdr
		h.Name = q.peer.ptr()
		h.Namelen = q.peer.len
	}
	_ = rc.Control(func(fd uintptr) {
		q.gsoMax = probeGSOToward(c, int(fd), gsoMTU(ul, route), peer)
		if q.gsoMax == 0 && probeGSO(c, int(fd), gsoMTU(ul, route)) > 0 {
			// A qdisc toward the peer cuts GSO messages: ask again now
			// and then, in case it goes.
			q.gsoOff, q.gsoBackoff = true, gsoBackoffMax
			q.gsoRetry = time.Now().Add(gsoBackoffMax)
		}
	})
	q.gsoProbeFn = func(fd uintptr) {
		route := routeMTU(peer)
		if !c.IPv6 {
			route = min(route, MaxUnderlayMTU)
		}
		q.gsoMax = probeGSOToward(c, int(fd), gsoMTU(ul, route), peer)
	}
	q.drainFn = q.errq.drain
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
// sent. A refused message is resent once, then dropped and counted (a GSO
// message is sent one by one instead; see refused). On EAGAIN it parks
// (false) if a deadline bounds the wait, else returns so flush can arm
// one; on ENOBUFS it returns so flush can sleep.
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
			q.delivered(n)
		case unix.EINTR:
		case unix.EAGAIN, unix.ENOBUFS:
			if !q.stalled {
				q.stalled, q.stallAt = true, time.Now()
				q.stalls++
			}
			q.noBufs = errno == unix.ENOBUFS
			if q.noBufs {
				q.noBufsN++
				q.sawNoBufs = true
				q.holdGSO()
				return true // flush sleeps: the socket is writable already
			}
			return !q.armed // park only with a deadline armed
		default:
			q.refused(fd, errno)
		}
	}
	return true
}

// delivered accounts for the n messages from msgs[pos] the kernel took.
func (q *txQueue) delivered(n int) {
	if q.stalled {
		q.stallNs += time.Since(q.stallAt)
		q.stalled = false
	}
	for i := q.pos; i < q.pos+n; i++ {
		q.sent += q.segs[i]
		q.sentB += q.fbytes[i]
		if q.segs[i] > 1 {
			q.gsoPkts += uint64(q.segs[i])
			q.gsoBackoff = gsoBackoffMin // GSO works (again)
		}
	}
	q.pos += n
	q.sinceSleep += n
	q.retried = 0
}

// refused handles msgs[pos], which the kernel refused with errno. The error
// queue is drained first (it also clears a pending one-shot socket error).
// A first refusal is resent: it may have been the one-shot error an ICMP
// message left (ECONNREFUSED, EHOSTUNREACH…), which fails whichever send
// comes next. A second one (or the errno that already refused a message
// twice in this flush) is the message's own: a single packet is dropped and
// counted; a GSO message falls back to one by one for the rest of the batch.
func (q *txQueue) refused(fd uintptr, errno unix.Errno) {
	q.errq.drain(fd)
	if q.retried != q.pos+1 && errno != q.hardErr {
		q.retried = q.pos + 1
		return
	}
	q.hardErr, q.retried = errno, 0
	if q.segs[q.pos] > 1 {
		q.fallBack()
		q.pos, q.end = 0, q.plan(q.first[q.pos])
		return
	}
	q.sendErrs++
	q.pos++
}

// fallBack turns GSO off after the kernel refused a GSO message (a route
// flap, a firewall reload, a path MTU that shrank): it is counted, and GSO
// is probed again, the route's MTU included, after a back-off that doubles
// while GSO keeps failing.
func (q *txQueue) fallBack() {
	q.gsoFalls++
	q.gsoMax = 0
	q.gsoOff = true
	q.gsoRetry = time.Now().Add(q.gsoBackoff)
	q.gsoBackoff = min(2*q.gsoBackoff, gsoBackoffMax)
}

// holdGSO keeps GSO off while the host's egress queue is full (ENOBUFS),
// and for gsoBackoffMin after: a queue that cuts a GSO message into its
// datagrams (tbf does, for messages above its max size) drops the ones
// that do not fit and reports the message as sent, so with GSO a full queue
// would lose frames without a trace. The unsent rest of the batch is
// planned again one by one.
func (q *txQueue) holdGSO() {
	switch {
	case q.gsoMax > 0:
		q.gsoMax, q.gsoOff = 0, true
		q.pos, q.end = 0, q.plan(q.first[q.pos])
	case !q.gsoOff:
		return // no GSO on this socket
	}
	if at := time.Now().Add(gsoBackoffMin); at.After(q.gsoRetry) {
		q.gsoRetry = at // a longer back-off after a refusal stays
	}
}

// reprobeGSO probes GSO again once the back-off has passed; if the probe
// finds none (no route yet), it waits another, longer back-off.
func (q *txQueue) reprobeGSO(now time.Time) {
	if !q.gsoOff || now.Before(q.gsoRetry) {
		return
	}
	_ = q.rc.Control(q.gsoProbeFn)
	if q.gsoMax > 0 {
		q.gsoOff = false
		return
	}
	q.gsoRetry = now.Add(q.gsoBackoff)
	q.gsoBackoff = min(2*q.gsoBackoff, gsoBackoffMax)
}

// backOff sleeps after ENOBUFS. The sleep doubles while fewer than
// noBufsChunk messages got through since the last one, so a saturated
// queue is refilled in chunks rather than a datagram per wake-up.
func (q *txQueue) backOff() {
	if q.sinceSleep < noBufsChunk {
		q.noBufsWait = min(2*q.noBufsWait, noBufsWaitMax)
	}
	q.sinceSleep = 0
	ts := unix.NsecToTimespec(int64(q.noBufsWait))
	_ = unix.Nanosleep(&ts, nil) // this goroutine holds the VM back meanwhile
}

// WriteFrames encapsulates bufs[i][offset:offset+sizes[i]] in place (the
// header is written at bufs[i][offset-Headroom():offset]) and sends them
// all, in order, with sendmmsg. While the socket is full (EAGAIN) it blocks
// on the netpoller, while the host's egress queue is (ENOBUFS) it sleeps;
// either way the caller stops reading the VM meanwhile, and it resumes from
// the first unsent frame. It returns only when every frame is sent or
// dropped and counted (oversize: too big for one datagram, or above the
// underlay MTU with oversize=drop; send_error: refused by the kernel twice
// in a row), or with
// net.ErrClosed after Close. A frame above the underlay MTU is counted
// (AboveMTU) whatever the policy. Nothing is sent if offset is below
// Headroom or a size does not fit its buffer. Only one goroutine may call
// it.
func (t *Tunnel) WriteFrames(bufs [][]byte, sizes []int, offset int) error {
	return t.tx.WriteFrames(bufs, sizes, offset)
}

// WriteFrames is Tunnel.WriteFrames on this queue (see there); under
// seq=send|both it takes turns with the tunnel's other queues.
func (q *txQueue) WriteFrames(bufs [][]byte, sizes []int, offset int) error {
	if q.closed.Load() {
		return net.ErrClosed
	}
	if q.order != nil {
		q.order.Lock()
		defer q.order.Unlock()
	}
	if err := checkFrames(bufs, sizes, offset, q.hl); err != nil {
		return err
	}
	q.follow()
	q.sent, q.sentB, q.sendErrs, q.stalls, q.stallNs = 0, 0, 0, 0, 0
	q.noBufsN, q.gsoFalls, q.gsoPkts = 0, 0, 0
	q.housekeeping()
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
			if q.inherit {
				q.marks[np] = innerTOS(bufs[i][offset : offset+sizes[i]])
			}
			pkt := q.enc.Encap(bufs[i], offset, sizes[i])
			q.iovs[np].Base = &pkt[0]
			q.iovs[np].SetLen(len(pkt))
			np++
		}
		err = q.flush(np)
	}
	if oversize != 0 {
		q.stats.txDrops[DropOversize].Add(oversize)
	}
	if above != 0 {
		q.stats.txAbove.Add(above)
	}
	if q.sendErrs != 0 {
		q.stats.txDrops[DropSendError].Add(q.sendErrs)
		q.box.askResolve() // a host name in dst may point elsewhere now
	}
	if q.sent != 0 {
		q.stats.addTx(uint64(q.sent), uint64(q.sentB))
	}
	if q.stalls != 0 {
		q.stats.addStalls(q.stalls, q.stallNs)
	}
	if q.noBufsN != 0 {
		q.stats.txNoBufs.Add(q.noBufsN)
	}
	if q.gsoFalls != 0 {
		q.stats.gsoFalls.Add(q.gsoFalls)
	}
	if q.gsoPkts != 0 {
		q.stats.gsoPkts.Add(q.gsoPkts)
	}
	return err
}

// housekeeping runs before a batch is sent: it reads the error queue every
// errQueueDrainEvery (ICMP errors queue there whether a send fails or
// not, charged to the receive buffer) and probes GSO again when its
// back-off is over.
func (q *txQueue) housekeeping() {
	now := time.Now()
	if now.After(q.drainAt) {
		q.drainAt = now.Add(errQueueDrainEvery)
		_ = q.rc.Control(q.drainFn)
	}
	q.reprobeGSO(now)
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
		if q.inherit {
			k = sameMarkRun(q.marks, i, k)
		}
		h := &q.msgs[m].Hdr
		h.Iov = &q.iovs[i]
		h.SetIovlen(k)
		var seg uint64
		if k > 1 {
			seg = q.iovs[i].Len
		}
		setGSO(h, &q.ctls[m], seg)
		if q.inherit {
			addTOS(h, &q.ctls[m], q.marks[i], q.v6)
		}
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
func (q *txQueue) flush(np int) error {
	q.np = np
	q.pos, q.end = 0, q.plan(0)
	q.retried, q.hardErr, q.sawNoBufs = 0, 0, false
	var err error
	for q.pos < q.end {
		err = q.rc.Write(q.writeFn)
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			if q.closed.Load() {
				err = net.ErrClosed
			} else {
				err = fmt.Errorf("l2tpv3: sendmmsg %s: %w", q.peerName, err)
			}
			break
		}
		err = nil
		if q.pos < q.end && q.noBufs {
			q.backOff()
			continue
		}
		if q.pos < q.end {
			// Stalled: wait for writability, with a bound.
			if derr := q.f.SetWriteDeadline(time.Now().Add(stallPollAgain)); derr != nil {
				err = net.ErrClosed
				if !q.closed.Load() {
					err = fmt.Errorf("l2tpv3: sendmmsg %s: %w", q.peerName, derr)
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
	if !q.sawNoBufs && q.noBufsWait > noBufsWaitMin {
		q.noBufsWait /= 2 // the queue had room for the whole batch
	}
	for i := range np {
		q.iovs[i].Base = nil // do not keep the caller's buffers reachable
	}
	return err
}
