package l2tp

import (
	"testing"
)

// benchConfig is UDP with the default sublayer and sequence numbers both
// ways, a 32-bit cookie: the per-packet work is all there.
func benchConfig() Config { return seqConfig(SeqBoth) }

// BenchmarkEncap measures writing one header in front of a 1500-byte frame.
func BenchmarkEncap(b *testing.B) {
	e := NewEncoder(benchConfig())
	buf := make([]byte, 64+1500)
	b.ReportAllocs()
	b.SetBytes(1500)
	for b.Loop() {
		e.Encap(buf, 64, 1500)
	}
}

// BenchmarkDecap measures checking and stripping one header.
func BenchmarkDecap(b *testing.B) {
	c := benchConfig()
	e, d := NewEncoder(c), NewDecoder(c, nil)
	buf := make([]byte, 64+1500)
	pkt := e.Encap(buf, 64, 1500)
	ns := uint32(0)
	b.ReportAllocs()
	b.SetBytes(1500)
	for b.Loop() {
		pkt[12], pkt[13], pkt[14], pkt[15] = 0x40, byte(ns>>16), byte(ns>>8), byte(ns)
		ns++
		if _, _, ok := d.Decap(pkt); !ok {
			b.Fatal("dropped")
		}
	}
}

// ring moves one batch of n frames of size bytes from a to b over loopback:
// one WriteFrames, then ReadFrames until all n arrived.
type ring struct {
	a, b   *Tunnel
	bufs   [][]byte
	sizes  []int
	frames [][]byte
}

// newRing opens a UDP/IPv4 tunnel pair and preallocates a batch.
func newRing(tb testing.TB, n, size int) *ring {
	a, b := openPair(tb, true, false, ",seq=both", TunnelOptions{BatchSize: n}, TunnelOptions{BatchSize: n})
	r := &ring{a: a, b: b, frames: make([][]byte, n)}
	for range n {
		r.bufs = append(r.bufs, make([]byte, a.Headroom()+size))
		r.sizes = append(r.sizes, size)
	}
	return r
}

// run moves one batch and fails on loss.
func (r *ring) run(tb testing.TB) {
	if err := r.a.WriteFrames(r.bufs, r.sizes, r.a.Headroom()); err != nil {
		tb.Fatal(err)
	}
	for got := 0; got < len(r.bufs); {
		n, err := r.b.ReadFrames(r.frames)
		if err != nil {
			tb.Fatal(err)
		}
		got += n
	}
}

// BenchmarkRing measures WriteFrames + ReadFrames of 64 frames over
// loopback UDP (one op = one batch).
func BenchmarkRing(b *testing.B) {
	for _, size := range []int{64, 1500} {
		b.Run(map[int]string{64: "64B", 1500: "1500B"}[size], func(b *testing.B) {
			r := newRing(b, 64, size)
			r.run(b)
			b.ReportAllocs()
			b.SetBytes(int64(64 * size))
			for b.Loop() {
				r.run(b)
			}
			b.ReportMetric(float64(b.N*64)/b.Elapsed().Seconds(), "frames/s")
		})
	}
}

// TestRingAllocs proves the socket paths allocate nothing in steady state.
func TestRingAllocs(t *testing.T) {
	r := newRing(t, 64, 1500)
	if n := testing.AllocsPerRun(50, func() { r.run(t) }); n != 0 {
		t.Fatalf("%v allocations per batch", n)
	}
}
