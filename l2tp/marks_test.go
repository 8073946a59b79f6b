package l2tp

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestOuterMarks: tos= and ttl= appear in the outer header of what the
// tunnel sends, over UDP and IP, IPv4 and IPv6, read on loopback by a
// plain socket asking for them (IP_RECVTOS / IP_RECVTTL, IPV6_RECVTCLASS /
// IPV6_RECVHOPLIMIT); without them the kernel's defaults stay (TOS 0, the
// system's TTL / hop limit).
func TestOuterMarks(t *testing.T) {
	eachUnderlay(t, func(t *testing.T, udp, v6 bool) {
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

// eachUnderlay runs f as a subtest over udp4, udp6, ip4 and ip6 (IP
// encapsulation only as root).
func eachUnderlay(t *testing.T, f func(t *testing.T, udp, v6 bool)) {
	for _, udp := range []bool{true, false} {
		for _, v6 := range []bool{false, true} {
			name := map[bool]string{true: "udp", false: "ip"}[udp] + map[bool]string{false: "4", true: "6"}[v6]
			t.Run(name, func(t *testing.T) {
				if !udp {
					needRoot(t)
				}
				f(t, udp, v6)
			})
		}
	}
}

// outerMarks opens a tunnel with opts toward a receiving socket on
// loopback, sends one frame and returns the TOS / traffic class and TTL /
// hop limit the datagram arrived with.
func outerMarks(t *testing.T, udp, v6 bool, opts string) (tos, ttl int) {
	t.Helper()
	tun, pc := markedTunnel(t, udp, v6, opts)
	send(t, tun, frameOf(1, 60))
	tos, ttl = readMarks(t, pc)
	tun.Close() // over IP the next tunnel would join this one's socket
	return tos, ttl
}

// markedTunnel opens a tunnel with opts toward a socket on loopback that
// reports each datagram's TOS and TTL; both close when the test ends.
func markedTunnel(t *testing.T, udp, v6 bool, opts string) (*Tunnel, net.PacketConn) {
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
	t.Cleanup(func() { pc.Close() })
	recvMarks(t, pc, v6)
	s := fmt.Sprintf("src=%s,dst=%s,txsession=%#x,ipv6=%s%s", addr, addr, 1+rand.Uint32N(1<<30), ipv6, opts)
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
	t.Cleanup(func() { tun.Close() })
	return tun, pc
}

// readMarks reads one datagram from pc and returns its TOS and TTL.
func readMarks(t *testing.T, pc net.PacketConn) (tos, ttl int) {
	t.Helper()
	if err := pc.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf, oob := make([]byte, 2048), make([]byte, 256)
	var oobn int
	var err error
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

// markedFrame is a 200-byte Ethernet frame of etype whose network header
// starts with l3 (an IPv4 or IPv6 header's first bytes, or anything).
func markedFrame(etype uint16, l3 ...byte) []byte {
	f := frameOf(3, 200)
	f[12], f[13] = byte(etype>>8), byte(etype)
	copy(f[14:], l3)
	return f
}

// TestInnerTOS: the TOS byte is read from IPv4 (byte 1), IPv6 (the traffic
// class across bytes 0-1), behind one VLAN tag; anything else is 0.
func TestInnerTOS(t *testing.T) {
	tagged := markedFrame(0x8100, 0x00, 0x05, 0x08, 0x00, 0x45, 0xb9)
	for _, tt := range []struct {
		name  string
		frame []byte
		want  uint8
	}{
		{"ipv4", markedFrame(0x0800, 0x45, 0xb9), 0xb9},
		{"ipv6", markedFrame(0x86dd, 0x6b, 0x9f, 0xff), 0xb9},
		{"vlan ipv4", tagged, 0xb9},
		{"qinq outer tag ipv6", markedFrame(0x88a8, 0x00, 0x05, 0x86, 0xdd, 0x62, 0xe0), 0x2e},
		{"arp", markedFrame(0x0806, 0x00, 0x01), 0},
		{"ipv4 etype, version 6", markedFrame(0x0800, 0x65, 0xb9), 0},
		{"short", markedFrame(0x0800, 0x45, 0xb9)[:15], 0},
		{"short tagged", tagged[:19], 0},
	} {
		if got := innerTOS(tt.frame); got != tt.want {
			t.Errorf("%s: %#x, want %#x", tt.name, got, tt.want)
		}
	}
}

// TestTOSInherit: with tos=inherit each datagram carries its own frame's
// TOS / traffic class, over UDP (where equal-sized frames would otherwise
// go as one GSO message with one TOS) and IP, IPv4 and IPv6 underlays;
// 0 allocations per batch.
func TestTOSInherit(t *testing.T) {
	frames := [][]byte{
		markedFrame(0x0800, 0x45, 0xb9), markedFrame(0x0800, 0x45, 0xb9),
		markedFrame(0x0800, 0x45, 0x00), markedFrame(0x86dd, 0x62, 0xe0),
		markedFrame(0x86dd, 0x62, 0xe0), markedFrame(0x0806), markedFrame(0x0800, 0x45, 0x03),
		markedFrame(0x0800, 0x45, 0x03),
	}
	want := []int{0xb9, 0xb9, 0, 0x2e, 0x2e, 0, 0x03, 0x03}
	eachUnderlay(t, func(t *testing.T, udp, v6 bool) {
		tun, pc := markedTunnel(t, udp, v6, ",tos=inherit")
		send(t, tun, frames...)
		for i, w := range want {
			if tos, _ := readMarks(t, pc); tos != w {
				t.Errorf("datagram %d: outer TOS %#x, want %#x", i, tos, w)
			}
		}
		if udp && !v6 {
			if st := tun.Stats().Snapshot(); st.GSOPackets == 0 {
				t.Logf("no GSO on this host: the split of runs is not exercised (%s)", st)
			}
		}
		off := tun.Headroom()
		bufs, sizes := make([][]byte, len(frames)), make([]int, len(frames))
		for i, f := range frames {
			bufs[i], sizes[i] = append(make([]byte, off), f...), len(f)
		}
		allocs := testing.AllocsPerRun(20, func() {
			if err := tun.WriteFrames(bufs, sizes, off); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("%v allocs per batch", allocs)
		}
	})
}
