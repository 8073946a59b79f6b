package main

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// mmsghdr is struct mmsghdr from <sys/socket.h>: one message of a
// sendmmsg/recvmmsg batch and the byte count the kernel fills in. Go pads
// it to Msghdr's alignment, as C does.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
}

// msgBatch is a reusable batch of single-buffer messages for a connected
// or bound socket (no addresses, no control data).
type msgBatch struct {
	hdrs []mmsghdr
	iovs []unix.Iovec
	bufs [][]byte
}

// newMsgBatch allocates n messages, each with its own bufSize-byte buffer.
func newMsgBatch(n, bufSize int) *msgBatch {
	b := &msgBatch{
		hdrs: make([]mmsghdr, n),
		iovs: make([]unix.Iovec, n),
		bufs: make([][]byte, n),
	}
	mem := make([]byte, n*bufSize)
	for i := range n {
		b.bufs[i] = mem[i*bufSize : (i+1)*bufSize : (i+1)*bufSize]
		b.iovs[i].Base = &b.bufs[i][0]
		b.iovs[i].SetLen(bufSize)
		b.hdrs[i].hdr.Iov = &b.iovs[i]
		b.hdrs[i].hdr.SetIovlen(1)
	}
	return b
}

// setLen sets how many bytes of buffer i the next send carries (or the
// next receive may fill).
func (b *msgBatch) setLen(i, n int) {
	b.iovs[i].SetLen(n)
}

// received returns the bytes the last recvmmsg put in buffer i.
func (b *msgBatch) received(i int) []byte {
	return b.bufs[i][:b.hdrs[i].n]
}

// sendmmsg sends the given messages on fd in one system call and returns
// how many the kernel took.
func sendmmsg(fd int, hdrs []mmsghdr) (int, error) {
	if len(hdrs) == 0 {
		return 0, nil
	}
	n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd),
		uintptr(unsafe.Pointer(&hdrs[0])), uintptr(len(hdrs)), 0, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// recvmmsg receives up to len(hdrs) messages on fd in one system call
// (blocking until the first one, or the socket's SO_RCVTIMEO) and returns
// how many arrived; each hdrs[i].n holds its length.
func recvmmsg(fd int, hdrs []mmsghdr) (int, error) {
	if len(hdrs) == 0 {
		return 0, nil
	}
	n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(fd),
		uintptr(unsafe.Pointer(&hdrs[0])), uintptr(len(hdrs)), unix.MSG_WAITFORONE, 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}
