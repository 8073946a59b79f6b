package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// udpRecvTimeout bounds how long a sink's recvmmsg blocks, so it notices stop.
const udpRecvTimeout = 100 * time.Millisecond

// udpSocket opens a blocking UDP socket bound to 127.0.0.1:local, connected
// to 127.0.0.1:remote unless remote is 0; rcvbuf > 0 forces SO_RCVBUF.
func udpSocket(local, remote, rcvbuf int) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("udp socket: %w", err)
	}
	loop := [4]byte{127, 0, 0, 1}
	tv := unix.NsecToTimeval(int64(udpRecvTimeout))
	steps := []func() error{
		func() error { return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv) },
		func() error { return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv) },
		func() error {
			if rcvbuf <= 0 {
				return nil
			}
			return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvbuf)
		},
		func() error { return unix.Bind(fd, &unix.SockaddrInet4{Port: local, Addr: loop}) },
		func() error {
			if remote == 0 {
				return nil
			}
			return unix.Connect(fd, &unix.SockaddrInet4{Port: remote, Addr: loop})
		},
	}
	for _, step := range steps {
		if err := step(); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("udp socket 127.0.0.1:%d: %w", local, err)
		}
	}
	return fd, nil
}

// retryable reports whether a send or receive error is transient: a
// timeout, an interrupt, a full queue, or an ICMP error left over from
// before the peer bound its port.
func retryable(err error) bool {
	return errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) ||
		errors.Is(err, unix.ENOBUFS) || errors.Is(err, unix.ECONNREFUSED)
}

// udpBlaster sends pre-built L2TPv3 packets with sendmmsg, unpaced or at a
// fixed rate; it is the network side of the decap scenario and both ends
// of the limit.
type udpBlaster struct {
	fd       int
	batch    *msgBatch
	size     int
	rate     float64
	sentN    atomic.Uint64
	stopping atomic.Bool
}

// newUDPBlaster sends session's frameSize-byte frames from port local to
// port remote, batchSize per system call, at rate packets/s (0: flat out).
func newUDPBlaster(local, remote int, session uint32, frameSize, batchSize int, rate float64) (*udpBlaster, error) {
	fd, err := udpSocket(local, remote, 0)
	if err != nil {
		return nil, err
	}
	b := &udpBlaster{fd: fd, batch: newMsgBatch(batchSize, l2tpHeaderLen+frameSize), size: frameSize, rate: rate}
	for i := range batchSize {
		buildL2TP(b.batch.bufs[i], session, frameSize, 0)
	}
	return b, nil
}

// run sends until stop.
func (b *udpBlaster) run() error {
	var p *pacer
	if b.rate > 0 {
		var err error
		if p, err = newPacer(b.rate, len(b.batch.hdrs)); err != nil {
			return err
		}
		defer p.close()
	}
	seq := b.sentN.Load()
	allowed := 0
	for !b.stopping.Load() {
		if p != nil && allowed == 0 {
			if allowed = p.wait(); allowed == 0 {
				continue
			}
		}
		n := len(b.batch.hdrs)
		if p != nil {
			n = min(n, allowed)
		}
		for i := range n {
			setSeq(b.batch.bufs[i][l2tpHeaderLen:], seq+uint64(i))
		}
		m, err := sendmmsg(b.fd, b.batch.hdrs[:n])
		if err != nil && !retryable(err) {
			return fmt.Errorf("sendmmsg: %w", err)
		}
		seq += uint64(m)
		allowed = max(allowed-m, 0)
		b.sentN.Store(seq)
	}
	return nil
}

// probe sends one packet carrying the next sequence number, before run.
func (b *udpBlaster) probe() error {
	seq := b.sentN.Load()
	setSeq(b.batch.bufs[0][l2tpHeaderLen:], seq)
	m, err := sendmmsg(b.fd, b.batch.hdrs[:1])
	if err != nil && !retryable(err) {
		return fmt.Errorf("sendmmsg: %w", err)
	}
	b.sentN.Store(seq + uint64(m))
	return nil
}

