package l2tp

import (
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// sharedBench is N sidecar sessions on one UDP port (N = 0: one unshared
// tunnel, today's port) fed by N peer sessions on one peer port, each
// sidecar session read by a goroutine of its own as a port's pump does.
type sharedBench struct {
	s, k     []*Tunnel
	got      []atomic.Int64 // frames each session delivered
	total    atomic.Int64
	progress chan struct{}
	bufs     [][]byte
	sizes    []int
}

func newSharedBench(b *testing.B, sessions, size int, ports bool) *sharedBench {
	n := max(sessions, 1)
	p, q := freePort(b, "127.0.0.1"), freePort(b, "127.0.0.1")
	base := 0x8000 + rand.Uint32N(1<<20)
	r := &sharedBench{got: make([]atomic.Int64, n), progress: make(chan struct{}, 1)}
	for i := range n {
		if ports && i > 0 { // unshared: a port pair of its own
			p, q = freePort(b, "127.0.0.1"), freePort(b, "127.0.0.1")
		}
		mine, theirs := base+uint32(i), base+0x1000+uint32(i)
		r.s = append(r.s, udpSession(b, p, q, theirs, mine, ""))
		r.k = append(r.k, udpSession(b, q, p, mine, theirs, ""))
	}
	if sessions > 0 && !ports && r.s[0].Sessions() != n {
		b.Fatalf("%d sessions on the socket, want %d", r.s[0].Sessions(), n)
	}
	for i := range n {
		go r.read(i)
	}
	off := r.k[0].Headroom()
	for range 64 {
		r.bufs = append(r.bufs, make([]byte, off+size))
		r.sizes = append(r.sizes, size)
	}
	return r
}

// read counts what session i delivers until it closes.
func (r *sharedBench) read(i int) {
	frames := make([][]byte, 64)
	for {
		n, err := r.s[i].ReadFrames(frames)
		if err != nil {
			return
		}
		r.got[i].Add(int64(n))
		r.total.Add(int64(n))
		select {
		case r.progress <- struct{}{}:
		default:
		}
	}
}

// send writes frames batches of 64, session after session; with window > 0
// it keeps at most window frames in flight (lossless), else it floods.
func (r *sharedBench) send(b *testing.B, frames, window int) {
	off := r.k[0].Headroom()
	sent := int(r.total.Load())
	for i, end := 0, sent+frames; sent < end; i++ {
		for window > 0 && sent-int(r.total.Load()) > window {
			select {
			case <-r.progress:
			case <-time.After(time.Second):
				b.Fatalf("no progress: %d sent, %d delivered", sent, r.total.Load())
			}
		}
		k := min(64, end-sent)
		if err := r.k[i%len(r.k)].WriteFrames(r.bufs[:k], r.sizes[:k], off); err != nil {
			b.Fatal(err)
		}
		sent += k
	}
}

// wait waits for want frames in all (or 200 ms without progress).
func (r *sharedBench) wait(want int64) {
	last, at := r.total.Load(), time.Now()
	for r.total.Load() < want && time.Since(at) < 200*time.Millisecond {
		time.Sleep(100 * time.Microsecond)
		if n := r.total.Load(); n != last {
			last, at = n, time.Now()
		}
	}
}

// cpuTime is the process's user and system CPU time so far: on a shared
// machine, CPU per frame says more than frames per second.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// jain is Jain's fairness index of the sessions' deliveries since before:
// 1 when all got the same, 1/N when one got everything.
func (r *sharedBench) jain(before []int64) float64 {
	var sum, sq float64
	for i := range r.got {
		x := float64(r.got[i].Load() - before[i])
		sum += x
		sq += x * x
	}
	if sq == 0 {
		return 0
	}
	return sum * sum / (float64(len(r.got)) * sq)
}

// BenchmarkSharedTunnel: frames from peer sessions to sidecar sessions of
// one tunnel over loopback UDP, each session read by its own goroutine.
// "port" is today's unshared tunnel in the same harness; sessions=1 is a
// shared socket with one session (it reads the socket itself); 8 and 64
// go through the demultiplexer and the session queues; ports=8 is eight
// unshared tunnels on eight ports, the same load spread the old way. window: at most 512
// frames in flight (lossless: the aggregate rate); flood: the peers send
// flat out and the sessions' shares of what arrives give the fairness
// (Jain's index, 1 = equal). One op = one frame.
func BenchmarkSharedTunnel(b *testing.B) {
	for _, mode := range []string{"window", "flood"} {
		for _, size := range []int{64, 1500} {
			for _, sessions := range []int{0, 1, 8, 64} {
				name := fmt.Sprintf("%s/%dB/sessions=%d", mode, size, sessions)
				if sessions == 0 {
					name = fmt.Sprintf("%s/%dB/port", mode, size)
				}
				b.Run(name, func(b *testing.B) { benchShared(b, mode, size, sessions, false) })
			}
			b.Run(fmt.Sprintf("%s/%dB/ports=8", mode, size), func(b *testing.B) { benchShared(b, mode, size, 8, true) })
		}
	}
}

func benchShared(b *testing.B, mode string, size, sessions int, ports bool) {
	r := newSharedBench(b, sessions, size, ports)
	window := 512
	if mode == "flood" {
		window = 0
	}
	r.send(b, 1024, 512) // warm up
	r.wait(1024)
	before := make([]int64, len(r.got))
	for i := range r.got {
		before[i] = r.got[i].Load()
	}
	start := r.total.Load()
	b.ReportAllocs()
	b.SetBytes(int64(size))
	cpu0 := cpuTime()
	b.ResetTimer()
	r.send(b, b.N, window)
	r.wait(start + int64(b.N))
	b.StopTimer()
	cpu := cpuTime() - cpu0
	got := r.total.Load() - start
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(got), "cpu-ns/frame")
	b.ReportMetric(float64(got)/b.Elapsed().Seconds(), "frames/s")
	b.ReportMetric(float64(got)/float64(b.N), "delivered")
	b.ReportMetric(r.jain(before), "jain")
	var slow uint64
	for _, s := range r.s {
		slow += s.Stats().Snapshot().Drops[DropVMSlow]
	}
	b.ReportMetric(float64(slow)/float64(b.N), "vm_slow/op")
}
