package pump

import (
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/pump/pumptest"
)

// gatedQueue is a fakeQueue whose WriteFrames and DeliverFrames wait on
// gate: a VM whose RX ring is full until the test opens it.
type gatedQueue struct {
	*fakeQueue
	gate chan struct{}
}

func (q *gatedQueue) WriteFrames(frames [][]byte) error {
	<-q.gate
	return q.fakeQueue.WriteFrames(frames)
}

func (q *gatedQueue) DeliverFrames(frames [][]byte) (int, error) {
	<-q.gate
	return q.fakeQueue.DeliverFrames(frames)
}

// waitOccupancy polls p's gauges until want, failing after 2 s.
func waitOccupancy(t *testing.T, p *Pump, want RingOccupancy) {
	t.Helper()
	var got RingOccupancy
	for range 2000 {
		if got = p.Occupancy(); got == want {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("ring occupancy %+v, want %+v", got, want)
}

// batchOf is n distinct small frames.
func batchOf(n int) [][]byte {
	b := make([][]byte, n)
	for i := range b {
		b[i] = flowFrame(i, i)
	}
	return b
}

// TestRingOccupancyToVM: while the VM cannot take frames the batch read
// from the network is held and counted; it drops to 0 once delivered.
func TestRingOccupancyToVM(t *testing.T) {
	fn := pumptest.NewNet()
	defer close(fn.Closed)
	p := NewPump(fn, func(n int) { t.Errorf("%d frames counted vm_down", n) })
	q := &gatedQueue{newFakeQueue(true), make(chan struct{})}
	defer q.Close()
	go p.RunNetToVM()
	go p.Serve(q)
	pumptest.WaitAttached(t, p)
	waitOccupancy(t, p, RingOccupancy{})
	fn.In <- batchOf(5)
	waitOccupancy(t, p, RingOccupancy{ToVM: 5})
	close(q.gate)
	waitOccupancy(t, p, RingOccupancy{})
	if n := len(q.received()); n != 5 {
		t.Fatalf("VM got %d frames, want 5", n)
	}
}

// TestRingOccupancyToVMSteered: with two queue pairs, each pair's share
// leaves the gauge as it is delivered, so a pair whose ring is full holds
// only its own share.
func TestRingOccupancyToVMSteered(t *testing.T) {
	fn := pumptest.NewNet()
	defer close(fn.Closed)
	open := newFakeQueue(true)
	full := &gatedQueue{newFakeQueue(true), make(chan struct{})}
	defer open.Close()
	defer full.Close()
	p := NewPump(fn, func(n int) { t.Errorf("%d frames counted vm_down", n) })
	if err := p.SetQueues(2); err != nil {
		t.Fatal(err)
	}
	go p.ServeQueue(0, open)
	go p.ServeQueue(1, full)
	for i := 0; i < 1000; i++ {
		if s := p.attached.Load(); s != nil && len(s.live) == 2 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	go p.RunNetToVM()
	frames := batchOf(32)
	toFull := 0
	for _, f := range frames {
		if flowHash(f)>>31 == 1 { // the upper half of the hash space goes to pair 1 of 2
			toFull++
		}
	}
	if toFull == 0 || toFull == len(frames) {
		t.Fatalf("%d of %d flows on pair 1: pick other frames", toFull, len(frames))
	}
	fn.In <- frames
	// Pair 0 comes first in the steering order and is served; pair 1 holds its share.
	waitOccupancy(t, p, RingOccupancy{ToVM: int64(toFull)})
	close(full.gate)
	waitOccupancy(t, p, RingOccupancy{})
	if got := len(open.received()) + len(full.received()); got != len(frames) {
		t.Fatalf("VM got %d frames, want %d", got, len(frames))
	}
}

// TestRingOccupancyToNetwork: while the socket is full the batch read from
// the VM is held and counted; it drops to 0 once sent.
func TestRingOccupancyToNetwork(t *testing.T) {
	fn := pumptest.NewNet()
	fn.Gate = make(chan struct{})
	defer close(fn.Closed)
	p := NewPump(fn, nil)
	q := newFakeQueue(true)
	defer q.Close()
	go p.Serve(q)
	pumptest.WaitAttached(t, p)
	q.in <- batchOf(7)
	waitOccupancy(t, p, RingOccupancy{ToNetwork: 7})
	close(fn.Gate)
	waitOccupancy(t, p, RingOccupancy{})
	if n := fn.SentCount(); n != 7 {
		t.Fatalf("network got %d frames, want 7", n)
	}
}
