package l2tp

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// scriptSource feeds a window batches of frames named by their sequence
// numbers (frame content: the number); an empty batch, and every call once
// they are used up, waits what it is allowed to and returns nothing.
type scriptSource struct {
	batches [][]uint32
	frames  [][]byte // one preallocated frame per sequence number mod 256
}

func newScriptSource(batches ...[]uint32) *scriptSource {
	s := &scriptSource{batches: batches, frames: make([][]byte, 256)}
	for i := range s.frames {
		s.frames[i] = frameOf(i, 60)
		s.frames[i][0] = byte(i)
	}
	return s
}

func (s *scriptSource) read(in [][]byte, ns []uint32, wait time.Duration) (int, error) {
	if len(s.batches) == 0 {
		if wait <= 0 {
			return 0, net.ErrClosed // would block for ever: the script is over
		}
		time.Sleep(wait)
		return 0, nil
	}
	b := s.batches[0]
	if len(b) == 0 {
		s.batches = s.batches[1:]
		time.Sleep(wait)
		return 0, nil
	}
	k := min(len(b), len(in))
	for i, n := range b[:k] {
		in[i], ns[i] = s.frames[n%256], n
	}
	if s.batches[0] = b[k:]; len(s.batches[0]) == 0 {
		s.batches = s.batches[1:]
	}
	return k, nil
}

// readAll reads the window until the script is over, returning the first
// byte (the sequence number) of each frame delivered, in order.
func readAll(t *testing.T, w *reorderWindow, outLen int) []int {
	t.Helper()
	out := make([][]byte, outLen)
	var got []int
	for {
		n, err := w.read(out)
		if err != nil {
			return got
		}
		for _, f := range out[:n] {
			got = append(got, int(f[0]))
		}
	}
}

func TestReorderWindow(t *testing.T) {
	tests := []struct {
		name    string
		width   int
		outLen  int
		batches [][]uint32
		want    []int
		lost    uint64
		drops   uint64 // sequence
	}{
		{"in order passes through", 8, 64, [][]uint32{{1, 2, 3}, {4, 5}}, []int{1, 2, 3, 4, 5}, 0, 0},
		{"swapped pair in one batch", 8, 64, [][]uint32{{1, 3, 2, 4}}, []int{1, 2, 3, 4}, 0, 0},
		{"swapped pair across batches", 8, 64, [][]uint32{{1, 3}, {2, 4}}, []int{1, 2, 3, 4}, 0, 0},
		{"many late, small out", 8, 1, [][]uint32{{10, 12, 13, 14, 11, 15}}, []int{10, 11, 12, 13, 14, 15}, 0, 0},
		{"lost frame: held released after the timeout", 8, 64, [][]uint32{{1, 3, 4}}, []int{1, 3, 4}, 1, 0},
		{"late frame after the timeout dropped", 8, 64, [][]uint32{{1, 3, 4}, {}, {2, 5}}, []int{1, 3, 4, 5}, 1, 1},
		{"window full releases", 4, 64, [][]uint32{{1, 3, 4, 5, 6, 7}}, []int{1, 3, 4, 5, 6, 7}, 1, 0},
		{"far jump inside the gap bound", 4, 64, [][]uint32{{1, 3, 200, 2}}, []int{1, 3, 200}, 197, 1},
		{"duplicates dropped", 8, 64, [][]uint32{{1, 3, 3, 2, 2, 1}}, []int{1, 2, 3}, 0, 3},
		{"wraps at 2^24", 8, 64, [][]uint32{{0xfffffe, 0, 0xffffff, 1}}, []int{0xfe, 0, 0xff, 1}, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := newScriptSource(tc.batches...)
			if tc.name == "wraps at 2^24" { // frames are named by the low byte
				tc.want = []int{0xfe, 0xff, 0, 1}
			}
			s := new(Stats)
			w := newReorderWindow(src.read, s, 5*time.Millisecond, tc.width, 8, 128)
			got := readAll(t, w, tc.outLen)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("delivered %v, want %v", got, tc.want)
			}
			v := s.Snapshot()
			if v.SeqLost != tc.lost || v.Drops[DropSequence] != tc.drops {
				t.Errorf("lost %d, sequence drops %d; want %d, %d", v.SeqLost, v.Drops[DropSequence], tc.lost, tc.drops)
			}
			if v.RxPackets != uint64(len(tc.want)) || v.RxBytes != 60*uint64(len(tc.want)) {
				t.Errorf("rx %d frames %d bytes, want %d frames", v.RxPackets, v.RxBytes, len(tc.want))
			}
		})
	}
}

// TestReorderWindowPassThroughNoCopy: frames in order are the source's
// own, not copies.
func TestReorderWindowPassThroughNoCopy(t *testing.T) {
	src := newScriptSource([]uint32{1, 2, 3})
	w := newReorderWindow(src.read, new(Stats), time.Millisecond, 8, 8, 128)
	out := make([][]byte, 8)
	n, err := w.read(out)
	if err != nil || n != 3 {
		t.Fatalf("read: %d, %v", n, err)
	}
	for i, f := range out[:n] {
		if &f[0] != &src.frames[i+1][0] {
			t.Errorf("frame %d was copied", i)
		}
	}
}

