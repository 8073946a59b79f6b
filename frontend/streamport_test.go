package frontend

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/internal/testlog"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/pump"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/pump/pumptest"
)

// socketPair returns two connected unix stream sockets as net.Conns.
func socketPair(t testing.TB) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "pair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	a, b := conn(fds[0]), conn(fds[1])
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// newBufs allocates a pump-like batch of buffers with headroom.
func newBufs(n, off int) ([][]byte, []int) {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, off+pump.MaxFrame)
	}
	return bufs, make([]int, n)
}

func TestStreamReadSplitWrites(t *testing.T) {
	qemu, side := socketPair(t)
	port, err := NewStreamPort(side, 8, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := [][]byte{pumptest.FrameN(0, 60), pumptest.FrameN(1, 1514), pumptest.FrameN(2, 14), pumptest.FrameN(3, 9018), pumptest.FrameN(4, pump.MaxFrame)}
	wire := pumptest.EncodeStream(want...)
	go func() {
		// Dribble the bytes in odd pieces, splitting length prefixes too.
		for i := 0; i < len(wire); {
			n := min(len(wire)-i, 1+i%7919)
			qemu.Write(wire[i : i+n])
			i += n
		}
	}()
	bufs, sizes := newBufs(8, 32)
	var got [][]byte
	for len(got) < len(want) {
		n, err := port.ReadFrames(bufs, sizes, 32)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < n; i++ {
			got = append(got, bytes.Clone(bufs[i][32:32+sizes[i]]))
		}
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("frame %d: got %d bytes, want %d (or content differs)", i, len(got[i]), len(want[i]))
		}
	}
}

func TestStreamBadLengthEndsConnection(t *testing.T) {
	for _, bad := range []uint32{0, 13, pump.MaxFrame + 1, 0xffffffff} {
		qemu, side := socketPair(t)
		stats := new(StreamStats)
		port, _ := NewStreamPort(side, 8, stats)
		good := pumptest.EncodeStream(pumptest.FrameN(7, 64))
		var hdr [4]byte
		binary.BigEndian.PutUint32(hdr[:], bad)
		qemu.Write(append(good, hdr[:]...))
		bufs, sizes := newBufs(8, 0)
		n, err := port.ReadFrames(bufs, sizes, 0)
		if n != 1 || err != nil {
			t.Fatalf("length %d: first read n=%d err=%v, want the good frame first", bad, n, err)
		}
		_, err = port.ReadFrames(bufs, sizes, 0)
		var fe *FrameLengthError
		if !errors.As(err, &fe) || fe.Length != bad {
			t.Fatalf("length %d: got %v, want FrameLengthError", bad, err)
		}
		if stats.BadLength.Load() != 1 {
			t.Fatalf("BadLength = %d", stats.BadLength.Load())
		}
	}
}

func TestStreamEOF(t *testing.T) {
	qemu, side := socketPair(t)
	port, _ := NewStreamPort(side, 8, nil)
	qemu.Write(pumptest.EncodeStream(pumptest.FrameN(1, 100))[:50]) // half a frame, then hang up
	qemu.Close()
	bufs, sizes := newBufs(8, 0)
	if _, err := port.ReadFrames(bufs, sizes, 0); !errors.Is(err, io.EOF) {
		t.Fatalf("got %v, want io.EOF", err)
	}
}