// stop asks run to return after its current batch.
func (b *udpBlaster) stop() { b.stopping.Store(true) }

// sent returns how many packets the kernel has accepted so far.
func (b *udpBlaster) sent() uint64 { return b.sentN.Load() }

// close releases the socket; call it after run has returned (or never ran).
func (b *udpBlaster) close() { unix.Close(b.fd) }

// sinkReport is what a sink saw besides its count of good frames.
type sinkReport struct {
	Bad     uint64 `json:"bad"`
	Late    uint64 `json:"late"`
	Skipped uint64 `json:"skipped"`
}

// udpSink receives L2TPv3 packets with recvmmsg, counting the good ones
// (right session, right frame size, one of our frames) and checking their
// sequence numbers.
type udpSink struct {
	fd       int
	session  uint32
	size     int
	batch    *msgBatch
	good     atomic.Uint64
	rep      sinkReport
	seq      seqCheck
	stopping atomic.Bool
	ctl      []byte // sinkCtl bytes per message when UDP_GRO is on
	anyFrame bool   // count any frame of the session and size, not only ours
}

// newUDPSink listens on port local with an rcvbuf-byte receive buffer.
func newUDPSink(local int, session uint32, frameSize, batchSize, rcvbuf int, gro bool) (*udpSink, error) {
	fd, err := udpSocket(local, 0, rcvbuf)
	if err != nil {
		return nil, err
	}
	// Take coalesced runs like a receiver behind a GRO-capable NIC would:
	// a GSO sender's run then arrives as one datagram (split in run).
	gro = gro && unix.SetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_GRO, 1) == nil
	s := &udpSink{fd: fd, session: session, size: frameSize, batch: newMsgBatch(batchSize, 65536)}
	if gro {
		s.ctl = make([]byte, batchSize*sinkCtl)
	}
	return s, nil
}

// sinkCtl is a sink message's control buffer: one UDP_GRO cmsg.
const sinkCtl = 32

// armControl points each message at its control buffer before a receive.
func (s *udpSink) armControl() {
	for i := range s.ctl {
		s.ctl[i] = 0
	}
	for i := range s.batch.hdrs {
		if s.ctl != nil {
			h := &s.batch.hdrs[i].hdr
			h.Control = &s.ctl[i*sinkCtl]
			h.SetControllen(sinkCtl)
		}
	}
}

// segment is received message i's GRO segment size: its length when it
// was not coalesced.
func (s *udpSink) segment(i int) int {
	seg := len(s.batch.received(i))
	if s.ctl != nil {
		if g := groSegment(s.ctl[i*sinkCtl : i*sinkCtl+int(s.batch.hdrs[i].hdr.Controllen)]); g > 0 {
			return g
		}
	}
	return seg
}

// groSegment reads the UDP_GRO segment size from one message's control data.
func groSegment(ctl []byte) int {
	const hdr = unix.SizeofCmsghdr
	if len(ctl) < hdr+2 {
		return 0
	}
	h := (*unix.Cmsghdr)(unsafe.Pointer(&ctl[0]))
	if h.Level != unix.SOL_UDP || h.Type != unix.UDP_GRO {
		return 0
	}
	if int(h.Len) >= hdr+4 {
		return int(binary.NativeEndian.Uint32(ctl[hdr:]))
	}
	return int(binary.NativeEndian.Uint16(ctl[hdr:]))
}

// run receives until stop.
func (s *udpSink) run() error {
	for !s.stopping.Load() {
		s.armControl()
		n, err := recvmmsg(s.fd, s.batch.hdrs)
		if err != nil {
			if retryable(err) {
				continue
			}
			return fmt.Errorf("recvmmsg: %w", err)
		}
		good := uint64(0)
		for i := range n {
			buf, seg := s.batch.received(i), max(s.segment(i), 1)
			for ; len(buf) > 0; buf = buf[min(seg, len(buf)):] {
				if s.check(buf[:min(seg, len(buf))]) {
					good++
				} else {
					s.rep.Bad++
				}
			}
		}
		s.good.Add(good)
	}
	return nil
}

