package pump

import (
	"encoding/binary"
	"sync/atomic"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/impair"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/l2tp"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/pump/pumptest"
)

// dropCounts records a pump's drops by reason, both directions apart.
type dropCounts struct{ rx, tx [l2tp.NumDrops]atomic.Uint64 }

// wirePump is a one-queue pump over fn and q with its drops counted.
func wirePump(t *testing.T, fn *pumptest.Net, q *fakeQueue) (*Pump, *dropCounts) {
	t.Helper()
	p := startQueues(t, fn, q)
	c := &dropCounts{}
	p.CountDropsWith(func(r l2tp.Drop, n uint64) { c.rx[r].Add(n) }, func(r l2tp.Drop, n uint64) { c.tx[r].Add(n) })
	go p.RunNetToVM()
	t.Cleanup(p.CloseWires)
	return p, c
}

// setWire sets a direction or fails the test.
func setWire(t *testing.T, p *Pump, d Direction, down bool, spec string) {
	t.Helper()
	s, err := impair.Parse(spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.SetWire(d, WireState{Down: down, Spec: s}); err != nil {
		t.Fatal(err)
	}
}

// numbered is a batch of n 100-byte frames numbered from first.
func numbered(first, n int) [][]byte {
	b := make([][]byte, n)
	for i := range b {
		b[i] = pumptest.FrameN(first+i, 100)
	}
	return b
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// inOrder fails unless frames carry the numbers 0..len-1.
func inOrder(t *testing.T, frames [][]byte) {
	t.Helper()
	for i, f := range frames {
		if n := binary.BigEndian.Uint32(f); n != uint32(i) {
			t.Fatalf("frame %d carries %d", i, n)
		}
	}
}

func TestWireLinkDownDropsAndCounts(t *testing.T) {
	fn, q := pumptest.NewNet(), newFakeQueue(true)
	defer close(fn.Closed)
	p, c := wirePump(t, fn, q)
	setWire(t, p, ToNetwork, true, "")
	setWire(t, p, ToVM, true, "")
	q.in <- numbered(0, 10)
	fn.In <- numbered(0, 7)
	waitFor(t, "link_down drops", func() bool {
		return c.tx[l2tp.DropLinkDown].Load() == 10 && c.rx[l2tp.DropLinkDown].Load() == 7
	})
	if fn.SentCount() != 0 || len(q.received()) != 0 {
		t.Fatalf("frames passed a cut link: %d sent, %d delivered", fn.SentCount(), len(q.received()))
	}
	setWire(t, p, ToNetwork, false, "")
	setWire(t, p, ToVM, false, "")
	if p.wires.dir[ToNetwork].Load() != nil || p.wires.dir[ToVM].Load() != nil {
		t.Error("a wire set back up without impairments is not the plain (nil) wire")
	}
	q.in <- numbered(0, 5)
	fn.In <- numbered(0, 3)
	waitFor(t, "frames after link up", func() bool { return fn.SentCount() == 5 && len(q.received()) == 3 })
}

func TestWireOneDirectionDown(t *testing.T) {
	fn, q := pumptest.NewNet(), newFakeQueue(true)
	defer close(fn.Closed)
	p, c := wirePump(t, fn, q)
	setWire(t, p, ToVM, true, "")
	q.in <- numbered(0, 4)
	fn.In <- numbered(0, 6)
	waitFor(t, "to_network frames and to_vm drops", func() bool {
		return fn.SentCount() == 4 && c.rx[l2tp.DropLinkDown].Load() == 6
	})
	if c.tx[l2tp.DropLinkDown].Load() != 0 {
		t.Error("to_network counted link_down while only to_vm was cut")
	}
}

// Changing and clearing impairments while frames flow loses and reorders
// nothing (specs without loss or jitter).
func TestWireChangesKeepEveryFrameInOrder(t *testing.T) {
	fn, q := pumptest.NewNet(), newFakeQueue(true)
	defer close(fn.Closed)
	p, _ := wirePump(t, fn, q)
	const batches, size = 100, 30
	specs := []string{"delay 5ms", "rate 100mbit", "delay 1ms duplicate 0%", ""}
	go func() {
		for i := range batches {
			q.in <- numbered(i*size, size)
			fn.In <- numbered(i*size, size)
			if i%20 == 10 {
				s := specs[i/20%len(specs)]
				setWire(t, p, ToNetwork, false, s)
				setWire(t, p, ToVM, false, s)
			}
			time.Sleep(200 * time.Microsecond)
		}
	}()
	waitFor(t, "every frame", func() bool {
		return fn.SentCount() == batches*size && len(q.received()) == batches*size
	})
	inOrder(t, fn.Sent())
	inOrder(t, q.received())
}

func TestWireDelays(t *testing.T) {
	fn, q := pumptest.NewNet(), newFakeQueue(true)
	defer close(fn.Closed)
	p, _ := wirePump(t, fn, q)
	setWire(t, p, ToVM, false, "delay 80ms")
	start := time.Now()
	fn.In <- numbered(0, 5)
	waitFor(t, "delayed frames", func() bool { return len(q.received()) == 5 })
	if d := time.Since(start); d < 80*time.Millisecond {
		t.Errorf("frames arrived after %v, want >= 80ms", d)
	}
}

// A full delay line holds the VM back (no frame dropped) unless the spec
// sets limit.
func TestWireFullLineHoldsVMBack(t *testing.T) {
	fn, q := pumptest.NewNet(), newFakeQueue(true)
	defer close(fn.Closed)
	p, c := wirePump(t, fn, q)
	setWire(t, p, ToNetwork, false, "delay 300ms")
	const total = 1600
	go func() {
		for i := 0; i < total; i += 32 {
			q.in <- numbered(i, 32)
		}
	}()
	time.Sleep(150 * time.Millisecond)
	if left := len(q.in); left == 0 {
		t.Error("the VM side was read empty while the delay line (1000 frames) was full")
	}
	waitFor(t, "every frame", func() bool { return fn.SentCount() == total })
	if n := c.tx[l2tp.DropImpairLimit].Load(); n != 0 {
		t.Errorf("%d frames dropped without limit", n)
	}

	setWire(t, p, ToNetwork, false, "delay 300ms limit 100")
	q.in <- numbered(0, 32)
	for i := 32; i < 320; i += 32 {
		q.in <- numbered(i, 32)
	}
	waitFor(t, "limit drops", func() bool { return c.tx[l2tp.DropImpairLimit].Load() == 320-100 })
	waitFor(t, "the frames within the limit", func() bool { return fn.SentCount() == total+100 })
}

func TestWireLossCounted(t *testing.T) {
	fn, q := pumptest.NewNet(), newFakeQueue(true)
	defer close(fn.Closed)
	p, c := wirePump(t, fn, q)
	setWire(t, p, ToVM, false, "loss 30% seed 5")
	for i := 0; i < 3200; i += 32 {
		fn.In <- numbered(i, 32)
	}
	waitFor(t, "frames delivered or lost", func() bool {
		return uint64(len(q.received()))+c.rx[l2tp.DropImpairLoss].Load() == 3200
	})
	if lost := c.rx[l2tp.DropImpairLoss].Load(); lost < 800 || lost > 1120 {
		t.Errorf("lost %d of 3200 with loss 30%%", lost)
	}
}

// With two queue pairs both push into the one line of their direction,
// whose emitter sends through a sender of its own: every frame arrives,
// and a cut link counts both pairs' frames.
func TestWireTwoQueuePairs(t *testing.T) {
	fn := pumptest.NewNet()
	defer close(fn.Closed)
	q0, q1 := newFakeQueue(true), newFakeQueue(true)
	p := startQueues(t, fn, q0, q1)
	c := &dropCounts{}
	p.CountDropsWith(func(r l2tp.Drop, n uint64) { c.rx[r].Add(n) }, func(r l2tp.Drop, n uint64) { c.tx[r].Add(n) })
	t.Cleanup(p.CloseWires)
	setWire(t, p, ToNetwork, false, "delay 2ms")
	for i := 0; i < 10; i++ {
		q0.in <- numbered(i*20, 10)
		q1.in <- numbered(i*20+10, 10)
	}
	waitFor(t, "both pairs' frames", func() bool { return fn.SentCount() == 200 })
	setWire(t, p, ToNetwork, true, "delay 2ms")
	q0.in <- numbered(0, 3)
	q1.in <- numbered(0, 4)
	waitFor(t, "link_down from both pairs", func() bool { return c.tx[l2tp.DropLinkDown].Load() == 7 })
	if fn.SentCount() != 200 {
		t.Errorf("%d frames sent through a cut link", fn.SentCount()-200)
	}
}
