package vhostuser

import (
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/vhostuser/vhosttest"
)

// TestTwoFrontEnds: during a migration's hand-over ServeConn runs for two
// front ends at once: the second is answered while the first's queue pair
// runs, Stats counts both live sessions, and Close ends both.
func TestTwoFrontEnds(t *testing.T) {
	h := newRecorder()
	srv, err := New(Config{MTU: 1500, Logger: testLogger()}, h)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 2)
	connect := func() *vhosttest.FrontEnd {
		fe, conn, err := vhosttest.Pair()
		if err != nil {
			t.Fatal(err)
		}
		go func() { done <- srv.ServeConn(conn) }()
		return fe
	}
	feA := connect()
	src, err := vhosttest.NewGuest(feA, vhosttest.GuestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	q := h.waitStarted(t)
	feB := connect()
	defer feB.Close()
	feB.Conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := feB.Negotiate(vhosttest.GuestFeatures, vhosttest.GuestProtocol); err != nil {
		t.Fatalf("the second front end's handshake: %v", err)
	}
	if err := q.WriteFrames([][]byte{frame(100, 1)}); err != nil {
		t.Fatalf("the first front end's pair after the second connected: %v", err)
	}
	if got := src.Pairs[0].Receive(func([]byte) {}); got != 1 {
		t.Fatalf("the first guest received %d frames, want 1", got)
	}
	if st := srv.Stats(); st.Connections != 2 || st.Queues[0].RXFrames != 1 {
		t.Fatalf("stats %+v: want 2 connections and the live session's frame", st)
	}
	srv.Close()
	for range 2 {
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("Close did not end both front ends")
		}
	}
}
