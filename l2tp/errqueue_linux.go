package l2tp

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The socket's error queue (IP_RECVERR / IPV6_RECVERR). With it on, a
// datagram the host's egress queue drops is refused with ENOBUFS instead
// of reported as sent; the price is that ICMP errors for the socket (and
// local ones such as EMSGSIZE) are queued on its error queue, charged to
// the receive buffer the peer's frames need, and that each also sets a
// one-shot socket error which the next send or receive returns.

const (
	// errQueueCtlSpace holds one IP(V6)_RECVERR message (a sock_extended_err
	// and the offender's address) with room to spare.
	errQueueCtlSpace = 128
	// errQueueMaxPerDrain bounds one drain, so a flood of errors cannot
	// keep the sender from its frames.
	errQueueMaxPerDrain = 256
)

// setRecvErr turns IP_RECVERR (IPV6_RECVERR) on for c's socket.
func setRecvErr(fd int, c Config) error {
	level, opt, name := unix.IPPROTO_IP, unix.IP_RECVERR, "IP_RECVERR"
	if c.IPv6 {
		level, opt, name = unix.IPPROTO_IPV6, unix.IPV6_RECVERR, "IPV6_RECVERR"
	}
	if err := unix.SetsockoptInt(fd, level, opt, 1); err != nil {
		return fmt.Errorf("l2tpv3: setsockopt %s: %w", name, err)
	}
	return nil
}

// errQueue reads a socket's error queue into preallocated buffers and
// counts what it finds by kind. Only one goroutine uses one errQueue.
type errQueue struct {
	hdr   unix.Msghdr
	iov   unix.Iovec
	data  [64]byte // the offending packet's start: read, not used
	ctl   [errQueueCtlSpace]byte
	stats *Stats
}

// newErrQueue wires the message header to its buffers once.
func newErrQueue(s *Stats) *errQueue {
	e := &errQueue{stats: s}
	e.iov.Base = &e.data[0]
	e.iov.SetLen(len(e.data))
	e.hdr.Iov = &e.iov
	e.hdr.SetIovlen(1)
	return e
}

// drain reads the error queue of fd until it is empty (or the bound is
// reached), counting each error by kind; it allocates nothing and logs
// nothing.
func (e *errQueue) drain(fd uintptr) {
	for range errQueueMaxPerDrain {
		e.hdr.Control = &e.ctl[0]
		e.hdr.SetControllen(len(e.ctl))
		e.hdr.Flags = 0
		_, _, errno := unix.Syscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&e.hdr)),
			unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return // EAGAIN: empty
		}
		if errno, ok := extendedErrno(e.ctl[:min(int(e.hdr.Controllen), len(e.ctl))]); ok {
			e.stats.netErrs[netErrorOf(errno)].Add(1)
		}
	}
}

// extendedErrno finds the IP_RECVERR or IPV6_RECVERR control message in
// ctl and returns its ee_errno (struct sock_extended_err starts with it).
func extendedErrno(ctl []byte) (unix.Errno, bool) {
	const hdr = unix.SizeofCmsghdr
	for len(ctl) >= hdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&ctl[0]))
		l := int(h.Len)
		if l < hdr || l > len(ctl) {
			return 0, false
		}
		isErr := (h.Level == unix.IPPROTO_IP && h.Type == unix.IP_RECVERR) ||
			(h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_RECVERR)
		if isErr && l >= hdr+int(unsafe.Sizeof(unix.SockExtendedErr{})) {
			return unix.Errno(binary.NativeEndian.Uint32(ctl[hdr:])), true
		}
		next := unix.CmsgSpace(l - hdr)
		if next >= len(ctl) {
			break
		}
		ctl = ctl[next:]
	}
	return 0, false
}

// netErrorOf sorts an errno from the error queue (or a one-shot socket
// error) into the kinds Stats counts.
func netErrorOf(errno unix.Errno) NetError {
	switch errno {
	case unix.EHOSTUNREACH, unix.ENETUNREACH, unix.EHOSTDOWN, unix.ENETDOWN, unix.ENONET:
		return NetErrUnreachable
	case unix.ECONNREFUSED, unix.ENOPROTOOPT:
		return NetErrRefused
	case unix.EACCES, unix.EPERM:
		return NetErrProhibited
	case unix.EMSGSIZE:
		return NetErrTooBig
	}
	return NetErrOther
}
