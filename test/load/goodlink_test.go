package load

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/l2tp"
)

// goodLink carries sequence-numbered frames both ways through one port
// (peer → VM and VM → peer) until stopped, and checks that every frame
// arrives once and in order. With a window, at most that many frames are
// in flight in that direction, so no socket ever overflows and "all
// delivered" is exact; without one (0), the sender runs flat out and the
// receiver counts the gaps, to be matched against the kernel's drop
// counters. A gap is only exactly accountable when every datagram holds one
// frame: the peer's sender sends runs of equal-size frames as one UDP GSO
// message, which the port's socket (UDP_GRO) queues, and drops, as one; so
// a flat-out peer → VM sender grows each frame of a batch by a byte
// (strictly increasing sizes never form a GSO run).
type goodLink struct {
	vm       *vmConn
	peer     *l2tp.Tunnel
	stream   uint32
	size     int
	winToVM  uint64 // frames in flight peer → VM at most; 0: flat out
	winToNet uint64 // frames in flight VM → peer at most; 0: flat out
	dirs     direction

	toVMSent, toVMGot, toVMLost    atomic.Uint64
	toNetSent, toNetGot, toNetLost atomic.Uint64

	stop chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex // guards err
	err  error      // the first disorder seen
}

// direction selects the directions a goodLink sends in.
type direction int

// The directions: peer → VM, VM → peer, or both.
const (
	toVM direction = 1 << iota
	toNet
	bothWays = toVM | toNet
)

// startGoodLink starts a link's goroutines: a sender per direction asked
// for, and both receivers, which end when the VM connection or the peer
// closes.
func startGoodLink(vm *vmConn, peer *l2tp.Tunnel, stream uint32, size int, winToVM, winToNet uint64, dirs direction) *goodLink {
	g := &goodLink{vm: vm, peer: peer, stream: stream, size: size, winToVM: winToVM, winToNet: winToNet,
		dirs: dirs, stop: make(chan struct{})}
	go g.vm.readLoop(func(f []byte) { g.check("to VM", f, &g.toVMGot, &g.toVMLost) })
	go g.readPeer()
	if dirs&toVM != 0 {
		g.wg.Add(1)
		go g.sendToVM()
	}
	if dirs&toNet != 0 {
		g.wg.Add(1)
		go g.sendToNet()
	}
	return g
}

// check verifies one received frame: ours, good, and no older than the
// next expected (a gap is counted as lost, an old or repeated one is an error).
func (g *goodLink) check(dir string, f []byte, got, lost *atomic.Uint64) {
	kind, stream, seq, ok := parseFrame(f)
	next := got.Load() + lost.Load()
	switch {
	case !ok || kind != kindGood || stream != g.stream:
		g.fail(fmt.Errorf("stream %d %s: foreign frame (kind %#x stream %d, %d bytes)", g.stream, dir, kind, stream, len(f)))
	case seq < next:
		g.fail(fmt.Errorf("stream %d %s: frame %d after %d (reordered or duplicated)", g.stream, dir, seq, next))
	default:
		lost.Add(seq - next)
	}
	got.Add(1)
}

// fail records the first error.
func (g *goodLink) fail(err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err == nil {
		g.err = err
	}
}

// readPeer receives the VM's frames at the peer.
func (g *goodLink) readPeer() {
	frames := make([][]byte, g.peer.BatchSize())
	for {
		n, err := g.peer.ReadFrames(frames)
		if err != nil {
			return
		}
		for _, f := range frames[:n] {
			g.check("to network", f, &g.toNetGot, &g.toNetLost)
		}
	}
}

// room waits until window allows more frames in flight and returns how
// many (at most max); 0 once stopped.
func (g *goodLink) room(window uint64, sent *atomic.Uint64, got, lost *atomic.Uint64, max int) int {
	for {
		select {
		case <-g.stop:
			return 0
		default:
		}
		if window == 0 {
			return max
		}
		inFlight := sent.Load() - got.Load() - lost.Load()
		if inFlight < window {
			return int(min(uint64(max), window-inFlight))
		}
		time.Sleep(50 * time.Microsecond)
	}
}

