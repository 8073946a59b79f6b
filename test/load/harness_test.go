package load

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/backend"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/internal/testport"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/l2tp"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/pump"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/test/guest"
	"golang.org/x/sys/unix"
)

// soakEnv, set to "1", runs the long variants (a million-datagram flood,
// 64 ports, the soak); make soak sets it.
const soakEnv = "L2TPV3_SOAK"

// soak reports whether the long variants run.
func soak() bool { return os.Getenv(soakEnv) == "1" }

// holdMachine takes the machine lock the real-VM tests share, so a long
// run that saturates every core does not make other test processes' TCG
// guests time out; it is released when the test ends.
func holdMachine(t testing.TB) {
	dir := guest.CacheDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Logf("not taking the machine lock: %v", err)
		return
	}
	f, err := os.OpenFile(dir+"/machine.lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Logf("not taking the machine lock: %v", err)
		return
	}
	start := time.Now()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		t.Logf("not taking the machine lock: %v", err)
		return
	}
	if d := time.Since(start); d > time.Second {
		t.Logf("waited %v for the machine lock", d.Round(time.Second))
	}
	t.Cleanup(func() { f.Close() })
}

// envInt reads a positive integer from the environment, or def.
func envInt(t testing.TB, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive whole number", name, s)
	}
	return n
}

// Test frames: dst MAC, src MAC, EtherType 0x88b5 (IEEE local
// experimental), then a kind ("GOOD" or "BAD!"), the stream number and the
// sequence number, then zero padding.
const (
	etherTypeTest = 0x88b5
	kindGood      = 0x474f4f44 // "GOOD"
	kindBad       = 0x42414421 // "BAD!"
	frameHdrLen   = 14 + 4 + 4 + 8
)

// putFrame fills all of b (at least frameHdrLen bytes) with a test frame.
func putFrame(b []byte, kind, stream uint32, seq uint64) {
	copy(b[0:12], []byte{0x52, 0x54, 0, 0x10, 0, 2, 0x52, 0x54, 0, 0x10, 0, 1})
	binary.BigEndian.PutUint16(b[12:], etherTypeTest)
	binary.BigEndian.PutUint32(b[14:], kind)
	binary.BigEndian.PutUint32(b[18:], stream)
	binary.BigEndian.PutUint64(b[22:], seq)
	clear(b[frameHdrLen:])
}

// newFrame returns a size-byte test frame.
func newFrame(kind, stream uint32, seq uint64, size int) []byte {
	b := make([]byte, size)
	putFrame(b, kind, stream, seq)
	return b
}

// parseFrame reads a test frame; ok is false for anything else.
func parseFrame(f []byte) (kind, stream uint32, seq uint64, ok bool) {
	if len(f) < frameHdrLen || binary.BigEndian.Uint16(f[12:]) != etherTypeTest {
		return 0, 0, 0, false
	}
	return binary.BigEndian.Uint32(f[14:]), binary.BigEndian.Uint32(f[18:]), binary.BigEndian.Uint64(f[22:]), true
}

// logSink counts the lines the ports log and keeps the last few KiB.
type logSink struct {
	mu    sync.Mutex
	lines int
	tail  []byte
}

// Write counts lines; slog writes one record per call.
func (l *logSink) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines += bytes.Count(p, []byte{'\n'})
	l.tail = append(l.tail, p...)
	if len(l.tail) > 16<<10 {
		l.tail = l.tail[len(l.tail)-8<<10:]
	}
	return len(p), nil
}

// count returns the number of lines so far.
func (l *logSink) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lines
}

// String returns the last lines.
func (l *logSink) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.tail)
}

// newPorts returns a port set logging into sink, closed at cleanup.
func newPorts(t testing.TB, sink io.Writer) *backend.Ports {
	ps := backend.NewPorts(slog.New(slog.NewTextHandler(sink, nil)))
	t.Cleanup(ps.Close)
	return ps
}

