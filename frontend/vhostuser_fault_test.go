package frontend

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/internal/testlog"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/pump"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/pump/pumptest"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/vhostuser/vhosttest"
	"golang.org/x/sys/unix"
)

// A front end that shrinks the guest memory it shared costs its connection only: the port
// counts the fault (memory_faults), keeps serving, and the next front end (QEMU
// reconnecting) moves frames both ways; the status says whether the regions are sealed.
func TestVhostUserMemoryFaultEndsOnlyTheConnection(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v.sock")
	v, err := ListenVhostUser(VhostUserAddr{Path: path, Server: true, Queues: 1}, 8, testlog.Discard())
	if err != nil {
		t.Fatal(err)
	}
	n := pumptest.NewNet()
	p := pump.NewPump(n, nil)
	if err := p.SetQueues(1); err != nil {
		t.Fatal(err)
	}
	ran := make(chan error, 1)
	go func() { ran <- v.Run(context.Background(), p) }()
	go p.RunNetToVM()
	defer close(n.Closed)

	g1 := connectGuest(t, path, p, false)
	moveBothWays(t, g1, n, 1)
	if st := v.Status(); st.GuestRegions != 1 || st.SealedRegions != 0 || st.MemoryFaults != 0 {
		t.Fatalf("unsealed guest: regions %d sealed %d faults %d", st.GuestRegions, st.SealedRegions, st.MemoryFaults)
	}
	if err := unix.Ftruncate(g1.Mem.FD, 0); err != nil {
		t.Fatal(err)
	}
	n.In <- [][]byte{pumptest.FrameN(100, 60)} // the pump's next write into the guest faults
	waitUntil(t, "the fault to end the connection", func() bool {
		st := v.Status()
		return st.MemoryFaults == 1 && !st.Connected
	})
	select {
	case err := <-ran:
		t.Fatalf("the front end stopped serving: %v", err)
	default:
	}
	g1.Close()

	g2 := connectGuest(t, path, p, true)
	defer g2.Close()
	moveBothWays(t, g2, n, 2)
	st := v.Status()
	if st.GuestRegions != 1 || st.SealedRegions != 1 || st.MemoryFaults != 1 || st.ProtocolErrors != 0 || st.RingViolations != 0 {
		t.Fatalf("after the reconnect: %+v", st)
	}
	if err := unix.Ftruncate(g2.Mem.FD, 0); !errors.Is(err, unix.EPERM) {
		t.Fatalf("shrinking the sealed guest memory: %v, want EPERM", err)
	}
	v.Close()
	if err := <-ran; err != nil {
		t.Fatalf("Run = %v", err)
	}
}

// connectGuest connects a guest with one queue pair and waits until the pump has it.
func connectGuest(t *testing.T, path string, p *pump.Pump, sealed bool) *vhosttest.Guest {
	t.Helper()
	fe, err := vhosttest.Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	g, err := vhosttest.NewGuest(fe, vhosttest.GuestOptions{Sealed: sealed})
	if err != nil {
		t.Fatal(err)
	}
	pumptest.WaitAttached(t, p)
	return g
}

// moveBothWays sends frame i from the guest to the network and one from the network into
// the guest, and waits for both.
func moveBothWays(t *testing.T, g *vhosttest.Guest, n *pumptest.Net, i int) {
	t.Helper()
	sent := n.SentCount()
	g.Pairs[0].Send(1, func(f []byte) int { return copy(f, pumptest.FrameN(i, 60)) })
	waitUntil(t, "the guest's frame on the network", func() bool { return n.SentCount() == sent+1 })
	n.In <- [][]byte{pumptest.FrameN(i, 60)}
	got := 0
	waitUntil(t, "the network's frame in the guest", func() bool {
		got += g.Pairs[0].Receive(func([]byte) {})
		return got == 1
	})
}

// waitUntil polls cond for up to 5 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
