package l2tp

import (
	"encoding/binary"
	"unsafe"

	"golang.org/x/sys/unix"
)

// UDP generic segmentation offload (UDP_SEGMENT, Linux 4.18+): a run of
// equal-size datagrams to the same peer leaves as one message whose payload
// the kernel (or the NIC) cuts into gso_size pieces, each with its own UDP
// and IP header. The stack is walked once per run instead of once per
// packet. Each piece is a whole L2TPv3 packet (header and frame), so the
// peer sees exactly the datagrams it would see without GSO.
const (
	// gsoMaxSegments is the kernel's UDP_MAX_SEGMENTS on the oldest kernels
	// that have UDP_SEGMENT (later ones allow 128).
	gsoMaxSegments = 64
	// gsoCtlSpace is room for a cmsg with the u16 segment size.
	gsoCtlSpace = 24 // unix.CmsgSpace(2)
	// tosCtlSpace is room for a cmsg with an int TOS / traffic class.
	tosCtlSpace = 24 // unix.CmsgSpace(4)
	// txCtlSpace is one message's control buffer: segment size and TOS.
	txCtlSpace = gsoCtlSpace + tosCtlSpace
)

// probeGSO returns the largest datagram payload that may be a GSO segment
// on c's socket, or 0 when GSO is not to be used: not UDP, the kernel
// refuses UDP_SEGMENT, or the route's MTU is unknown (mtu 0). mtu is
// gsoMTU: a segment must fit the route's MTU with its IP and UDP
// headers (the kernel answers EINVAL otherwise) and is never to be
// fragmented, so larger packets go out one by one.
func probeGSO(c Config, fd int, mtu int) int {
	if c.Encap != EncapUDP {
		return 0
	}
	if _, err := unix.GetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_SEGMENT); err != nil {
		return 0
	}
	hdrs := c.outerHeaders()
	if mtu <= hdrs {
		return 0
	}
	return mtu - hdrs
}

// probeGSOToward is probeGSO, and 0 as well when the device toward peer
// has a qdisc that cuts GSO messages (see cutsGSO).
func probeGSOToward(c Config, fd, mtu int, peer sockaddr) int {
	seg := probeGSO(c, fd, mtu)
	if seg > 0 && cutsGSO(peer) {
		return 0
	}
	return seg
}

// routeMTU asks the kernel the MTU of the route to peer through a
// throw-away connected UDP socket (the tunnel's own socket is not
// connected); 0 if it cannot tell.
func routeMTU(peer sockaddr) int {
	family, level, opt := unix.AF_INET, unix.IPPROTO_IP, unix.IP_MTU
	var sa unix.Sockaddr
	ip := peer.ap.Addr()
	if ip.Is4() {
		sa = &unix.SockaddrInet4{Port: int(peer.ap.Port()), Addr: ip.As4()}
	} else {
		family, level, opt = unix.AF_INET6, unix.IPPROTO_IPV6, unix.IPV6_MTU
		sa = &unix.SockaddrInet6{Port: int(peer.ap.Port()), Addr: ip.As16(), ZoneId: peer.raw.Scope_id}
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0
	}
	defer unix.Close(fd)
	if unix.Connect(fd, sa) != nil {
		return 0
	}
	mtu, err := unix.GetsockoptInt(fd, level, opt)
	if err != nil {
		return 0
	}
	return mtu
}

// gsoRun returns how many packets, starting at iovs[i] and ending before
// iovs[n], go out as one GSO message: equal sizes, at most one shorter last
// packet, at most gsoMaxSegments, at most maxPkt bytes in all. 1 means send
// it alone.
func gsoRun(iovs []unix.Iovec, i, n, gsoMax, maxPkt int) int {
	size := iovs[i].Len
	if gsoMax == 0 || int(size) > gsoMax {
		return 1
	}
	total, k := int(size), 1
	for i+k < n && k < gsoMaxSegments {
		l := iovs[i+k].Len
		if l > size || total+int(l) > maxPkt {
			break
		}
		total += int(l)
		k++
		if l < size { // a shorter packet may only end a run
			break
		}
	}
	return k
}

// setGSO makes h a GSO message of segments of size bytes, its control
// message written into ctl; size 0 makes it a plain message.
func setGSO(h *unix.Msghdr, ctl *[txCtlSpace]byte, size uint64) {
	if size == 0 {
		h.Control, h.Controllen = nil, 0
		return
	}
	c := (*unix.Cmsghdr)(unsafe.Pointer(&ctl[0]))
	c.Level, c.Type = unix.SOL_UDP, unix.UDP_SEGMENT
	c.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(ctl[unix.SizeofCmsghdr:], uint16(size))
	h.Control = &ctl[0]
	h.SetControllen(unix.CmsgSpace(2))
}

// addTOS appends to h's control messages (in ctl, after any UDP_SEGMENT)
// the outer TOS (IP_TOS) or traffic class (IPV6_TCLASS) for this message
// alone, as an int, which both take.
func addTOS(h *unix.Msghdr, ctl *[txCtlSpace]byte, tos uint8, v6 bool) {
	at := int(h.Controllen)
	c := (*unix.Cmsghdr)(unsafe.Pointer(&ctl[at]))
	c.Level, c.Type = unix.IPPROTO_IP, unix.IP_TOS
	if v6 {
		c.Level, c.Type = unix.IPPROTO_IPV6, unix.IPV6_TCLASS
	}
	c.SetLen(unix.CmsgLen(4))
	binary.NativeEndian.PutUint32(ctl[at+unix.SizeofCmsghdr:], uint32(tos))
	h.Control = &ctl[0]
	h.SetControllen(at + unix.CmsgSpace(4))
}

// sameMarkRun shortens a run of k packets from marks[i] to those with
// marks[i]'s TOS: one message carries one outer TOS.
func sameMarkRun(marks []uint8, i, k int) int {
	for j := 1; j < k; j++ {
		if marks[i+j] != marks[i] {
			return j
		}
	}
	return k
}

// innerTOS is the TOS / traffic class byte of the IPv4 or IPv6 packet in
// an Ethernet frame (behind at most one 802.1Q or 802.1ad tag); 0 for any
// other frame or one too short to tell.
func innerTOS(frame []byte) uint8 {
	l3 := ethHeaderLen
	if len(frame) < l3+2 {
		return 0
	}
	etype := binary.BigEndian.Uint16(frame[12:])
	if etype == 0x8100 || etype == 0x88a8 {
		l3 += 4
		if len(frame) < l3+2 {
			return 0
		}
		etype = binary.BigEndian.Uint16(frame[16:])
	}
	switch {
	case etype == 0x0800 && frame[l3]>>4 == 4:
		return frame[l3+1]
	case etype == 0x86dd && frame[l3]>>4 == 6:
		return frame[l3]<<4 | frame[l3+1]>>4
	}
	return 0
}
