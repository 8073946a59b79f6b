package l2tp

import (
	"fmt"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sockBufSize is the SO_RCVBUF/SO_SNDBUF asked for: room for a few batches
// of full-size frames while the other side is slow.
const sockBufSize = 4 << 20

// endpoints are the resolved local and peer addresses of a tunnel.
type endpoints struct {
	local, peer sockaddr
}

// resolveEndpoints resolves Src and Dst (with their ports) for c.
func resolveEndpoints(c Config) (endpoints, error) {
	var ep endpoints
	src, err := resolve("src", c.Src, c.IPv6)
	if err != nil {
		return ep, err
	}
	dst, err := resolve("dst", c.Dst, c.IPv6)
	if err != nil {
		return ep, err
	}
	if ep.local, err = newSockaddr("src", netip.AddrPortFrom(src, c.SrcPort)); err != nil {
		return ep, err
	}
	if ep.peer, err = newSockaddr("dst", netip.AddrPortFrom(dst, c.DstPort)); err != nil {
		return ep, err
	}
	return ep, nil
}

// socketName describes the socket for error messages ("udp/ipv4").
func socketName(c Config) string {
	fam := "ipv4"
	if c.IPv6 {
		fam = "ipv6"
	}
	if c.Encap == EncapUDP {
		return "udp/" + fam
	}
	return "ip proto 115/" + fam
}

// openSocket creates the nonblocking, close-on-exec UDP or raw IP socket for
// c, bound to ep.local, with large buffers, SO_RXQ_OVFL, the UDP/IPv6
// zero-checksum acceptance, the oversize policy's path MTU discovery,
// IP(V6)_RECVERR (so that a datagram the host's queue drops is refused
// with ENOBUFS, not reported as sent) and, over IP, the session filter
// (sessionFilter).
// It returns the fd and the bound address.
func openSocket(c Config, ep *endpoints) (int, netip.AddrPort, error) {
	family, typ, proto := unix.AF_INET, unix.SOCK_DGRAM, 0
	if c.IPv6 {
		family = unix.AF_INET6
	}
	if c.Encap == EncapIP {
		typ, proto = unix.SOCK_RAW, unix.IPPROTO_L2TP
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		hint := ""
		if c.Encap == EncapIP && (err == unix.EPERM || err == unix.EACCES) {
			hint = " (IP encapsulation needs root or CAP_NET_RAW; or use udp=on)"
		}
		return -1, netip.AddrPort{}, fmt.Errorf("l2tpv3: socket %s: %w%s", socketName(c), err, hint)
	}
	local, err := setupSocket(fd, c, ep)
	if err != nil {
		unix.Close(fd)
		return -1, netip.AddrPort{}, err
	}
	return fd, local, nil
}

// setupSocket sets the socket options and binds; see openSocket.
func setupSocket(fd int, c Config, ep *endpoints) (netip.AddrPort, error) {
	setBuf(fd, unix.SO_RCVBUFFORCE, unix.SO_RCVBUF)
	setBuf(fd, unix.SO_SNDBUFFORCE, unix.SO_SNDBUF)
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RXQ_OVFL, 1); err != nil {
		return netip.AddrPort{}, fmt.Errorf("l2tpv3: setsockopt SO_RXQ_OVFL: %w", err)
	}
	if c.IPv6 && c.Encap == EncapUDP {
		// Accept zero UDP checksums from Linux peers with udp6_csum_tx off.
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_NO_CHECK6_RX, 1); err != nil {
			return netip.AddrPort{}, fmt.Errorf("l2tpv3: setsockopt UDP_NO_CHECK6_RX: %w", err)
		}
	}
	if c.Encap == EncapUDP {
		// Take coalesced datagrams (a GSO peer on this host, NIC GRO):
		// one receive for a run, split in ReadFrames. Optional.
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_UDP, unix.UDP_GRO, 1)
	}
	if err := setPMTUDisc(fd, c); err != nil {
		return netip.AddrPort{}, err
	}
	if err := setOuterMarks(fd, c); err != nil {
		return netip.AddrPort{}, err
	}
	if err := setRecvErr(fd, c); err != nil {
		return netip.AddrPort{}, err
	}
	if c.Encap == EncapIP {
		if err := attachSessionFilter(fd, c); err != nil {
			return netip.AddrPort{}, err
		}
	}
	_, _, errno := unix.Syscall(unix.SYS_BIND, uintptr(fd),
		uintptr(unsafe.Pointer(ep.local.ptr())), uintptr(ep.local.len))
	if errno != 0 {
		where := "src=" + c.Src
		if c.Encap == EncapUDP {
			where += fmt.Sprintf(" srcport=%d", c.SrcPort)
		}
		return netip.AddrPort{}, fmt.Errorf("l2tpv3: bind %s: %w", where, errno)
	}
	var got unix.RawSockaddrInet6
	l := uint32(unsafe.Sizeof(got))
	_, _, errno = unix.RawSyscall(unix.SYS_GETSOCKNAME, uintptr(fd),
		uintptr(unsafe.Pointer(&got)), uintptr(unsafe.Pointer(&l)))
	if errno != 0 {
		return netip.AddrPort{}, fmt.Errorf("l2tpv3: getsockname: %w", errno)
	}
	return addrPort(&got), nil
}

// setOuterMarks sets the outer header's TOS / traffic class and TTL / hop
// limit (tos=, ttl=) when given; otherwise the kernel's defaults stay.
func setOuterMarks(fd int, c Config) error {
	tosOpt, tosName, ttlOpt, ttlName, level := unix.IP_TOS, "IP_TOS", unix.IP_TTL, "IP_TTL", unix.IPPROTO_IP
	if c.IPv6 {
		tosOpt, tosName, ttlOpt, ttlName, level = unix.IPV6_TCLASS, "IPV6_TCLASS", unix.IPV6_UNICAST_HOPS, "IPV6_UNICAST_HOPS", unix.IPPROTO_IPV6
	}
	if c.TOS != 0 {
		if err := unix.SetsockoptInt(fd, level, tosOpt, int(c.TOS)); err != nil {
			return fmt.Errorf("l2tpv3: tos=%#x: setsockopt %s: %w", c.TOS, tosName, err)
		}
	}
	if c.TTL != 0 {
		if err := unix.SetsockoptInt(fd, level, ttlOpt, int(c.TTL)); err != nil {
			return fmt.Errorf("l2tpv3: ttl=%d: setsockopt %s: %w", c.TTL, ttlName, err)
		}
	}
	return nil
}

// setBuf raises a socket buffer: the FORCE option (root) passes the
// net.core.[rw]mem_max cap; without privilege fall back to the capped one.
func setBuf(fd, force, plain int) {
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, force, sockBufSize) == nil {
		return
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, plain, sockBufSize)
}
