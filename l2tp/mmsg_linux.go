package l2tp

import (
	"encoding/binary"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mmsghdr is struct mmsghdr, which golang.org/x/sys/unix does not define:
// one message of a recvmmsg/sendmmsg vector and the bytes it moved.
type mmsghdr struct {
	Hdr unix.Msghdr
	Len uint32
	_   [4]byte
}

// recvmmsg receives up to len(msgs) datagrams without blocking; it returns
// how many arrived, or the errno (EAGAIN when none is waiting).
func recvmmsg(fd uintptr, msgs []mmsghdr) (int, unix.Errno) {
	n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd,
		uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), unix.MSG_DONTWAIT, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), 0
}

// sendmmsg sends msgs in order without blocking; it returns how many the
// kernel took, or the errno of the first message when it took none.
func sendmmsg(fd uintptr, msgs []mmsghdr) (int, unix.Errno) {
	n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, fd,
		uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), unix.MSG_DONTWAIT, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), 0
}

// ctlSpace is the control buffer per received message: room for the
// SO_RXQ_OVFL counter and the UDP_GRO segment size, with margin.
const ctlSpace = 64

// rxControl reads a received control buffer without allocating
// (unix.ParseSocketControlMessage allocates): the SO_RXQ_OVFL drop counter
// if present, and the UDP_GRO segment size of a coalesced datagram (0 when
// the message is one datagram).
func rxControl(ctl []byte) (ovfl uint32, hasOvfl bool, seg int) {
	const hdr = unix.SizeofCmsghdr
	for len(ctl) >= hdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&ctl[0]))
		l := int(h.Len)
		if l < hdr || l > len(ctl) {
			return
		}
		switch {
		case h.Level == unix.SOL_SOCKET && h.Type == unix.SO_RXQ_OVFL && l >= hdr+4:
			ovfl, hasOvfl = binary.NativeEndian.Uint32(ctl[hdr:]), true
		case h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO && l >= hdr+2:
			if l >= hdr+4 {
				seg = int(binary.NativeEndian.Uint32(ctl[hdr:]))
			} else {
				seg = int(binary.NativeEndian.Uint16(ctl[hdr:]))
			}
		}
		next := unix.CmsgSpace(l - hdr)
		if next >= len(ctl) {
			return
		}
		ctl = ctl[next:]
	}
	return
}
