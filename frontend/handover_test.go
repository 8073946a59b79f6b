package frontend

import (
	"bytes"
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/internal/testlog"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/pump"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/pump/pumptest"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/vhostuser/vhosttest"
)

// runOn runs fe on a pump over a network double, network reader included,
// until the test ends.
func runOn(t *testing.T, fe FrontEnd) (*pump.Pump, *pumptest.Net) {
	t.Helper()
	n := pumptest.NewNet()
	p := pump.NewPump(n, nil)
	if err := p.SetQueues(fe.Queues()); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- fe.Run(context.Background(), p) }()
	go p.RunNetToVM()
	t.Cleanup(func() {
		fe.Close()
		<-done
		close(n.Closed)
	})
	return p, n
}

// waitDetached waits until no VM port is attached to p.
func waitDetached(t *testing.T, p *pump.Pump) {
	t.Helper()
	for i := 0; i < 1000 && p.Attached() != 0; i++ {
		time.Sleep(time.Millisecond)
	}
	if p.Attached() != 0 {
		t.Fatal("port still attached")
	}
}

// receiveN waits until g's RX ring has given n frames equal to want.
func receiveN(t *testing.T, g *vhosttest.QueuePair, n int, want []byte) {
	t.Helper()
	got := 0
	deadline := time.Now().Add(5 * time.Second)
	for got < n && time.Now().Before(deadline) {
		got += g.Receive(func(f []byte) {
			if !bytes.Equal(f, want) {
				t.Errorf("guest received %x, want %x", f, want)
			}
		})
	}
	if got != n {
		t.Fatalf("guest received %d of %d frames", got, n)
	}
}

// TestVhostUserHandOver plays a same-host live migration on one port: the
// destination QEMU's handshake is answered while the source runs (QEMU's
// destination waits for it at start); the source stops its rings, the
// destination starts its own and gets the network's frames, and the
// source's disconnect leaves it alone.
func TestVhostUserHandOver(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v.sock")
	v, err := ListenVhostUser(VhostUserAddr{Path: path, Server: true, Queues: 1}, 8, testlog.Discard())
	if err != nil {
		t.Fatal(err)
	}
	p, n := runOn(t, v)
	feA, err := vhosttest.Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	src, err := vhosttest.NewGuest(feA, vhosttest.GuestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	pumptest.WaitAttached(t, p)
	f := pumptest.FrameN(1, 60)
	n.In <- [][]byte{f, f}
	receiveN(t, src.Pairs[0], 2, f)

	feB, err := vhosttest.Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	feB.Conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := feB.Negotiate(vhosttest.GuestFeatures, vhosttest.GuestProtocol); err != nil {
		t.Fatalf("the destination's handshake while the source runs: %v", err)
	}
	feB.Conn.SetDeadline(time.Time{})

	for i := range uint32(2) {
		if _, err := feA.GetVringBase(i); err != nil {
			t.Fatal(err)
		}
	}
	waitDetached(t, p)
	dst, err := vhosttest.NewGuest(feB, vhosttest.GuestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	pumptest.WaitAttached(t, p)
	g := pumptest.FrameN(2, 60)
	n.In <- [][]byte{g, g, g}
	receiveN(t, dst.Pairs[0], 3, g)

	feA.Close() // the source QEMU quits
	time.Sleep(50 * time.Millisecond)
	n.In <- [][]byte{g}
	receiveN(t, dst.Pairs[0], 1, g)
	if got := src.Pairs[0].Receive(func([]byte) {}); got != 0 {
		t.Fatalf("the source got %d frames after it stopped", got)
	}
	if st := v.Status(); st.Connections != 2 || st.ProtocolErrors != 0 || !st.Connected {
		t.Fatalf("status %+v, want 2 connections, connected, no protocol error", st)
	}
}

// TestStreamHandOver: a second QEMU on a stream port waits while the first
// runs (the network's frames go to the first only); as soon as it sends a
// frame (the destination runs the guest) it takes the port over: the first
// connection is closed and the network's frames go to the second.
func TestStreamHandOver(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	s, err := ListenStream(StreamAddr{Network: "unix", Address: path, Server: true}, 8, testlog.Discard())
	if err != nil {
		t.Fatal(err)
	}
	p, n := runOn(t, s)
	a, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	pumptest.WaitAttached(t, p)
	f := pumptest.FrameN(1, 60)
	n.In <- [][]byte{f}
	if got := readStreamFrames(t, a, 1); !bytes.Equal(got[0], f) {
		t.Fatalf("source got %x", got[0])
	}

	b, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	time.Sleep(50 * time.Millisecond)
	n.In <- [][]byte{f}
	readStreamFrames(t, a, 1) // still the source's
	b.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if k, err := b.Read(make([]byte, 1)); k != 0 || err == nil {
		t.Fatalf("the waiting destination got bytes (%d, %v)", k, err)
	}

	g := pumptest.FrameN(2, 80)
	if _, err := b.Write(pumptest.EncodeStream(g)); err != nil { // the destination runs
		t.Fatal(err)
	}
	a.SetReadDeadline(time.Now().Add(5 * time.Second))
	if k, err := a.Read(make([]byte, 1)); k != 0 || err == nil {
		t.Fatalf("the source's connection was not closed (%d, %v)", k, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for n.SentCount() < 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if sent := n.Sent(); len(sent) != 1 || !bytes.Equal(sent[0], g) {
		t.Fatalf("network got %d frames, want the destination's one", len(sent))
	}
	pumptest.WaitAttached(t, p)
	h := pumptest.FrameN(3, 70)
	n.In <- [][]byte{h}
	if got := readStreamFrames(t, b, 1); !bytes.Equal(got[0], h) {
		t.Fatalf("destination got %x", got[0])
	}
}