// sendToVM sends peer → VM frames until stopped.
func (g *goodLink) sendToVM() {
	defer g.wg.Done()
	b := newFrameBatch(32, g.peer.Headroom(), g.size+31)
	for i := range b.sizes {
		b.sizes[i] = g.size
		if g.winToVM == 0 {
			b.sizes[i] += i // no GSO runs: see goodLink
		}
	}
	for {
		n := g.room(g.winToVM, &g.toVMSent, &g.toVMGot, &g.toVMLost, 32)
		if n == 0 {
			return
		}
		if err := b.sendSeq(g.peer, g.stream, g.toVMSent.Load(), n); err != nil {
			if !isClosed(err) {
				g.fail(fmt.Errorf("stream %d: peer send: %w", g.stream, err))
			}
			return
		}
		g.toVMSent.Add(uint64(n))
	}
}

// sendToNet sends VM → peer frames until stopped.
func (g *goodLink) sendToNet() {
	defer g.wg.Done()
	frames := make([][]byte, 32)
	for i := range frames {
		frames[i] = make([]byte, g.size)
	}
	for {
		n := g.room(g.winToNet, &g.toNetSent, &g.toNetGot, &g.toNetLost, 32)
		if n == 0 {
			return
		}
		seq := g.toNetSent.Load()
		for i := range n {
			putFrame(frames[i], kindGood, g.stream, seq+uint64(i))
		}
		if err := g.vm.write(frames[:n]); err != nil {
			if !isClosed(err) {
				g.fail(fmt.Errorf("stream %d: VM write: %w", g.stream, err))
			}
			return
		}
		g.toNetSent.Add(uint64(n))
	}
}

// halt stops the senders and waits for them.
func (g *goodLink) halt() {
	close(g.stop)
	g.wg.Wait()
}

// drain waits, after halt, until what is in flight has arrived or is gone
// and returns the first error seen. A windowed direction loses nothing, so
// it waits for all of it (a quiet spell alone ended too early when the
// daemon stalled for 300 ms on a loaded machine); then for the receivers to
// stop moving.
func (g *goodLink) drain(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	waitFor(timeout, func() bool {
		return (g.winToVM == 0 || g.toVMGot.Load()+g.toVMLost.Load() == g.toVMSent.Load()) &&
			(g.winToNet == 0 || g.toNetGot.Load()+g.toNetLost.Load() == g.toNetSent.Load())
	})
	settle(300*time.Millisecond, time.Until(deadline), func() uint64 {
		return g.toVMGot.Load() + g.toNetGot.Load()
	})
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err
}

// tally is the link's counts at one moment.
type tally struct{ toVMSent, toVMGot, toVMLost, toNetSent, toNetGot, toNetLost uint64 }

// counts reads the link's counters.
func (g *goodLink) counts() tally {
	return tally{g.toVMSent.Load(), g.toVMGot.Load(), g.toVMLost.Load(),
		g.toNetSent.Load(), g.toNetGot.Load(), g.toNetLost.Load()}
}

// requireAll fails the test unless every frame sent either way arrived.
func (g *goodLink) requireAll(t testing.TB) tally {
	t.Helper()
	c := g.counts()
	if c.toVMGot != c.toVMSent || c.toNetGot != c.toNetSent || c.toVMLost+c.toNetLost != 0 {
		t.Errorf("stream %d: to VM %d of %d (lost %d), to network %d of %d (lost %d)", g.stream,
			c.toVMGot, c.toVMSent, c.toVMLost, c.toNetGot, c.toNetSent, c.toNetLost)
	}
	return c
}

// tail sends one more frame each way, once the senders have halted and
// drained, and waits for both: a socket's drop count reaches its reader
// only on a packet received after the drops (SO_RXQ_OVFL), so this makes
// the kernel counters final.
func (g *goodLink) tail(t testing.TB) {
	t.Helper()
	b := newFrameBatch(1, g.peer.Headroom(), g.size)
	if err := b.sendSeq(g.peer, g.stream, g.toVMSent.Load(), 1); err != nil {
		t.Fatalf("stream %d: tail to VM: %v", g.stream, err)
	}
	g.toVMSent.Add(1)
	f := make([]byte, g.size)
	putFrame(f, kindGood, g.stream, g.toNetSent.Load())
	if err := g.vm.write([][]byte{f}); err != nil {
		t.Fatalf("stream %d: tail to network: %v", g.stream, err)
	}
	g.toNetSent.Add(1)
	arrived := func() bool {
		return g.toVMGot.Load()+g.toVMLost.Load() == g.toVMSent.Load() &&
			g.toNetGot.Load()+g.toNetLost.Load() == g.toNetSent.Load()
	}
	if !waitFor(10*time.Second, arrived) {
		t.Errorf("stream %d: the tail frames did not arrive: %+v", g.stream, g.counts())
	}
}