// A VM that does not read for a while blocks WriteFrames; nothing is lost
// and every frame arrives whole and in order.
func TestStreamWriteWaitsForSlowVM(t *testing.T) {
	qemu, side := socketPair(t)
	side.SetWriteBuffer(4096)
	qemu.SetReadBuffer(4096)
	stats := new(StreamStats)
	port, _ := NewStreamPort(side, 16, stats)
	const count = 2000
	done := make(chan error, 1)
	go func() {
		frames := make([][]byte, 16)
		for i := 0; i < count; i += 16 {
			for j := range frames {
				frames[j] = pumptest.FrameN(i+j, 100+(i+j)%1400)
			}
			if err := port.WriteFrames(frames); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	time.Sleep(300 * time.Millisecond) // the VM stalls
	select {
	case err := <-done:
		t.Fatalf("writer finished while the VM was stalled: %v", err)
	default:
	}
	got := readStreamFrames(t, qemu, count)
	for i, f := range got {
		if !bytes.Equal(f, pumptest.FrameN(i, 100+i%1400)) {
			t.Fatalf("frame %d differs", i)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if stats.Stalls.Load() == 0 || stats.ToVM.Load() != count {
		t.Fatalf("stalls=%d toVM=%d", stats.Stalls.Load(), stats.ToVM.Load())
	}
}

// readStreamFrames reads count framed frames as QEMU would.
func readStreamFrames(t testing.TB, c net.Conn, count int) [][]byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	var out [][]byte
	var hdr [4]byte
	for len(out) < count {
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			t.Fatalf("after %d frames: %v", len(out), err)
		}
		f := make([]byte, binary.BigEndian.Uint32(hdr[:]))
		if _, err := io.ReadFull(c, f); err != nil {
			t.Fatalf("after %d frames: %v", len(out), err)
		}
		out = append(out, f)
	}
	return out
}

func TestStreamNoAllocs(t *testing.T) {
	qemu, side := socketPair(t)
	port, _ := NewStreamPort(side, 4, nil)
	frames := [][]byte{pumptest.FrameN(1, 64), pumptest.FrameN(2, 1500)}
	sink := make([]byte, 1<<16)
	bufs, sizes := newBufs(4, 16)
	wire := pumptest.EncodeStream(frames...)
	allocs := testing.AllocsPerRun(200, func() {
		if err := port.WriteFrames(frames); err != nil {
			t.Fatal(err)
		}
		io.ReadFull(qemu, sink[:len(wire)])
		qemu.Write(wire)
		for got := 0; got < 2; {
			n, err := port.ReadFrames(bufs, sizes, 16)
			if err != nil {
				t.Fatal(err)
			}
			got += n
		}
	})
	// The test's own net.Conn Read/Write on the QEMU side may allocate
	// nothing either; anything above 0 is the port's.
	if allocs != 0 {
		t.Fatalf("%v allocs per round trip, want 0", allocs)
	}
}

func TestParseStreamAddr(t *testing.T) {
	ok := map[string]StreamAddr{
		"unix:/run/x.sock":                    {Network: "unix", Address: "/run/x.sock", Server: true, Reconnect: time.Second},
		"unix:/run/x.sock,server=off":         {Network: "unix", Address: "/run/x.sock", Server: false, Reconnect: time.Second},
		"unix:/a,server=no,reconnect=3":       {Network: "unix", Address: "/a", Reconnect: 3 * time.Second},
		"unix:/a,server=off,reconnect-ms=250": {Network: "unix", Address: "/a", Reconnect: 250 * time.Millisecond},
		"tcp:127.0.0.1:5555":                  {Network: "tcp", Address: "127.0.0.1:5555", Server: true, Reconnect: time.Second},
		"tcp:[::1]:5555,server=on":            {Network: "tcp", Address: "[::1]:5555", Server: true, Reconnect: time.Second},
	}
	for in, want := range ok {
		got, err := ParseStreamAddr(in)
		if err != nil || got != want {
			t.Errorf("%q: got %+v, %v; want %+v", in, got, err, want)
		}
	}
	bad := map[string]string{
		"/run/x.sock":          "want unix:PATH or tcp:HOST:PORT",
		"udp:1.2.3.4:5":        `unknown socket type "udp"`,
		"tcp:localhost":        "tcp address",
		"unix:/a,server=maybe": "server=maybe: want on or off",
		"unix:/a,reconnect=0":  "reconnect=0: want a positive whole number",
		"unix:/a,color=blue":   `unknown key "color"`,
		"unix:":                "want unix:PATH",
	}
	for in, want := range bad {
		_, err := ParseStreamAddr(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want error containing %q", in, err, want)
		}
	}
}

func TestListenStreamRefusesInUseAndNonSocket(t *testing.T) {
	dir := t.TempDir()
	path := dir + "/s.sock"
	a, err := ParseStreamAddr("unix:" + path)
	if err != nil {
		t.Fatal(err)
	}
	s1, err := ListenStream(a, 8, testlog.Discard())
	if err != nil {
		t.Fatal(err)
	}
	defer s1.Close()
	if _, err := ListenStream(a, 8, testlog.Discard()); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second listener: %v, want 'in use'", err)
	}
	plain := dir + "/plain"
	os.WriteFile(plain, nil, 0o600)
	b, _ := ParseStreamAddr("unix:" + plain)
	if _, err := ListenStream(b, 8, testlog.Discard()); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("plain file: %v, want 'not a socket'", err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, %v; want 0600", fi.Mode(), err)
	}
}

func BenchmarkStreamRoundTrip64(b *testing.B)   { benchStream(b, 64) }
func BenchmarkStreamRoundTrip1500(b *testing.B) { benchStream(b, 1500) }

// benchStream moves batches of 32 frames through WriteFrames and back in
// through ReadFrames over a socketpair.
func benchStream(b *testing.B, size int) {
	qemu, side := socketPair(b)
	out, _ := NewStreamPort(side, 32, nil)
	qemu2, side2 := socketPair(b)
	in, _ := NewStreamPort(side2, 32, nil)
	frames := make([][]byte, 32)
	for i := range frames {
		frames[i] = pumptest.FrameN(i, size)
	}
	wire := pumptest.EncodeStream(frames...)
	sink := make([]byte, len(wire))
	bufs, sizes := newBufs(32, 16)
	b.ReportAllocs()
	b.SetBytes(int64(32 * size))
	for b.Loop() {
		out.WriteFrames(frames)
		io.ReadFull(qemu, sink)
		qemu2.Write(wire)
		for got := 0; got < 32; {
			n, _ := in.ReadFrames(bufs, sizes, 16)
			got += n
		}
	}
}
