package pump

import (
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/pump/pumptest"
)

// Frames arriving while no VM is attached are counted, not held.
func TestPumpCountsFramesWithoutVM(t *testing.T) {
	fn := pumptest.NewNet()
	var down atomic.Int64
	p := NewPump(fn, func(n int) { down.Add(int64(n)) })
	done := make(chan error)
	go func() { done <- p.RunNetToVM() }()
	fn.In <- [][]byte{pumptest.FrameN(1, 64), pumptest.FrameN(2, 64)}
	deadline := time.Now().Add(5 * time.Second)
	for down.Load() != 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if down.Load() != 2 {
		t.Fatalf("vm_down = %d, want 2", down.Load())
	}
	close(fn.Closed)
	if err := <-done; err != net.ErrClosed {
		t.Fatalf("RunNetToVM returned %v, want net.ErrClosed", err)
	}
}