// check takes one datagram: a frame of the session and size that is one
// of ours (its sequence number checked), or, with anyFrame, any frame of
// the session and size (a foreign generator's, without sequence numbers).
func (s *udpSink) check(p []byte) bool {
	frame, ok := parseL2TP(p, s.session)
	if !ok || len(frame) != s.size {
		return false
	}
	if s.anyFrame {
		return true
	}
	seq, isOurs := parseFrame(frame)
	if isOurs {
		s.seq.see(seq)
	}
	return isOurs
}

// stop asks run to return within udpRecvTimeout.
func (s *udpSink) stop() { s.stopping.Store(true) }

// delivered returns how many good frames arrived so far.
func (s *udpSink) delivered() uint64 { return s.good.Load() }

// close releases the socket; call it after run has returned (or never ran).
func (s *udpSink) close() { unix.Close(s.fd) }

// report returns the error counts; call it only after run has returned.
func (s *udpSink) report() sinkReport {
	r := s.rep
	r.Late, r.Skipped = s.seq.late, s.seq.skipped
	return r
}

// pacer hands out send credit at a fixed packet rate from a periodic
// timerfd: Go's own timers sleep about 1 ms here, far too coarse.
type pacer struct {
	fd      int
	perTick float64
	maxCred float64
	credit  float64
	buf     [8]byte
}

// pacerTick is the pacer's period: small enough that a tick's burst fits
// comfortably in a default 208 KiB socket receive buffer.
const pacerTick = 50 * time.Microsecond

// pacerCatchUp bounds the burst a pacer allows after a stall.
const pacerCatchUp = 250 * time.Microsecond

// newPacer paces rate packets/s. After a stall (the sender not scheduled)
// at most pacerCatchUp (and at least one batch) of missed credit is sent
// at once; the rest is forfeited, so the offered rate falls below rate
// rather than the sender bursting into the receiver's socket buffer.
func newPacer(rate float64, batch int) (*pacer, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("timerfd: %w", err)
	}
	ts := unix.NsecToTimespec(int64(pacerTick))
	if err := unix.TimerfdSettime(fd, 0, &unix.ItimerSpec{Interval: ts, Value: ts}, nil); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("timerfd: %w", err)
	}
	perTick := rate * pacerTick.Seconds()
	return &pacer{fd: fd, perTick: perTick, maxCred: max(rate*pacerCatchUp.Seconds(), float64(batch))}, nil
}

// wait blocks until the next tick and returns how many packets may go now.
func (p *pacer) wait() int {
	n, err := unix.Read(p.fd, p.buf[:])
	if err != nil || n != 8 {
		return 0
	}
	ticks := binary.NativeEndian.Uint64(p.buf[:])
	p.credit = min(p.credit+float64(ticks)*p.perTick, p.maxCred)
	whole := int(p.credit)
	p.credit -= float64(whole)
	return whole
}

// close releases the timerfd.
func (p *pacer) close() { unix.Close(p.fd) }

// procUDP returns, for the IPv4 UDP sockets bound to port, whether any
// exists and the sum of their receive-queue drop counters.
func procUDP(port int) (bound bool, drops uint64, err error) {
	f, err := os.Open("/proc/net/udp")
	if err != nil {
		return false, 0, err
	}
	defer f.Close()
	want := fmt.Sprintf(":%04X", port)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 13 || !strings.HasSuffix(fields[1], want) {
			continue
		}
		bound = true
		d, _ := strconv.ParseUint(fields[len(fields)-1], 10, 64)
		drops += d
	}
	return bound, drops, sc.Err()
}
