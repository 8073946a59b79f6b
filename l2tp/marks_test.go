package l2tp

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestOuterMarks: tos= and ttl= appear in the outer header of what the
// tunnel sends, over UDP and IP, IPv4 and IPv6, read on loopback by a
// plain socket asking for them (IP_RECVTOS / IP_RECVTTL, IPV6_RECVTCLASS /
// IPV6_RECVHOPLIMIT); without them the kernel's defaults stay (TOS 0, the
// system's TTL / hop limit).
func TestOuterMarks(t *testing.T) {
	for _, udp := range []bool{true, false} {
		for _, v6 := range []bool{false, true} {
			name := map[bool]string{true: "udp", false: "ip"}[udp] + map[bool]string{false: "4", true: "6"}[v6]
			t.Run(name, func(t *testing.T) {
				if !udp {
					needRoot(t)
				}
				tos, ttl := outerMarks(t, udp, v6, ",tos=0xb9,ttl=7")
				if tos != 0xb9 || ttl != 7 {
					t.Errorf("tos=0xb9,ttl=7: outer TOS %#x TTL %d", tos, ttl)
				}
				tos, ttl = outerMarks(t, udp, v6, "")
				if want := defaultTTL(t, v6); tos != 0 || ttl != want {
					t.Errorf("defaults: outer TOS %#x TTL %d, want 0 and %d", tos, ttl, want)
				}
			})
		}
	}
}

// outerMarks opens a tunnel with opts toward a receiving socket on
// loopback, sends one frame and returns the TOS / traffic class and TTL /
// hop limit the datagram arrived with.
func outerMarks(t *testing.T, udp, v6 bool, opts string) (tos, ttl int) {
	t.Helper()
	addr, network, ipv6 := "127.0.0.1", "udp4", "off"
	if v6 {
		addr, network, ipv6 = "::1", "udp6", "on"
	}
	if !udp {
		network = strings.Replace(network, "udp", "ip", 1) + ":115"
	}
	pc, err := net.ListenPacket(network, net.JoinHostPort(addr, "0"))
	if !udp {
		pc, err = net.ListenPacket(network, addr)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	recvMarks(t, pc, v6)
	s := fmt.Sprintf("src=%s,dst=%s,txsession=0x77,ipv6=%s%s", addr, addr, ipv6, opts)
	if udp {
		s += fmt.Sprintf(",udp,srcport=%d,dstport=%d", freePort(t, addr), pc.LocalAddr().(*net.UDPAddr).Port)
	}
	c, err := ParseOptions(s)
	if err != nil {
		t.Fatal(err)
	}
	tun, err := Open(c, TunnelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer tun.Close()
	send(t, tun, frameOf(1, 60))
	buf, oob := make([]byte, 2048), make([]byte, 256)
	var oobn int
	switch conn := pc.(type) {
	case *net.UDPConn:
		_, oobn, _, _, err = conn.ReadMsgUDP(buf, oob)
	case *net.IPConn:
		_, oobn, _, _, err = conn.ReadMsgIP(buf, oob)
	}
	if err != nil {
		t.Fatal(err)
	}
	return parseMarks(t, oob[:oobn])
}

// recvMarks asks pc's socket for the TOS and TTL of each datagram.
func recvMarks(t *testing.T, pc net.PacketConn, v6 bool) {
	t.Helper()
	level, tosOpt, ttlOpt := unix.IPPROTO_IP, unix.IP_RECVTOS, unix.IP_RECVTTL
	if v6 {
		level, tosOpt, ttlOpt = unix.IPPROTO_IPV6, unix.IPV6_RECVTCLASS, unix.IPV6_RECVHOPLIMIT
	}
	rc, err := pc.(interface {
		SyscallConn() (syscall.RawConn, error)
	}).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	rc.Control(func(fd uintptr) {
		if serr = unix.SetsockoptInt(int(fd), level, tosOpt, 1); serr == nil {
			serr = unix.SetsockoptInt(int(fd), level, ttlOpt, 1)
		}
	})
	if serr != nil {
		t.Fatal(serr)
	}
}

// parseMarks reads the TOS / traffic class and TTL / hop limit cmsgs.
func parseMarks(t *testing.T, oob []byte) (tos, ttl int) {
	t.Helper()
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		t.Fatal(err)
	}
	tos, ttl = -1, -1
	for _, m := range msgs {
		switch {
		case m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_TOS:
			tos = int(m.Data[0])
		case m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_TTL,
			m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_HOPLIMIT:
			ttl = int(int32(nativeUint32(m.Data)))
		case m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_TCLASS:
			tos = int(int32(nativeUint32(m.Data)))
		}
	}
	if tos < 0 || ttl < 0 {
		t.Fatalf("control messages %+v: no TOS or TTL", msgs)
	}
	return tos, ttl
}

// nativeUint32 reads an int-sized cmsg payload (host byte order, little
// endian on every platform this runs on).
func nativeUint32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

// defaultTTL is the system's default TTL (IPv4) or loopback's hop limit.
func defaultTTL(t *testing.T, v6 bool) int {
	t.Helper()
	path := "/proc/sys/net/ipv4/ip_default_ttl"
	if v6 {
		path = "/proc/sys/net/ipv6/conf/lo/hop_limit"
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return n
}
