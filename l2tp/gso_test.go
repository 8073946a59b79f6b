package l2tp

import (
	"bytes"
	"slices"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestGSORun checks how packets are grouped: equal sizes, one shorter last
// packet, the segment and byte limits, and packets too big for a segment.
func TestGSORun(t *testing.T) {
	cases := []struct {
		name         string
		sizes        []int
		gsoMax, maxP int
		want         []int
	}{
		{"equal", []int{80, 80, 80, 80}, 1472, 65507, []int{4}},
		{"shorter last ends the run", []int{80, 80, 50, 80}, 1472, 65507, []int{3, 1}},
		{"larger starts a new run", []int{50, 80, 80}, 1472, 65507, []int{1, 2}},
		{"off", []int{80, 80, 80}, 0, 65507, []int{1, 1, 1}},
		{"too big for a segment", []int{1500, 1500}, 1472, 65507, []int{1, 1}},
		{"byte limit", []int{1000, 1000, 1000, 1000}, 1472, 2500, []int{2, 2}},
		{"segment limit", slices.Repeat([]int{64}, 70), 1472, 65507, []int{64, 6}},
	}
	for _, c := range cases {
		iovs := make([]unix.Iovec, len(c.sizes))
		for i, s := range c.sizes {
			iovs[i].SetLen(s)
		}
		var got []int
		for i := 0; i < len(iovs); {
			k := gsoRun(iovs, i, len(iovs), c.gsoMax, c.maxP)
			got = append(got, k)
			i += k
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("%s: runs %v, want %v", c.name, got, c.want)
		}
	}
}

// countMessages wraps tun's sendmmsg to record how many packets each sent
// message carried.
func countMessages(tun *Tunnel) *[]int {
	var per []int
	tun.tx.sendFn = func(fd uintptr, msgs []mmsghdr) (int, unix.Errno) {
		n, errno := sendmmsg(fd, msgs)
		for _, m := range msgs[:n] {
			per = append(per, int(m.Hdr.Iovlen))
		}
		return n, errno
	}
	return &per
}

// TestGSOLoopback sends runs of equal frames (and a mix) over UDP, IPv4
// and IPv6, with RFC sequencing on: they leave as GSO messages and arrive
// as the same datagrams, in order, every sequence number accepted.
func TestGSOLoopback(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		a, b := openPair(t, true, v6, ",seq=both", TunnelOptions{BatchSize: 64}, TunnelOptions{BatchSize: 64})
		if a.tx.gsoMax == 0 {
			t.Skip("UDP_SEGMENT not available on this kernel")
		}
		per := countMessages(a)
		var frames [][]byte
		for i := range 100 {
			frames = append(frames, frameOf(i, 64))
		}
		for i := range 30 {
			frames = append(frames, frameOf(100+i, 1400))
		}
		for i := range 20 {
			frames = append(frames, frameOf(200+i, 60+i%3))
		}
		send(t, a, frames...)
		got := collect(t, b, len(frames))
		for i := range frames {
			if !bytes.Equal(got[i], frames[i]) {
				t.Fatalf("v6=%v: frame %d differs", v6, i)
			}
		}
		if slices.Max(*per) < 2 || len(*per) >= len(frames)/2 {
			t.Fatalf("v6=%v: packets per message %v: no GSO runs", v6, *per)
		}
		s, r := a.Stats().Snapshot(), b.Stats().Snapshot()
		if s.TxPackets != uint64(len(frames)) || r.RxPackets != uint64(len(frames)) || r.Dropped() != 0 {
			t.Fatalf("v6=%v: sent %s / received %s", v6, s, r)
		}
	}
}

// TestGSOFallback: when the kernel refuses a GSO message (EINVAL: the
// route's MTU shrank), the run and everything after it go out one by one,
// nothing is lost or counted as an error.
func TestGSOFallback(t *testing.T) {
	a, b := openPair(t, true, false, "", TunnelOptions{BatchSize: 32}, TunnelOptions{})
	if a.tx.gsoMax == 0 {
		t.Skip("UDP_SEGMENT not available on this kernel")
	}
	a.tx.sendFn = func(fd uintptr, msgs []mmsghdr) (int, unix.Errno) {
		for i, m := range msgs {
			if m.Hdr.Controllen != 0 {
				if i == 0 {
					return 0, unix.EINVAL
				}
				return sendmmsg(fd, msgs[:i])
			}
		}
		return sendmmsg(fd, msgs)
	}
	var frames [][]byte
	for i := range 50 {
		frames = append(frames, frameOf(i, 100))
	}
	send(t, a, frames...)
	got := collect(t, b, len(frames))
	for i := range frames {
		if !bytes.Equal(got[i], frames[i]) {
			t.Fatalf("frame %d differs", i)
		}
	}
	if s := a.Stats().Snapshot(); s.Dropped() != 0 || s.TxPackets != 50 || a.tx.gsoMax != 0 {
		t.Fatalf("stats %s, gsoMax %d", s, a.tx.gsoMax)
	}
}

