package frontend

import (
	"encoding/binary"
	"sync/atomic"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/pump"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/pump/pumptest"
)

// A VM that stops reading for seconds makes the pump stop reading the
// network; when it resumes every frame arrives, in order.
func TestPumpNetToVMLosslessWhileVMStalls(t *testing.T) {
	fn := pumptest.NewNet()
	defer close(fn.Closed)
	p := pump.NewPump(fn, func(n int) { t.Errorf("%d frames counted vm_down", n) })
	go p.RunNetToVM()
	qemu, side := socketPair(t)
	side.SetWriteBuffer(4096)
	qemu.SetReadBuffer(4096)
	port, _ := NewStreamPort(side, 32, nil)
	go p.Serve(port)
	pumptest.WaitAttached(t, p)

	const total = 6400
	for i := 0; i < total; i += 32 {
		batch := make([][]byte, 32)
		for j := range batch {
			batch[j] = pumptest.FrameN(i+j, 200)
		}
		fn.In <- batch
	}
	time.Sleep(2 * time.Second) // the VM does not read
	if c := fn.Consumed.Load(); c >= total {
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
	fn := pumptest.NewNet()
	defer close(fn.Closed)
	fn.Gate = make(chan struct{})
	p := pump.NewPump(fn, nil)
	qemu, side := socketPair(t)
	port, _ := NewStreamPort(side, 32, nil)
	go p.Serve(port)

	const total = 5000
	var written atomic.Int64
	go func() {
		for i := 0; i < total; i++ {
			if _, err := qemu.Write(pumptest.EncodeStream(pumptest.FrameN(i, 300))); err != nil {
				return
			}
			written.Add(1)
		}
	}()
	time.Sleep(2 * time.Second) // the network is stalled
	if w := written.Load(); w >= total {
		t.Fatalf("QEMU wrote all %d frames while the network was stalled: the pump kept reading", w)
	}
	close(fn.Gate)
	deadline := time.Now().Add(20 * time.Second)
	for fn.SentCount() < total && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	sent := fn.Sent()
	if len(sent) != total {
		t.Fatalf("sent %d of %d frames", len(sent), total)
	}
	for i, f := range sent {
		if binary.BigEndian.Uint32(f) != uint32(i) {
			t.Fatalf("frame %d carries %d", i, binary.BigEndian.Uint32(f))
		}
	}
}