// sockDir returns a short directory for unix sockets (t.TempDir paths can
// pass the 108-byte limit of a socket address).
func sockDir(t testing.TB) string {
	d, err := os.MkdirTemp("", "l2tld-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// addPort adds a stream port listening on sock with the sidecar's option
// string opts.
func addPort(t testing.TB, ps *backend.Ports, name, sock, opts string) *backend.Port {
	t.Helper()
	cfg, err := backend.PortSpec{Name: name, Stream: "unix:" + sock, L2TPv3: opts}.Parse()
	if err != nil {
		t.Fatal(err)
	}
	p, err := ps.Add(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// freeUDPPort returns a UDP port free on 127.0.0.1, never one it returned before.
func freeUDPPort(t testing.TB) int { return testport.UDP(t, "127.0.0.1") }

// udpPair returns the sidecar's option string for a UDP session on
// 127.0.0.1 and its mirror for the test's peer, plus the peer's port.
func udpPair(t testing.TB, txs, rxs uint32, extra, peerExtra string) (side string, peer l2tp.Config, peerPort int) {
	t.Helper()
	ps, pp := freeUDPPort(t), freeUDPPort(t)
	side = fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=%d,txsession=%#x,rxsession=%#x%s",
		ps, pp, txs, rxs, extra)
	popts := fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=%d,txsession=%#x,rxsession=%#x%s",
		pp, ps, rxs, txs, peerExtra)
	c, err := l2tp.ParseOptions(popts)
	if err != nil {
		t.Fatal(err)
	}
	return side, c, pp
}

// openPeer opens the test's L2TPv3 end, closed at cleanup.
func openPeer(t testing.TB, c l2tp.Config) *l2tp.Tunnel {
	t.Helper()
	tun, err := l2tp.Open(c, l2tp.TunnelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tun.Close() })
	return tun
}

// vmConn stands in for QEMU on a port's -netdev stream socket.
type vmConn struct {
	c    *net.UnixConn
	wbuf []byte
}

// dialVM connects to a port's stream socket as QEMU server=off would.
func dialVM(t testing.TB, path string) *vmConn {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &vmConn{c: c}
}

// attachVM connects to port p's stream socket and waits until the port
// serves the connection.
func attachVM(t testing.TB, p *backend.Port, path string) *vmConn {
	t.Helper()
	v := dialVM(t, path)
	if !waitFor(5*time.Second, func() bool { return p.Status().FrontEnd.Connected }) {
		t.Fatalf("port %s: the VM connection was not taken", p.Name())
	}
	time.Sleep(10 * time.Millisecond) // Connected is set just before the pump attaches it
	return v
}

// readLoop calls fn with each frame the sidecar sends until the connection
// ends; fn must not keep the slice.
func (v *vmConn) readLoop(fn func(frame []byte)) error {
	r := bufio.NewReaderSize(v.c, 1<<20)
	buf := make([]byte, pump.MaxFrame)
	var hdr [4]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return err
		}
		n := binary.BigEndian.Uint32(hdr[:])
		if n > uint32(len(buf)) {
			return fmt.Errorf("frame length %d", n)
		}
		if _, err := io.ReadFull(r, buf[:n]); err != nil {
			return err
		}
		fn(buf[:n])
	}
}

// write sends frames with their length prefixes in one write.
func (v *vmConn) write(frames [][]byte) error {
	v.wbuf = v.wbuf[:0]
	for _, f := range frames {
		v.wbuf = binary.BigEndian.AppendUint32(v.wbuf, uint32(len(f)))
		v.wbuf = append(v.wbuf, f...)
	}
	_, err := v.c.Write(v.wbuf)
	return err
}

// frameBatch is a reusable batch of frames with the tunnel's headroom.
type frameBatch struct {
	off   int
	bufs  [][]byte
	sizes []int
}

// newFrameBatch allocates n buffers of headroom+size bytes.
func newFrameBatch(n, headroom, size int) *frameBatch {
	b := &frameBatch{off: headroom, bufs: make([][]byte, n), sizes: make([]int, n)}
	for i := range b.bufs {
		b.bufs[i] = make([]byte, headroom+size)
		b.sizes[i] = size
	}
	return b
}

