package backend

import (
	"bytes"
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeNet is a Network double: it serves queued batches to ReadFrames and
// records what WriteFrames sends, optionally stalling until released.
type fakeNet struct {
	in       chan [][]byte
	consumed atomic.Int64
	gate     chan struct{} // WriteFrames waits on it when non-nil
	mu       sync.Mutex
	sent     [][]byte
	closed   chan struct{}
}

func newFakeNet() *fakeNet {
	return &fakeNet{in: make(chan [][]byte, 1024), closed: make(chan struct{})}
}

func (f *fakeNet) ReadFrames(frames [][]byte) (int, error) {
	select {
	case b := <-f.in:
		n := copy(frames, b)
		f.consumed.Add(int64(n))
		return n, nil
	case <-f.closed:
		return 0, net.ErrClosed
	}
}

func (f *fakeNet) WriteFrames(bufs [][]byte, sizes []int, offset int) error {
	if f.gate != nil {
		<-f.gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range bufs {
		f.sent = append(f.sent, bytes.Clone(bufs[i][offset:offset+sizes[i]]))
	}
	return nil
}

func (f *fakeNet) Headroom() int  { return 16 }
func (f *fakeNet) BatchSize() int { return 32 }

// sentCount reads how many frames reached the network.
func (f *fakeNet) sentCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.sent)
}

// A VM that stops reading for seconds makes the pump stop reading the
// network; when it resumes every frame arrives, in order.
func TestPumpNetToVMLosslessWhileVMStalls(t *testing.T) {
	fn := newFakeNet()
	defer close(fn.closed)
	p := NewPump(fn, func(n int) { t.Errorf("%d frames counted vm_down", n) })
	go p.RunNetToVM()
	qemu, side := socketPair(t)
	side.SetWriteBuffer(4096)
	qemu.SetReadBuffer(4096)
	port, _ := NewStreamPort(side, 32, nil)
	go p.Serve(port)
	waitAttached(t, p)

	const total = 6400
	for i := 0; i < total; i += 32 {
		batch := make([][]byte, 32)
		for j := range batch {
			batch[j] = frameN(i+j, 200)
		}
		fn.in <- batch
	}
	time.Sleep(2 * time.Second) // the VM does not read
	if c := fn.consumed.Load(); c >= total {
		t.Fatalf("pump read all %d frames from the network while the VM was stalled", c)
	}
	got := readStreamFrames(t, qemu, total)
	for i, f := range got {
		if binary.BigEndian.Uint32(f) != uint32(i) || len(f) != 200 {
			t.Fatalf("frame %d carries %d (len %d)", i, binary.BigEndian.Uint32(f), len(f))
		}
	}
}

// A network side that cannot send for seconds makes the pump stop reading
// the VM (QEMU's writes block); afterwards every frame is sent, in order.
func TestPumpVMToNetLosslessWhileNetStalls(t *testing.T) {
	fn := newFakeNet()
	defer close(fn.closed)
	fn.gate = make(chan struct{})
	p := NewPump(fn, nil)
	qemu, side := socketPair(t)
	port, _ := NewStreamPort(side, 32, nil)
	go p.Serve(port)

	const total = 5000
	var written atomic.Int64
	go func() {
		for i := 0; i < total; i++ {
			if _, err := qemu.Write(encodeStream(frameN(i, 300))); err != nil {
				return
			}
			written.Add(1)
		}
	}()
	time.Sleep(2 * time.Second) // the network is stalled
	if w := written.Load(); w >= total {
		t.Fatalf("QEMU wrote all %d frames while the network was stalled: the pump kept reading", w)
	}
	close(fn.gate)
	deadline := time.Now().Add(20 * time.Second)
	for fn.sentCount() < total && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	fn.mu.Lock()
	defer fn.mu.Unlock()
	if len(fn.sent) != total {
		t.Fatalf("sent %d of %d frames", len(fn.sent), total)
	}
	for i, f := range fn.sent {
		if binary.BigEndian.Uint32(f) != uint32(i) {
			t.Fatalf("frame %d carries %d", i, binary.BigEndian.Uint32(f))
		}
	}
}

// Frames arriving while no VM is attached are counted, not held.
func TestPumpCountsFramesWithoutVM(t *testing.T) {
	fn := newFakeNet()
	var down atomic.Int64
	p := NewPump(fn, func(n int) { down.Add(int64(n)) })
	done := make(chan error)
	go func() { done <- p.RunNetToVM() }()
	fn.in <- [][]byte{frameN(1, 64), frameN(2, 64)}
	deadline := time.Now().Add(5 * time.Second)
	for down.Load() != 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if down.Load() != 2 {
		t.Fatalf("vm_down = %d, want 2", down.Load())
	}
	close(fn.closed)
	if err := <-done; err != net.ErrClosed {
		t.Fatalf("RunNetToVM returned %v, want net.ErrClosed", err)
	}
}

// waitAttached waits until Serve has published its port.
func waitAttached(t *testing.T, p *Pump) {
	t.Helper()
	for i := 0; i < 1000 && p.attached.Load() == nil; i++ {
		time.Sleep(time.Millisecond)
	}
	if p.attached.Load() == nil {
		t.Fatal("port never attached")
	}
}
