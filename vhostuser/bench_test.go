package vhostuser

import (
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/vhostuser/vhosttest"
)

// txBench is a guest that keeps re-posting the same batch of TX frames.
type txBench struct {
	r     *rig
	segs  []vhosttest.Seg
	bufs  [][]byte
	sizes []int
}

// newTXBench prepares batch frames of size bytes in guest memory and the caller's buffers.
func newTXBench(tb testing.TB, batch, size int) *txBench {
	r := newRig(tb, rigOpts{})
	b := &txBench{r: r, sizes: make([]int, batch)}
	for i := range batch {
		a := r.mem.Alloc(uint64(netHdrLen+size), 64)
		copy(r.mem.At(a+netHdrLen, uint64(size)), frame(size, byte(i)))
		b.segs = append(b.segs, vhosttest.Seg{Addr: a, Len: uint32(netHdrLen + size)})
		b.bufs = append(b.bufs, make([]byte, 2048))
	}
	return b
}

// post reclaims the used chains and posts the batch again.
func (b *txBench) post() {
	for {
		if _, _, ok := b.r.tx.PopUsed(); !ok {
			break
		}
	}
	for i := range b.segs {
		b.r.tx.Add(b.segs[i : i+1])
	}
	b.r.tx.PublishKick()
}

// read pops one batch and fails unless it is complete.
func (b *txBench) read(tb testing.TB) {
	n, err := b.r.q.ReadFrames(b.bufs, b.sizes, 0)
	if err != nil || n != len(b.bufs) {
		tb.Fatalf("ReadFrames = %d, %v", n, err)
	}
}

// newTSOBench prepares one TSO super-frame of 45 full 1448-byte segments (64 KiB, what a
// Linux guest sends for bulk TCP) and 64 caller buffers.
func newTSOBench(tb testing.TB) *txBench {
	r := newRig(tb, rigOpts{features: allFeatures | vhosttest.FCsum | vhosttest.FHostTSO4})
	s := superFrame{flags: 16, payload: frame(45*1448, 1), mss: 1448}
	f := append(s.hdr(), s.frame()...)
	a := r.mem.Alloc(uint64(len(f)), 64)
	copy(r.mem.At(a, uint64(len(f))), f)
	b := &txBench{r: r, sizes: make([]int, 45), segs: []vhosttest.Seg{{Addr: a, Len: uint32(len(f))}}}
	for range 45 {
		b.bufs = append(b.bufs, make([]byte, 2048))
	}
	return b
}

// rxBench is a guest that keeps re-posting RX buffers.
type rxBench struct {
	r      *rig
	seg    [1]vhosttest.Seg
	addrOf func(uint16) uint64
	frames [][]byte
}

// newRXBench fills the RX ring with bufSize buffers and prepares batch frames of size bytes.
func newRXBench(tb testing.TB, batch, size, bufSize int) *rxBench {
	r := newRig(tb, rigOpts{})
	b := &rxBench{r: r, addrOf: descAddr(r.mem, r.rx)}
	for r.rx.Free() > 0 {
		a := r.mem.Alloc(uint64(bufSize), 64)
		r.rx.Add([]vhosttest.Seg{{Addr: a, Len: uint32(bufSize), Write: true}})
	}
	r.rx.Publish()
	b.seg[0] = vhosttest.Seg{Len: uint32(bufSize), Write: true}
	for i := range batch {
		b.frames = append(b.frames, frame(size, byte(i)))
	}
	return b
}

// recycle returns every used buffer to the avail ring.
func (b *rxBench) recycle() {
	for {
		id, _, ok := b.r.rx.PopUsed()
		if !ok {
			break
		}
		b.seg[0].Addr = b.addrOf(id)
		b.r.rx.Add(b.seg[:])
	}
	b.r.rx.PublishKick()
}

// BenchmarkReadFrames pops batches of 32 1500-byte frames from the guest's TX ring.
func BenchmarkReadFrames(b *testing.B) {
	benchRead(b, newTXBench(b, 32, 1500), 32, 32*1500)
}

