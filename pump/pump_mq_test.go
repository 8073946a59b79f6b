package pump

import (
	"bytes"
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/pump/pumptest"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/vhostuser"
)

// fakeQueue is a VM port that is one queue pair of several: WriteFrames
// and DeliverFrames record frames, RXEnabled is switchable, ReadFrames
// serves queued batches until Close.
type fakeQueue struct {
	enabled atomic.Bool
	mu      sync.Mutex
	got     [][]byte
	in      chan [][]byte
	closed  chan struct{}
	once    sync.Once
}

func newFakeQueue(enabled bool) *fakeQueue {
	q := &fakeQueue{in: make(chan [][]byte, 64), closed: make(chan struct{})}
	q.enabled.Store(enabled)
	return q
}

func (q *fakeQueue) ReadFrames(bufs [][]byte, sizes []int, offset int) (int, error) {
	select {
	case b := <-q.in:
		for i, f := range b {
			sizes[i] = copy(bufs[i][offset:], f)
		}
		return len(b), nil
	case <-q.closed:
		return 0, net.ErrClosed
	}
}

func (q *fakeQueue) WriteFrames(frames [][]byte) error {
	_, err := q.DeliverFrames(frames)
	return err
}

func (q *fakeQueue) DeliverFrames(frames [][]byte) (int, error) {
	if !q.enabled.Load() {
		return 0, vhostuser.ErrRXDisabled
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, f := range frames {
		q.got = append(q.got, bytes.Clone(f))
	}
	return len(frames), nil
}

func (q *fakeQueue) RXEnabled() bool { return q.enabled.Load() }
func (q *fakeQueue) BatchSize() int  { return 32 }
func (q *fakeQueue) Close() error    { q.once.Do(func() { close(q.closed) }); return nil }

// received returns a copy of what the queue got.
func (q *fakeQueue) received() [][]byte {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([][]byte(nil), q.got...)
}

// flowFrame is an IPv4/UDP frame of flow f (source port) carrying seq.
func flowFrame(flow, seq int) []byte {
	b := make([]byte, 14+20+8+8)
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	ip := b[14:]
	ip[0], ip[9] = 0x45, 17
	copy(ip[12:], []byte{10, 0, 0, 1})
	copy(ip[16:], []byte{10, 0, 0, 2})
	binary.BigEndian.PutUint16(ip[20:], uint16(1000+flow))
	binary.BigEndian.PutUint16(ip[22:], 53)
	binary.BigEndian.PutUint32(ip[28:], uint32(flow))
	binary.BigEndian.PutUint32(ip[32:], uint32(seq))
	return b
}

// startQueues attaches qs to a pump with len(qs) queue pairs.
func startQueues(t *testing.T, fn *pumptest.Net, qs ...*fakeQueue) *Pump {
	t.Helper()
	p := NewPump(fn, func(n int) { t.Errorf("%d frames counted vm_down", n) })
	if err := p.SetQueues(len(qs)); err != nil {
		t.Fatal(err)
	}
	for i, q := range qs {
		go p.ServeQueue(i, q)
	}
	waitLive(t, p, len(qs))
	return p
}

// TestPumpSteersFlows: with two enabled queue pairs every flow lands on one
// pair, in order, and both pairs get flows; a disabled pair gets nothing.
func TestPumpSteersFlows(t *testing.T) {
	fn := pumptest.NewNet()
	defer close(fn.Closed)
	q0, q1, q2 := newFakeQueue(true), newFakeQueue(true), newFakeQueue(false)
	p := startQueues(t, fn, q0, q1, q2)
	go p.RunNetToVM()
	const flows, per = 16, 20
	for s := 0; s < per; s++ {
		batch := make([][]byte, flows)
		for f := range batch {
			batch[f] = flowFrame(f, s)
		}
		fn.In <- batch
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(q0.received())+len(q1.received()) < flows*per && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if len(q2.received()) != 0 {
		t.Fatalf("disabled pair got %d frames", len(q2.received()))
	}
	owner := map[uint32]int{}
	for qi, q := range []*fakeQueue{q0, q1} {
		next := map[uint32]uint32{}
		for _, f := range q.received() {
			flow, seq := binary.BigEndian.Uint32(f[42:]), binary.BigEndian.Uint32(f[46:])
			if o, ok := owner[flow]; ok && o != qi {
				t.Fatalf("flow %d on pairs %d and %d", flow, o, qi)
			}
			owner[flow] = qi
			if seq != next[flow] {
				t.Fatalf("flow %d: seq %d, want %d", flow, seq, next[flow])
			}
			next[flow]++
		}
		if len(next) == 0 {
			t.Fatalf("pair %d got no flow", qi)
		}
	}
	if len(owner) != flows {
		t.Fatalf("%d of %d flows delivered", len(owner), flows)
	}
}

// TestPumpDisabledPairFallsBack: a pair disabled between steering and
// delivery hands its frames to another enabled pair; nothing is lost.
func TestPumpDisabledPairFallsBack(t *testing.T) {
	fn := pumptest.NewNet()
	q0, q1 := newFakeQueue(true), newFakeQueue(true)
	p := startQueues(t, fn, q0, q1)
	set := p.attached.Load()
	frames := [][]byte{flowFrame(1, 0), flowFrame(2, 0), flowFrame(3, 0)}
	q1.enabled.Store(false) // after the choice, before delivery
	p.rx.deliverSteered(p, set, 1, frames)
	if len(q0.received()) != 3 || len(q1.received()) != 0 {
		t.Fatalf("q0 got %d, q1 got %d", len(q0.received()), len(q1.received()))
	}
	close(fn.Closed)
}

// flappingQueue is a fakeQueue whose guest disables the RX ring just before
// a delivery and enables it again right after DeliverFrames returned.
type flappingQueue struct {
	*fakeQueue
	closed atomic.Bool
}

func (q *flappingQueue) DeliverFrames(frames [][]byte) (int, error) {
	q.enabled.Store(false)
	n, err := q.fakeQueue.DeliverFrames(frames)
	q.enabled.Store(true)
	return n, err
}

func (q *flappingQueue) Close() error { q.closed.Store(true); return q.fakeQueue.Close() }

// TestPumpDisableReenableRace: a pair whose ring was disabled for the
// delivery but is enabled again when the steerer looks is not dead: its
// frames go to another pair, it is not closed, nothing counts vm_down.
func TestPumpDisableReenableRace(t *testing.T) {
	fn := pumptest.NewNet()
	defer close(fn.Closed)
	q0, q1 := newFakeQueue(true), &flappingQueue{fakeQueue: newFakeQueue(true)}
	p := NewPump(fn, func(n int) { t.Errorf("%d frames counted vm_down", n) })
	if err := p.SetQueues(2); err != nil {
		t.Fatal(err)
	}
	go p.ServeQueue(0, q0)
	go p.ServeQueue(1, q1)
	waitLive(t, p, 2)
	frames := [][]byte{flowFrame(1, 0), flowFrame(2, 0), flowFrame(3, 0)}
	p.rx.deliverSteered(p, p.attached.Load(), 1, frames)
	if q1.closed.Load() {
		t.Fatal("a live queue pair was closed")
	}
	if len(q0.received()) != 3 {
		t.Fatalf("the other pair got %d of 3 frames", len(q0.received()))
	}
}

// waitLive waits until n queue pairs are attached to p.
func waitLive(t *testing.T, p *Pump, n int) {
	t.Helper()
	for range 1000 {
		if s := p.attached.Load(); s != nil && len(s.live) == n {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("queues never attached")
}

// TestPumpQueuesSendInParallel: each queue pair sends through a sender of
// its own; a stalled pair does not hold the other one up.
func TestPumpQueuesSendInParallel(t *testing.T) {
	fn := &senderNet{Net: pumptest.NewNet()}
	defer close(fn.Closed)
	q0, q1 := newFakeQueue(true), newFakeQueue(true)
	p := NewPump(fn, nil)
	if err := p.SetQueues(2); err != nil {
		t.Fatal(err)
	}
	fn.Gate = make(chan struct{}) // pair 0 (the network's own WriteFrames) is stalled
	go p.ServeQueue(0, q0)
	go p.ServeQueue(1, q1)
	q0.in <- [][]byte{flowFrame(0, 0)}
	for i := range 10 {
		q1.in <- [][]byte{flowFrame(1, i)}
	}
	deadline := time.Now().Add(5 * time.Second)
	for fn.senders[0].SentCount() < 10 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := fn.senders[0].SentCount(); n != 10 {
		t.Fatalf("pair 1 sent %d of 10 while pair 0 was stalled", n)
	}
	close(fn.Gate)
	for fn.SentCount() < 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if fn.SentCount() != 1 || len(fn.senders) != 1 {
		t.Fatalf("pair 0 sent %d through the network's own WriteFrames; %d senders made", fn.SentCount(), len(fn.senders))
	}
}

// senderNet is a pumptest.Net whose senders are nets of their own.
type senderNet struct {
	*pumptest.Net
	senders []*pumptest.Net
}

func (s *senderNet) NewSender() (NetSender, error) {
	f := pumptest.NewNet()
	s.senders = append(s.senders, f)
	return f, nil
}

// TestPumpWithoutSendersSerialises: a network whose senders are itself
// (pumptest.Net) is shared by the queue pairs and still gets everything.
func TestPumpWithoutSendersSerialises(t *testing.T) {
	fn := pumptest.NewNet()
	defer close(fn.Closed)
	q0, q1 := newFakeQueue(true), newFakeQueue(true)
	startQueues(t, fn, q0, q1)
	for i := range 20 {
		q0.in <- [][]byte{flowFrame(0, i)}
		q1.in <- [][]byte{flowFrame(1, i)}
	}
	deadline := time.Now().Add(5 * time.Second)
	for fn.SentCount() < 40 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if fn.SentCount() != 40 {
		t.Fatalf("sent %d of 40", fn.SentCount())
	}
}

// TestFlowHash: fields that identify a flow change the hash, the payload
// does not; short and odd frames do not panic.
func TestFlowHash(t *testing.T) {
	a, b := flowFrame(1, 0), flowFrame(1, 99)
	if flowHash(a) != flowHash(b) {
		t.Fatal("payload changed the hash")
	}
	if flowHash(flowFrame(1, 0)) == flowHash(flowFrame(2, 0)) {
		t.Fatal("ports ignored")
	}
	frag := flowFrame(1, 0)
	frag[14+6] = 0x20 // more fragments: ports are not looked at
	frag2 := flowFrame(2, 0)
	frag2[14+6] = 0x20
	if flowHash(frag) != flowHash(frag2) {
		t.Fatal("fragment hashed by ports")
	}
	for n := range 51 {
		flowHash(make([]byte, n))
		f := flowFrame(3, 0)
		f[14] = 0x4f // IHL 60 > frame
		flowHash(f[:n])
	}
}

// TestSteerNoAllocs: spreading a batch over queue pairs allocates nothing.
func TestSteerNoAllocs(t *testing.T) {
	fn := pumptest.NewNet()
	defer close(fn.Closed)
	q0, q1 := newFakeQueue(true), newFakeQueue(true)
	p := startQueues(t, fn, q0, q1)
	set := p.attached.Load()
	frames := make([][]byte, 32)
	for i := range frames {
		frames[i] = flowFrame(i, 0)
	}
	null := &nullQueue{}
	set.ports[0].port, set.ports[1].port = null, null
	if a := testing.AllocsPerRun(100, func() { p.rx.steer(p, set, frames) }); a != 0 {
		t.Fatalf("%v allocs per batch", a)
	}
	if null.n.Load() != 101*32 {
		t.Fatalf("delivered %d", null.n.Load())
	}
}

// nullQueue takes every frame and keeps none.
type nullQueue struct{ n atomic.Int64 }

func (q *nullQueue) ReadFrames([][]byte, []int, int) (int, error) { return 0, net.ErrClosed }
func (q *nullQueue) WriteFrames(f [][]byte) error                 { q.n.Add(int64(len(f))); return nil }
func (q *nullQueue) DeliverFrames(f [][]byte) (int, error) {
	q.n.Add(int64(len(f)))
	return len(f), nil
}
func (q *nullQueue) RXEnabled() bool { return true }
func (q *nullQueue) BatchSize() int  { return 32 }
func (q *nullQueue) Close() error    { return nil }
