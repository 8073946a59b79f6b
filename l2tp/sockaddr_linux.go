package l2tp

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sockaddr is a resolved address in the kernel's form, ready to be msg_name
// or a bind argument. An IPv4 address uses the RawSockaddrInet4 layout at
// the start of raw.
type sockaddr struct {
	raw unix.RawSockaddrInet6
	len uint32
	ap  netip.AddrPort
}

// resolve turns the Config address host (option key) into an address of the
// family the Config selects: a literal as is, a host name by DNS (first
// address returned).
func resolve(key, host string, v6 bool) (netip.Addr, error) {
	return resolveCtx(context.Background(), key, host, v6)
}

// resolveCtx is resolve bounded by ctx (re-resolution while running).
func resolveCtx(ctx context.Context, key, host string, v6 bool) (netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip, nil
	}
	network := "ip4"
	if v6 {
		network = "ip6"
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, network, host)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("l2tpv3: resolve %s=%s: %w", key, host, err)
	}
	if len(ips) == 0 {
		return netip.Addr{}, fmt.Errorf("l2tpv3: resolve %s=%s: no %s address", key, host, network)
	}
	if v6 {
		return ips[0], nil
	}
	return ips[0].Unmap(), nil
}

// newSockaddr builds the kernel form of ap; an IPv6 zone becomes the scope
// ID (interface name or number).
func newSockaddr(key string, ap netip.AddrPort) (sockaddr, error) {
	s := sockaddr{ap: ap}
	ip := ap.Addr()
	if ip.Is4() {
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&s.raw))
		sa.Family = unix.AF_INET
		putPort(&sa.Port, ap.Port())
		sa.Addr = ip.As4()
		s.len = unix.SizeofSockaddrInet4
		return s, nil
	}
	s.raw.Family = unix.AF_INET6
	putPort(&s.raw.Port, ap.Port())
	s.raw.Addr = ip.As16()
	if zone := ip.Zone(); zone != "" {
		if n, err := strconv.ParseUint(zone, 10, 32); err == nil {
			s.raw.Scope_id = uint32(n)
		} else if ifi, err := net.InterfaceByName(zone); err == nil {
			s.raw.Scope_id = uint32(ifi.Index)
		} else {
			return s, fmt.Errorf("l2tpv3: %s=%s: zone %q: %w", key, ip, zone, err)
		}
	}
	s.len = unix.SizeofSockaddrInet6
	return s, nil
}

// putPort stores port in network byte order in a sockaddr's port field.
func putPort(field *uint16, port uint16) {
	b := (*[2]byte)(unsafe.Pointer(field))
	b[0], b[1] = byte(port>>8), byte(port)
}

// getPort reads a sockaddr's network-byte-order port field.
func getPort(field *uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(field))
	return uint16(b[0])<<8 | uint16(b[1])
}

// ptr is the address to pass as msg_name or to bind/getsockname.
func (s *sockaddr) ptr() *byte { return (*byte)(unsafe.Pointer(&s.raw)) }

// matches reports whether a received source address (as the kernel wrote
// it) is this address, comparing the port too when withPort.
func (s *sockaddr) matches(from *unix.RawSockaddrInet6, fromLen uint32, withPort bool) bool {
	if s.raw.Family == unix.AF_INET {
		if fromLen < unix.SizeofSockaddrInet4 || from.Family != unix.AF_INET {
			return false
		}
		a := (*unix.RawSockaddrInet4)(unsafe.Pointer(&s.raw))
		b := (*unix.RawSockaddrInet4)(unsafe.Pointer(from))
		return a.Addr == b.Addr && (!withPort || a.Port == b.Port)
	}
	if fromLen < unix.SizeofSockaddrInet6 || from.Family != unix.AF_INET6 {
		return false
	}
	return s.raw.Addr == from.Addr && (!withPort || s.raw.Port == from.Port)
}

// addrPort converts a kernel-written address back (for LocalAddr).
func addrPort(raw *unix.RawSockaddrInet6) netip.AddrPort {
	if raw.Family == unix.AF_INET {
		a := (*unix.RawSockaddrInet4)(unsafe.Pointer(raw))
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), getPort(&a.Port))
	}
	return netip.AddrPortFrom(netip.AddrFrom16(raw.Addr), getPort(&raw.Port))
}

// addrString renders an endpoint as LocalAddr/PeerAddr do: address and port
// with UDP, the address alone over IP.
func addrString(ap netip.AddrPort, udp bool) string {
	if udp {
		return ap.String()
	}
	return ap.Addr().String()
}
