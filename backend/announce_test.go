package backend

import (
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/vhostuser/vhosttest"
)

// TestVhostUserSendRARPReachesPeer: QEMU's SEND_RARP after a migration puts
// one announcement frame into the pseudowire, through a port's own sender.
func TestVhostUserSendRARPReachesPeer(t *testing.T) {
	r := newVhostRig(t, 1)
	base := r.peerGot.Load()
	mac := []byte{0x52, 0x54, 0x00, 0xab, 0xcd, 0xef, 0, 0}
	if err := r.g.FE.Set(vhosttest.SendRARP, mac); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for r.peerGot.Load() == base {
		if time.Now().After(deadline) {
			t.Fatal("the peer got no announcement")
		}
		time.Sleep(time.Millisecond)
	}
	// A second one reuses the sender.
	if err := r.g.FE.Set(vhosttest.SendRARP, mac); err != nil {
		t.Fatal(err)
	}
	for r.peerGot.Load() != base+2 {
		if time.Now().After(deadline) {
			t.Fatalf("the peer got %d announcements, want 2", r.peerGot.Load()-base)
		}
		time.Sleep(time.Millisecond)
	}
}