// benchRead posts and reads t's batch in a loop: frames frames and bytes bytes each time.
func benchRead(b *testing.B, t *txBench, frames, bytes int64) {
	b.ReportAllocs()
	b.SetBytes(bytes)
	start := time.Now()
	for b.Loop() {
		t.post()
		t.read(b)
	}
	b.ReportMetric(float64(frames*int64(b.N))/time.Since(start).Seconds()/1e6, "Mframes/s")
}

// BenchmarkReadFramesTSO cuts 64 KiB TSO super-frames into 45 segments each (IPv4 and TCP
// checksums computed in software); compare its Mframes/s with BenchmarkReadFrames.
func BenchmarkReadFramesTSO(b *testing.B) {
	benchRead(b, newTSOBench(b), 45, 45*1448)
}

// BenchmarkWriteFrames delivers batches of 32 1500-byte frames into 2 KiB RX buffers.
func BenchmarkWriteFrames(b *testing.B) {
	benchWrite(b, 1500, 2048)
}

// BenchmarkWriteFrames9000 delivers 9000-byte frames over 1536-byte mergeable buffers.
func BenchmarkWriteFrames9000(b *testing.B) {
	benchWrite(b, 9000, 1536)
}

// benchWrite is the body of the WriteFrames benchmarks.
func benchWrite(b *testing.B, size, bufSize int) {
	batch := 32
	if size > 4096 {
		batch = 8
	}
	t := newRXBench(b, batch, size, bufSize)
	b.ReportAllocs()
	b.SetBytes(int64(batch * size))
	start := time.Now()
	for b.Loop() {
		t.recycle()
		if err := t.r.q.WriteFrames(t.frames); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(batch*b.N)/time.Since(start).Seconds()/1e6, "Mframes/s")
}

// BenchmarkReadFramesWake measures a ReadFrames that parks on the kick eventfd and is
// woken by the guest: one frame per round trip through the netpoller.
func BenchmarkReadFramesWake(b *testing.B) {
	t := newTXBench(b, 1, 64)
	stop := make(chan struct{})
	go t.kicker(stop, t.r.q.tx.stats.waits.Load())
	defer close(stop)
	b.ReportAllocs()
	for b.Loop() {
		t.read(b)
	}
}

// kicker waits for the reader to park (its wait counter moves past seen), then posts a
// frame and kicks; it allocates nothing.
func (b *txBench) kicker(stop chan struct{}, seen uint64) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		w := b.r.q.tx.stats.waits.Load()
		if w == seen {
			// Sleep rather than spin: under AllocsPerRun's GOMAXPROCS(1) a spinning
			// goroutine would leave the netpoller to sysmon's 10 ms poll.
			time.Sleep(time.Microsecond)
			continue
		}
		seen = w
		b.post()
	}
}

// TestZeroAllocs proves the steady-state data path allocates nothing: batched reads,
// batched and mergeable writes, and a read that parks in the netpoller and is woken.
func TestZeroAllocs(t *testing.T) {
	tx := newTXBench(t, 32, 1500)
	if a := testing.AllocsPerRun(100, func() { tx.post(); tx.read(t) }); a != 0 {
		t.Errorf("ReadFrames: %v allocs per batch", a)
	}
	tso := newTSOBench(t)
	if a := testing.AllocsPerRun(100, func() { tso.post(); tso.read(t) }); a != 0 {
		t.Errorf("ReadFrames with TSO: %v allocs per super-frame", a)
	}
	for _, size := range []int{1500, 9000, 65000} {
		rx := newRXBench(t, 4, size, 1536)
		if a := testing.AllocsPerRun(100, func() {
			rx.recycle()
			if err := rx.r.q.WriteFrames(rx.frames); err != nil {
				t.Fatal(err)
			}
		}); a != 0 {
			t.Errorf("WriteFrames(%d): %v allocs per batch", size, a)
		}
	}
	wake := newTXBench(t, 1, 64)
	stop := make(chan struct{})
	go wake.kicker(stop, wake.r.q.tx.stats.waits.Load())
	defer close(stop)
	wake.read(t) // first park: runtime timers and poll descriptors are set up here
	if a := testing.AllocsPerRun(100, func() { wake.read(t) }); a != 0 {
		t.Errorf("parked ReadFrames: %v allocs per wake-up", a)
	}
}
