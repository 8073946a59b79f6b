package l2tp

import (
	"fmt"
	"math"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// sessionFilter is the socket filter of an IP-encapsulation port: it passes
// only packets whose session ID is session and drops the rest in the kernel
// (too short to hold one included). A raw socket gets every protocol-115
// packet for its address, so without it every port on an address would
// receive, count and log the others' traffic. The IPv4 raw socket sees the
// IP header first (IHL words, options included); the IPv6 one does not.
func sessionFilter(session uint32, ipv6 bool) []bpf.Instruction {
	load := []bpf.Instruction{
		bpf.LoadMemShift{Off: 0},          // X = 4 * (IHL of the IPv4 header)
		bpf.LoadIndirect{Off: 0, Size: 4}, // A = the 32 bits after it
	}
	if ipv6 {
		load = []bpf.Instruction{bpf.LoadAbsolute{Off: 0, Size: 4}}
	}
	return append(load,
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: session, SkipFalse: 1},
		bpf.RetConstant{Val: math.MaxUint32}, // the whole packet
		bpf.RetConstant{Val: 0},              // dropped
	)
}

// attachSessionFilter attaches sessionFilter to an IP-encapsulation socket
// before it is bound, then discards what the unfiltered socket may already
// have queued (any protocol-115 packet of the host), so that from the bind
// on the port sees only its own session.
func attachSessionFilter(fd int, c Config) error {
	if err := attachFilter(fd, sessionFilter(c.SessionID, c.IPv6), []uint32{c.SessionID}); err != nil {
		return err
	}
	// Bounded: packets of our own session keep passing the filter, and a
	// 4 MiB receive buffer holds at most a few thousand small packets.
	var b [1]byte
	for range maxQueuedBeforeFilter {
		if _, _, err := unix.Recvfrom(fd, b[:], unix.MSG_DONTWAIT|unix.MSG_TRUNC); err != nil {
			break
		}
	}
	return nil
}

// maxQueuedBeforeFilter bounds the packets discarded after the filter is
// attached: more than the receive buffer (sockBufSize) can queue.
const maxQueuedBeforeFilter = 1 << 14

// attachFilter attaches (or replaces) the socket filter prog, which passes
// the sessions ids.
func attachFilter(fd int, prog []bpf.Instruction, ids []uint32) error {
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return fmt.Errorf("l2tpv3: session filter: %w", err)
	}
	fp := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		fp[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	fprog := unix.SockFprog{Len: uint16(len(fp)), Filter: unsafe.SliceData(fp)}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fprog); err != nil {
		return fmt.Errorf("l2tpv3: setsockopt SO_ATTACH_FILTER (sessions %v): %w", ids, err)
	}
	return nil
}
