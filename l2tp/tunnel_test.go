package l2tp

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/internal/testport"
)

// freePort returns a UDP port free on addr, never one it returned before.
func freePort(t testing.TB, addr string) uint16 {
	t.Helper()
	return uint16(testport.UDP(t, addr))
}

// needRoot skips raw IP tests when raw sockets cannot be opened.
func needRoot(t testing.TB) {
	if os.Geteuid() != 0 {
		t.Skip("raw IP sockets need root")
	}
}

// pairConfigs builds two mirrored configs: a sends session sa to b, b sends
// sb to a; over IPv4 raw IP the ends get distinct loopback addresses.
func pairConfigs(t testing.TB, udp, v6 bool, opts string) (Config, Config) {
	t.Helper()
	la, lb := "127.0.0.1", "127.0.0.1"
	if v6 {
		la, lb = "::1", "::1"
	} else if !udp {
		la, lb = "127.83.0.1", "127.83.0.2"
	}
	sa, sb := 0x1000+rand.Uint32N(1<<20), 0x2000000+rand.Uint32N(1<<20)
	mk := func(src, dst string, tx, rx uint32, sport, dport uint16) Config {
		s := fmt.Sprintf("src=%s,dst=%s,txsession=%#x,rxsession=%#x,ipv6=%s%s", src, dst, tx, rx, onOff(v6), opts)
		if udp {
			s += fmt.Sprintf(",udp,srcport=%d,dstport=%d", sport, dport)
		}
		c, err := ParseOptions(s)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	var pa, pb uint16
	if udp {
		pa, pb = freePort(t, la), freePort(t, lb)
	}
	return mk(la, lb, sa, sb, pa, pb), mk(lb, la, sb, sa, pb, pa)
}

// openPair opens two tunnels facing each other, closed when the test ends.
func openPair(t testing.TB, udp, v6 bool, opts string, oa, ob TunnelOptions) (*Tunnel, *Tunnel) {
	t.Helper()
	if !udp {
		needRoot(t)
	}
	ca, cb := pairConfigs(t, udp, v6, opts)
	a, err := Open(ca, oa)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	b, err := Open(cb, ob)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return a, b
}

// send writes frames through tun with its headroom, failing the test on error.
func send(t testing.TB, tun *Tunnel, frames ...[]byte) {
	t.Helper()
	if err := sendErr(tun, frames...); err != nil {
		t.Fatal(err)
	}
}

// sendErr writes frames through tun with its headroom (any goroutine).
func sendErr(tun *Tunnel, frames ...[]byte) error {
	off := tun.Headroom()
	bufs, sizes := make([][]byte, len(frames)), make([]int, len(frames))
	for i, f := range frames {
		bufs[i] = append(make([]byte, off), f...)
		sizes[i] = len(f)
	}
	return tun.WriteFrames(bufs, sizes, off)
}

// collect reads n frames from tun (copies), failing after 5 s.
func collect(t testing.TB, tun *Tunnel, n int) [][]byte {
	t.Helper()
	got, err := collectErr(tun, n)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// collectErr reads n frames from tun (copies), closing tun after 5 s
// (any goroutine).
func collectErr(tun *Tunnel, n int) ([][]byte, error) {
	timer := time.AfterFunc(5*time.Second, func() { tun.Close() })
	defer timer.Stop()
	var got [][]byte
	frames := make([][]byte, tun.BatchSize())
	for len(got) < n {
		k, err := tun.ReadFrames(frames)
		if err != nil {
			return got, fmt.Errorf("after %d of %d frames: %w (stats %s)", len(got), n, err, tun.Stats().Snapshot())
		}
		for _, f := range frames[:k] {
			got = append(got, bytes.Clone(f))
		}
	}
	return got, nil
}

// frameOf makes an n-byte frame whose content identifies i.
func frameOf(i, n int) []byte {
	f := make([]byte, n)
	for j := range f {
		f[j] = byte(i*7 + j)
	}
	return f
}

// TestTunnelPair moves frames both ways between two tunnels, over UDP and IP,
// IPv4 and IPv6, and checks content, order and counters.
func TestTunnelPair(t *testing.T) {
	for _, udp := range []bool{true, false} {
		for _, v6 := range []bool{false, true} {
			t.Run(fmt.Sprintf("udp=%v/ipv6=%v", udp, v6), func(t *testing.T) {
				a, b := openPair(t, udp, v6, ",txcookie=0x1122334455667788,rxcookie=0x1122334455667788,cookie64,seq=both",
					TunnelOptions{}, TunnelOptions{BatchSize: 8})
				for dir, ends := range [][2]*Tunnel{{a, b}, {b, a}} {
					var want [][]byte
					bytesWant := 0
					for i := range 100 {
						want = append(want, frameOf(i+dir, 14+i*90))
						bytesWant += 14 + i*90
					}
					send(t, ends[0], want...)
					got := collect(t, ends[1], len(want))
					for i := range want {
						if !bytes.Equal(got[i], want[i]) {
							t.Fatalf("frame %d differs (%d vs %d bytes)", i, len(got[i]), len(want[i]))
						}
					}
					tx, rx := ends[0].Stats().Snapshot(), ends[1].Stats().Snapshot()
					if tx.TxPackets != 100 || tx.TxBytes != uint64(bytesWant) || rx.RxPackets != 100 || rx.RxBytes != uint64(bytesWant) {
						t.Fatalf("counters: tx %s / rx %s", tx, rx)
					}
					if rx.Drops[DropSequence] != 0 || rx.SeqLost != 0 {
						t.Fatalf("sequence trouble: %s", rx)
					}
				}
			})
		}
	}
}

// TestTunnelPinning sends a valid packet from a foreign port: counted as a
// source drop, not delivered.
func TestTunnelPinning(t *testing.T) {
	a, b := openPair(t, true, false, "", TunnelOptions{}, TunnelOptions{})
	if !b.Config().PinPeer {
		t.Fatal("pinpeer should default on for a literal dst")
	}
	foreign, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer foreign.Close()
	pkt := NewEncoder(a.Config()).Encap(append(make([]byte, a.Headroom()), frameOf(1, 60)...), a.Headroom(), 60)
	if _, err := foreign.WriteTo(pkt, mustUDPAddr(t, b.LocalAddr())); err != nil {
		t.Fatal(err)
	}
	send(t, a, frameOf(2, 60))
	got := collect(t, b, 1)
	if !bytes.Equal(got[0], frameOf(2, 60)) {
		t.Fatal("the foreign frame was delivered")
	}
	if s := b.Stats().Snapshot(); s.Drops[DropSource] != 1 || s.RxPackets != 1 {
		t.Fatalf("stats %s", s)
	}
}

// mustUDPAddr parses a LocalAddr/PeerAddr string.
func mustUDPAddr(t testing.TB, s string) *net.UDPAddr {
	addr, err := net.ResolveUDPAddr("udp", s)
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// TestTunnelTruncated receives a datagram bigger than the receive buffer:
// counted as truncated, never delivered.
func TestTunnelTruncated(t *testing.T) {
	a, b := openPair(t, true, false, "", TunnelOptions{}, TunnelOptions{recvBuf: 256})
	send(t, a, frameOf(1, 1000), frameOf(2, 100))
	got := collect(t, b, 1)
	if len(got[0]) != 100 {
		t.Fatalf("delivered a %d-byte frame", len(got[0]))
	}
	if s := b.Stats().Snapshot(); s.Drops[DropTruncated] != 1 {
		t.Fatalf("stats %s", s)
	}
}

// TestTunnelGarbage sends 64 zero bytes from a foreign socket to an unpinned
// tunnel: counted as malformed, not delivered.
func TestTunnelGarbage(t *testing.T) {
	a, b := openPair(t, true, false, ",pinpeer=off", TunnelOptions{}, TunnelOptions{})
	foreign, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer foreign.Close()
	if _, err := foreign.WriteTo(make([]byte, 64), mustUDPAddr(t, b.LocalAddr())); err != nil {
		t.Fatal(err)
	}
	send(t, a, frameOf(3, 64))
	if got := collect(t, b, 1); !bytes.Equal(got[0], frameOf(3, 64)) {
		t.Fatal("garbage delivered")
	}
	if s := b.Stats().Snapshot(); s.Drops[DropMalformed] != 1 || s.RxPackets != 1 {
		t.Fatalf("stats %s", s)
	}
}

// TestTunnelOversize drops a frame too big for one datagram and sends the
// rest of the batch.
func TestTunnelOversize(t *testing.T) {
	a, b := openPair(t, true, false, "", TunnelOptions{}, TunnelOptions{})
	send(t, a, frameOf(1, 65600), frameOf(2, 65507-a.Headroom()), frameOf(3, 64))
	got := collect(t, b, 2)
	if len(got[0]) != 65507-a.Headroom() || !bytes.Equal(got[1], frameOf(3, 64)) {
		t.Fatalf("got frames of %d and %d bytes", len(got[0]), len(got[1]))
	}
	if s := a.Stats().Snapshot(); s.Drops[DropOversize] != 1 || s.TxPackets != 2 {
		t.Fatalf("stats %s", s)
	}
}

// TestTunnelSendError sends to the broadcast address (EACCES without
// SO_BROADCAST): every frame is dropped and counted, none blocks the batch.
func TestTunnelSendError(t *testing.T) {
	c, err := ParseOptions(fmt.Sprintf("src=127.0.0.1,dst=255.255.255.255,txsession=1,udp,srcport=%d,dstport=9",
		freePort(t, "127.0.0.1")))
	if err != nil {
		t.Fatal(err)
	}
	a, err := Open(c, TunnelOptions{BatchSize: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	var frames [][]byte
	for i := range 10 {
		frames = append(frames, frameOf(i, 60))
	}
	send(t, a, frames...)
	if s := a.Stats().Snapshot(); s.Drops[DropSendError] != 10 || s.TxPackets != 0 {
		t.Fatalf("stats %s", s)
	}
}

// TestTunnelKernelDrops overflows the receiver's socket buffer and checks
// that the SO_RXQ_OVFL count reaches the kernel drop counter.
func TestTunnelKernelDrops(t *testing.T) {
	a, b := openPair(t, true, false, "", TunnelOptions{}, TunnelOptions{})
	var frames [][]byte
	for i := range 64 {
		frames = append(frames, frameOf(i, 1400))
	}
	for range 100 { // 6400 frames: far more than a 4 MiB buffer holds
		send(t, a, frames...)
	}
	// Drain, sending a 61-byte marker per read until one gets through: it
	// was queued after the drops, so it carries their count.
	timer := time.AfterFunc(5*time.Second, func() { b.Close() })
	defer timer.Stop()
	buf := make([][]byte, b.BatchSize())
	markers := 0
	for seen := false; !seen; {
		send(t, a, frameOf(0, 61))
		markers++
		n, err := b.ReadFrames(buf)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range buf[:n] {
			seen = seen || len(f) == 61
		}
	}
	s := b.Stats().Snapshot()
	if s.Drops[DropKernel] == 0 || s.Drops[DropKernel]+s.RxPackets > uint64(6400+markers) {
		t.Fatalf("kernel drops %d after %d frames (stats %s)", s.Drops[DropKernel], 6400+markers, s)
	}
}

// TestTunnelClose checks that Close unblocks a reader with net.ErrClosed,
// later calls fail the same way, and a second Close is harmless.
func TestTunnelClose(t *testing.T) {
	a, _ := openPair(t, true, true, "", TunnelOptions{}, TunnelOptions{})
	errc := make(chan error)
	go func() {
		_, err := a.ReadFrames(make([][]byte, 4))
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("ReadFrames after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ReadFrames still blocked after Close")
	}
	if _, err := a.ReadFrames(make([][]byte, 4)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("ReadFrames: %v", err)
	}
	if err := a.WriteFrames([][]byte{make([]byte, 100)}, []int{60}, a.Headroom()); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("WriteFrames: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestOpenErrors checks the errors Open reports, naming the input.
func TestOpenErrors(t *testing.T) {
	busy, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	port := busy.LocalAddr().(*net.UDPAddr).Port
	tests := []struct {
		opts  string
		batch int
		msg   string
	}{
		{fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,txsession=1,udp,srcport=%d,dstport=1", port), 0,
			fmt.Sprintf("l2tpv3: bind src=127.0.0.1 srcport=%d: address already in use", port)},
		{"src=127.0.0.1,dst=no_such..host,txsession=1,udp,srcport=1,dstport=1", 0, "l2tpv3: resolve dst=no_such..host: "},
		{"src=192.0.2.77,dst=127.0.0.1,txsession=1,udp,srcport=1701,dstport=1", 0,
			"l2tpv3: bind src=192.0.2.77 srcport=1701: cannot assign requested address"},
		{"src=127.0.0.1,dst=127.0.0.1,txsession=1,udp,srcport=1,dstport=1", 2000, "l2tpv3: batch size 2000: must be 1..1024"},
	}
	for _, tt := range tests {
		c, err := ParseOptions(tt.opts)
		if err != nil {
			t.Fatal(err)
		}
		tun, err := Open(c, TunnelOptions{BatchSize: tt.batch})
		if err == nil {
			tun.Close()
			t.Fatalf("%s: opened", tt.opts)
		}
		if !strings.HasPrefix(err.Error(), tt.msg) {
			t.Errorf("%s:\n got %v\nwant %s", tt.opts, err, tt.msg)
		}
	}
	if _, err := Open(Config{}, TunnelOptions{}); err == nil || err.Error() != "l2tpv3: missing src" {
		t.Errorf("Open(Config{}) = %v", err)
	}
}

// TestTunnelAddrs checks LocalAddr and PeerAddr and the resolution of a
// host name.
func TestTunnelAddrs(t *testing.T) {
	c, err := ParseOptions("src=localhost,dst=127.0.0.1,txsession=1,udp,srcport=1701,dstport=1702,pinpeer=on")
	if err != nil {
		t.Fatal(err)
	}
	c.SrcPort = freePort(t, "127.0.0.1")
	tun, err := Open(c, TunnelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer tun.Close()
	if want := fmt.Sprintf("127.0.0.1:%d", c.SrcPort); tun.LocalAddr() != want || tun.PeerAddr() != "127.0.0.1:1702" {
		t.Fatalf("LocalAddr %s PeerAddr %s", tun.LocalAddr(), tun.PeerAddr())
	}
	if tun.BatchSize() != DefaultBatchSize || tun.Headroom() != 8 || tun.Config() != c {
		t.Fatalf("BatchSize %d Headroom %d", tun.BatchSize(), tun.Headroom())
	}
}