// TestReorderWindowHeldStayValid: frames released from slots in one read
// stay intact until the next read, even when that read's input needs a
// slot again (the slot of number 2 in a window of 2 is reused by 4).
func TestReorderWindowHeldStayValid(t *testing.T) {
	src := newScriptSource([]uint32{1, 3, 2, 5, 4, 6})
	w := newReorderWindow(src.read, new(Stats), time.Millisecond, 2, 8, 128)
	var got []int
	out := make([][]byte, 8)
	for {
		n, err := w.read(out)
		if err != nil {
			break
		}
		for _, f := range out[:n] {
			if !bytes.Equal(f[1:], src.frames[f[0]][1:]) {
				t.Fatalf("frame %d overwritten", f[0])
			}
			got = append(got, int(f[0]))
		}
	}
	if fmt.Sprint(got) != "[1 2 3 4 5 6]" {
		t.Errorf("delivered %v", got)
	}
}

// TestReorderWindowNoAllocs: 0 allocations per read with frames swapped in
// pairs, held and released.
func TestReorderWindowNoAllocs(t *testing.T) {
	next := uint32(0)
	frames := make([][]byte, 64)
	for i := range frames {
		frames[i] = frameOf(i, 1500)
	}
	src := func(in [][]byte, ns []uint32, _ time.Duration) (int, error) {
		for i := range in {
			n := next + uint32(i)
			ns[i] = (n ^ 1) & seqMask // 1 0 3 2 5 4 …
			in[i] = frames[i]
		}
		next += uint32(len(in))
		return len(in), nil
	}
	w := newReorderWindow(src, new(Stats), time.Millisecond, 64, 64, 1536)
	out := make([][]byte, 64)
	if n, _ := w.read(out); n == 0 {
		t.Fatal("nothing delivered")
	}
	if a := testing.AllocsPerRun(1000, func() { _, _ = w.read(out) }); a != 0 {
		t.Errorf("%.1f allocations per read", a)
	}
}

// windowPacket is a UDP L2TPv3 datagram for session with sublayer S|ns and
// a 60-byte frame whose first byte is ns.
func windowPacket(session, ns uint32) []byte {
	p := make([]byte, 12+60)
	binary.BigEndian.PutUint32(p, udpDataWord)
	binary.BigEndian.PutUint32(p[4:], session)
	binary.BigEndian.PutUint32(p[8:], seqS|ns)
	copy(p[12:], frameOf(int(ns), 60))
	p[12] = byte(ns)
	return p
}

// TestTunnelReorder: a session with reorder= puts swapped datagrams back
// in order and gives up a lost one after the timeout, reading its socket
// alone and through the queue of a shared socket alike.
func TestTunnelReorder(t *testing.T) {
	for _, shared := range []bool{false, true} {
		t.Run(fmt.Sprintf("shared=%v", shared), func(t *testing.T) {
			p, q := freePort(t, "127.0.0.1"), freePort(t, "127.0.0.1")
			peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(q)})
			if err != nil {
				t.Fatal(err)
			}
			defer peer.Close()
			tun := udpSession(t, p, q, 0x77, 0x66, ",seq=recv,reorder=30ms")
			if shared {
				udpSession(t, p, q, 0x78, 0x67, "")
				if tun.q.Load() == nil {
					t.Fatal("the session is not on a queue")
				}
			}
			to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(p)}
			for _, ns := range []uint32{1, 3, 2, 4, 6, 7} { // 5 is lost
				if _, err := peer.WriteTo(windowPacket(0x66, ns), to); err != nil {
					t.Fatal(err)
				}
			}
			start := time.Now()
			got := collect(t, tun, 6)
			var order []int
			for _, f := range got {
				order = append(order, int(f[0]))
			}
			if fmt.Sprint(order) != "[1 2 3 4 6 7]" {
				t.Errorf("delivered %v", order)
			}
			if d := time.Since(start); d < 25*time.Millisecond {
				t.Errorf("6 and 7 delivered after %v, before the 30ms timeout", d)
			}
			if v := tun.Stats().Snapshot(); v.SeqLost != 1 || v.RxPackets != 6 || v.Drops[DropSequence] != 0 {
				t.Errorf("stats %s: want 1 lost, 6 received", v)
			}
		})
	}
}