// sendSeq sends frames stream/seq..seq+n-1 through tun (n <= batch
// size), each b.sizes[i] bytes.
func (b *frameBatch) sendSeq(tun *l2tp.Tunnel, stream uint32, seq uint64, n int) error {
	for i := range n {
		putFrame(b.bufs[i][b.off:b.off+b.sizes[i]], kindGood, stream, seq+uint64(i))
	}
	return tun.WriteFrames(b.bufs[:n], b.sizes[:n], b.off)
}

// mmsghdr is struct mmsghdr (golang.org/x/sys/unix has none).
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
	_   [4]byte
}

// sender sends prebuilt datagrams on a connected blocking socket with
// sendmmsg, as fast as the kernel takes them.
type sender struct {
	fd   int
	msgs []mmsghdr
	iovs []unix.Iovec
}

// newSender wraps a connected socket fd for batches of up to batch datagrams.
func newSender(fd, batch int) *sender {
	return &sender{fd: fd, msgs: make([]mmsghdr, batch), iovs: make([]unix.Iovec, batch)}
}

// send sends every packet, in order; an empty packet is a zero-length datagram.
func (s *sender) send(pkts [][]byte) error {
	for len(pkts) > 0 {
		k := min(len(pkts), len(s.msgs))
		for i, p := range pkts[:k] {
			s.iovs[i] = unix.Iovec{}
			if len(p) > 0 {
				s.iovs[i].Base = &p[0]
				s.iovs[i].SetLen(len(p))
			}
			s.msgs[i].hdr = unix.Msghdr{Iov: &s.iovs[i]}
			s.msgs[i].hdr.SetIovlen(1)
		}
		n, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&s.msgs[0])), uintptr(k), 0, 0, 0)
		switch e {
		case 0:
			pkts = pkts[n:]
		case unix.EINTR:
		case unix.ENOBUFS, unix.EAGAIN:
			time.Sleep(50 * time.Microsecond)
		default:
			return fmt.Errorf("sendmmsg: %w", e)
		}
	}
	return nil
}

// dgramSocket opens a blocking datagram socket (UDP, or raw IP protocol 115
// over IPv4) bound to local and connected to remote; closed at cleanup.
func dgramSocket(t testing.TB, udp bool, local, remote *unix.SockaddrInet4) int {
	t.Helper()
	typ, proto := unix.SOCK_DGRAM, 0
	if !udp {
		typ, proto = unix.SOCK_RAW, unix.IPPROTO_L2TP
	}
	fd, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		t.Fatalf("socket: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 4<<20)
	if err := unix.Bind(fd, local); err != nil {
		t.Fatalf("bind %v: %v", local.Addr, err)
	}
	if err := unix.Connect(fd, remote); err != nil {
		t.Fatalf("connect %v: %v", remote.Addr, err)
	}
	return fd
}

// sa4 is an IPv4 socket address.
func sa4(ip [4]byte, port int) *unix.SockaddrInet4 { return &unix.SockaddrInet4{Addr: ip, Port: port} }

// loopbackNet picks a random 127.x.y.0 network so raw IP tests of other
// processes (which see every protocol-115 packet to their address) are not
// disturbed.
func loopbackNet() [3]byte {
	return [3]byte{127, byte(100 + rand.IntN(100)), byte(rand.IntN(256))}
}

// waitFor polls cond every 10 ms until it holds or timeout passes.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

// settle waits until read returns the same value for quiet in a row (the
// port has worked through its socket), at most timeout.
func settle(quiet, timeout time.Duration, read func() uint64) uint64 {
	last, since := read(), time.Now()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		if v := read(); v != last {
			last, since = v, time.Now()
		} else if time.Since(since) >= quiet {
			break
		}
	}
	return last
}

// isClosed reports whether err is the end of a connection or tunnel.
func isClosed(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) || errors.Is(err, unix.ECONNRESET)
}

// countPeer counts the frames tun receives until it is closed.
func countPeer(tun *l2tp.Tunnel, got *atomic.Uint64) {
	fs := make([][]byte, tun.BatchSize())
	for {
		k, err := tun.ReadFrames(fs)
		if err != nil {
			return
		}
		got.Add(uint64(k))
	}
}