// TestGSOComesBack: while the kernel refuses GSO messages (EINVAL, EPERM:
// a firewall reloading), each batch falls back to one by one, counted, and
// nothing is lost; once it takes them again, GSO is probed again after the
// back-off and used: it is not off for the life of the tunnel.
func TestGSOComesBack(t *testing.T) {
	a, b := openPair(t, true, false, "", TunnelOptions{BatchSize: 32}, TunnelOptions{BatchSize: 64})
	if a.tx.gsoMax == 0 {
		t.Skip("UDP_SEGMENT not available on this kernel")
	}
	refuse := true
	var gsoSent int
	a.tx.sendFn = func(fd uintptr, msgs []mmsghdr) (int, unix.Errno) {
		for i, m := range msgs {
			if m.Hdr.Controllen != 0 && refuse {
				if i == 0 {
					return 0, unix.EPERM
				}
				return sendmmsg(fd, msgs[:i])
			}
		}
		n, errno := sendmmsg(fd, msgs)
		for _, m := range msgs[:n] {
			if m.Hdr.Controllen != 0 {
				gsoSent++
			}
		}
		return n, errno
	}
	batch := func(from int) [][]byte {
		var frames [][]byte
		for i := range 32 {
			frames = append(frames, frameOf(from+i, 100))
		}
		return frames
	}
	var all [][]byte
	for i := range 3 { // refused: one fallback, then one by one during the back-off
		f := batch(32 * i)
		send(t, a, f...)
		all = append(all, f...)
	}
	if s := a.Stats().Snapshot(); s.GSOFallbacks != 1 || s.Dropped() != 0 || s.GSOPackets != 0 {
		t.Fatalf("while refused: %s", s)
	}
	refuse = false
	time.Sleep(gsoBackoffMin + 50*time.Millisecond)
	f := batch(96)
	send(t, a, f...)
	all = append(all, f...)
	got := collect(t, b, len(all))
	for i := range all {
		if !bytes.Equal(got[i], all[i]) {
			t.Fatalf("frame %d lost or out of order", i)
		}
	}
	s := a.Stats().Snapshot()
	if gsoSent == 0 || s.GSOPackets == 0 || s.TxPackets != uint64(len(all)) {
		t.Fatalf("after the back-off: %d GSO messages; %s", gsoSent, s)
	}
}

// TestGSONoAllocs: a GSO batch allocates nothing.
func TestGSONoAllocs(t *testing.T) {
	a, b := openPair(t, true, false, "", TunnelOptions{BatchSize: 64}, TunnelOptions{BatchSize: 64})
	off := a.Headroom()
	bufs, sizes := make([][]byte, 64), make([]int, 64)
	for i := range bufs {
		bufs[i] = make([]byte, off+64)
		sizes[i] = 64
	}
	frames := make([][]byte, 64)
	allocs := testing.AllocsPerRun(50, func() {
		if err := a.WriteFrames(bufs, sizes, off); err != nil {
			t.Fatal(err)
		}
		for got := 0; got < 64; {
			n, err := b.ReadFrames(frames)
			if err != nil {
				t.Fatal(err)
			}
			got += n
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocs per batch", allocs)
	}
}

// BenchmarkWriteFramesGSO sends 64-frame batches over loopback UDP with and
// without GSO; a reader drains the peer so the socket never fills.
func BenchmarkWriteFramesGSO(b *testing.B) {
	for _, size := range []int{64, 1400} {
		for _, gso := range []bool{false, true} {
			name := map[bool]string{false: "plain", true: "gso"}[gso]
			b.Run(name+"/"+strconv.Itoa(size), func(b *testing.B) {
				tx, rx := openPair(b, true, false, "", TunnelOptions{BatchSize: 64}, TunnelOptions{BatchSize: 64})
				if !gso {
					tx.tx.gsoMax = 0
				}
				go func() {
					frames := make([][]byte, 64)
					for {
						if _, err := rx.ReadFrames(frames); err != nil {
							return
						}
					}
				}()
				off := tx.Headroom()
				bufs, sizes := make([][]byte, 64), make([]int, 64)
				for i := range bufs {
					bufs[i], sizes[i] = make([]byte, off+size), size
				}
				b.SetBytes(int64(64 * size))
				b.ReportAllocs()
				for b.Loop() {
					if err := tx.WriteFrames(bufs, sizes, off); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(64*b.N)/b.Elapsed().Seconds()/1e6, "Mpps")
			})
		}
	}
}

// TestGROSplit: a GSO run sent over loopback reaches the receiving tunnel
// as one coalesced datagram (UDP_GRO); ReadFrames splits it into its
// frames, in order, across calls when frames has less room than the run.
func TestGROSplit(t *testing.T) {
	a, b := openPair(t, true, false, ",seq=both", TunnelOptions{BatchSize: 64}, TunnelOptions{BatchSize: 64})
	if a.tx.gsoMax == 0 {
		t.Skip("UDP_SEGMENT not available on this kernel")
	}
	var frames [][]byte
	for i := range 64 {
		frames = append(frames, frameOf(i, 200))
	}
	send(t, a, frames...)
	out := make([][]byte, 10)
	var got [][]byte
	coalesced := false
	for len(got) < len(frames) {
		n, err := b.ReadFrames(out)
		if err != nil {
			t.Fatal(err)
		}
		if b.rx.got < n || b.rx.nextAt > 0 {
			coalesced = true
		}
		for _, f := range out[:n] {
			got = append(got, bytes.Clone(f))
		}
	}
	for i := range frames {
		if !bytes.Equal(got[i], frames[i]) {
			t.Fatalf("frame %d differs", i)
		}
	}
	if !coalesced {
		t.Fatal("no coalesced datagram was received: UDP_GRO not in effect")
	}
	if s := b.Stats().Snapshot(); s.RxPackets != 64 || s.Dropped() != 0 {
		t.Fatalf("stats %s", s)
	}
}