// TestTunnelReorderNoAllocs: 0 allocations per batch of pairwise swapped
// datagrams with the window on, over the socket (read deadlines) and the
// queue of a shared socket (the window's timer).
func TestTunnelReorderNoAllocs(t *testing.T) {
	for _, shared := range []bool{false, true} {
		t.Run(fmt.Sprintf("shared=%v", shared), func(t *testing.T) {
			p, q := freePort(t, "127.0.0.1"), freePort(t, "127.0.0.1")
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(fd)
			lo := [4]byte{127, 0, 0, 1}
			if err := unix.Bind(fd, &unix.SockaddrInet4{Port: int(q), Addr: lo}); err != nil {
				t.Fatal(err)
			}
			if err := unix.Connect(fd, &unix.SockaddrInet4{Port: int(p), Addr: lo}); err != nil {
				t.Fatal(err)
			}
			tun := udpSession(t, p, q, 0x77, 0x66, ",seq=recv,reorder=1s")
			if shared {
				udpSession(t, p, q, 0x78, 0x67, "")
			}
			if _, err := unix.Write(fd, windowPacket(0x66, 0)); err != nil {
				t.Fatal(err)
			}
			pkts := make([][]byte, 1<<12)
			for i := range pkts {
				pkts[i] = windowPacket(0x66, uint32(i^1)+1) // 2 1 4 3 …
			}
			defer time.AfterFunc(10*time.Second, func() { tun.Close() }).Stop()
			out := make([][]byte, 1) // one datagram per read: each even one waits held
			sent, got := -1, 0
			batch := func() {
				for range 16 {
					if _, err := unix.Write(fd, pkts[(sent+1)%len(pkts)]); err != nil {
						t.Fatal(err)
					}
					sent++
				}
				for got < sent {
					n, err := tun.ReadFrames(out)
					if err != nil {
						t.Fatal(err)
					}
					got += n
				}
			}
			batch()
			if a := testing.AllocsPerRun(100, batch); a != 0 {
				t.Errorf("%.1f allocations per batch", a)
			}
			if v := tun.Stats().Snapshot(); v.SeqLost != 0 || v.RxPackets != uint64(got) {
				t.Errorf("stats %s, %d sent", v, sent+1)
			}
		})
	}
}

func TestReorderOptions(t *testing.T) {
	base := "src=127.0.0.1,dst=127.0.0.1,udp,srcport=1,dstport=2,txsession=1"
	for _, tc := range []struct {
		opts    string
		reorder time.Duration
		frames  int
		err     string
	}{
		{",seq=recv,reorder=50", 50 * time.Millisecond, 0, ""},
		{",seq=both,reorder=1.5s,reorder-frames=256", 1500 * time.Millisecond, 256, ""},
		{",reorder=50ms", 0, 0, "reorder=50ms needs seq=recv or seq=both"},
		{",seq=send,reorder=50ms", 0, 0, "needs seq=recv or seq=both"},
		{",seq=recv,reorder-frames=8", 0, 0, "reorder-frames=8 given without reorder=N"},
		{",seq=recv,reorder=5,reorder-frames=1", 0, 0, "reorder-frames=1: must be 2..1024"},
		{",seq=recv,reorder=5,reorder-frames=99999", 0, 0, "must be 2..1024"},
		{",seq=recv,reorder=11s", 0, 0, "reorder=11s: must be 1ms..10s"},
		{",seq=recv,reorder=0", 0, 0, "reorder=0: leave it out"},
		{",seq=recv,reorder=10us", 0, 0, "not a duration of at least 1ms"},
		{",seq=recv,reorder=fast", 0, 0, "not a duration"},
	} {
		c, err := ParseOptions(base + tc.opts)
		if tc.err != "" {
			if err == nil || !bytes.Contains([]byte(err.Error()), []byte(tc.err)) {
				t.Errorf("%s: error %v, want %q", tc.opts, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.opts, err)
			continue
		}
		if c.Reorder != tc.reorder || c.ReorderFrames != tc.frames {
			t.Errorf("%s: reorder %v frames %d", tc.opts, c.Reorder, c.ReorderFrames)
		}
		if back, err := ParseOptions(c.String()); err != nil || back != c {
			t.Errorf("%s: round trip %q: %v", tc.opts, c.String(), err)
		}
	}
}

// BenchmarkReadFramesReorder: 64-byte frames through a tunnel pair with
// seq=both, without the window (the path every other session takes) and
// with it, in order (the window's cost when nothing is late).
func BenchmarkReadFramesReorder(b *testing.B) {
	for _, opts := range []string{",seq=both", ",seq=both,reorder=50"} {
		b.Run(opts[1:], func(b *testing.B) {
			a, r := openPair(b, true, false, opts, TunnelOptions{}, TunnelOptions{})
			frames := make([][]byte, 64)
			for i := range frames {
				frames[i] = append(make([]byte, a.Headroom()), frameOf(i, 64)...)
			}
			sizes := make([]int, 64)
			for i := range sizes {
				sizes[i] = 64
			}
			out := make([][]byte, 64)
			b.SetBytes(64)
			b.ReportAllocs()
			got := 0
			for i := 0; i < b.N; i += 64 {
				if err := a.WriteFrames(frames, sizes, a.Headroom()); err != nil {
					b.Fatal(err)
				}
				for want := min(got+64, b.N); got < want; {
					n, err := r.ReadFrames(out)
					if err != nil {
						b.Fatal(err)
					}
					got += n
				}
			}
		})
	}
}
