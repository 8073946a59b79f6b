package vhostuser

import (
	"testing"
)

// TestNotifyOnStart checks the guest is signalled when a ring starts and when it restarts
// (issue 12, defect 7): a previous back end may have published used entries and died before
// signalling them, and without this signal the guest would wait for it forever.
func TestNotifyOnStart(t *testing.T) {
	r := newRig(t, rigOpts{})
	for _, q := range []struct {
		name  string
		calls func() uint64
	}{{"RX", r.rx.Calls}, {"TX", r.tx.Calls}} {
		if c := q.calls(); c == 0 {
			t.Errorf("%s: no notification when the ring started", q.name)
		}
	}
	// The previous back end published a used entry and died before signalling: a
	// restart from the used index must signal.
	r.putTX(frame(100, 1), false)
	r.tx.Publish()
	readN(t, r.q, 1)
	r.tx.Calls()
	base, err := r.fe.GetVringBase(1)
	if err != nil {
		t.Fatal(err)
	}
	r.h.waitStopped(t)
	if c := r.tx.Calls(); c != 0 {
		t.Fatalf("%d notifications while stopping", c)
	}
	if err := r.fe.StartQueue(1, r.tx, uint16(base)); err != nil {
		t.Fatal(err)
	}
	r.h.waitStarted(t)
	if c := r.tx.Calls(); c == 0 {
		t.Error("TX: no notification when the ring restarted")
	}
	if st := r.srv.Stats(); st.Notifies < 3 {
		t.Errorf("Notifies = %d, want the three start signals counted", st.Notifies)
	}
}
