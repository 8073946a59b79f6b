package vhostuser

import (
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/vhostuser/vhosttest"
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

// TestTSOCutAcrossStop cuts a 45-segment super-frame across reads of 10 frames and stops
// the ring in between (issue 12, defect 6), either with GET_VRING_BASE and a restart from
// the base it answers, or by replacing the back end, whose successor starts from used->idx
// as QEMU has it do: no segment may leave twice, and the chain must not stay with the back
// end (it is in the used ring once its first segments are out).
func TestTSOCutAcrossStop(t *testing.T) {
	const feat = allFeatures | vhosttest.FCsum | vhosttest.FHostTSO4
	for _, replace := range []bool{false, true} {
		name := map[bool]string{false: "GET_VRING_BASE", true: "back end replaced"}[replace]
		t.Run(name, func(t *testing.T) {
			r := newRig(t, rigOpts{features: feat})
			s := superFrame{flags: 16, payload: frame(45*1448, 1), mss: 1448}
			want := s.segments()
			r.putTXHdr(s.hdr(), s.frame(), false)
			r.tx.PublishKick()
			seen := map[string]int{}
			read := func(q *QueuePair) error {
				bufs, sizes := make([][]byte, 10), make([]int, 10)
				for i := range bufs {
					bufs[i] = make([]byte, 2000)
				}
				n, err := q.ReadFrames(bufs, sizes, 0)
				for i := range n {
					seen[string(bufs[i][:sizes[i]])]++
				}
				return err
			}
			if err := read(r.q); err != nil || len(seen) != 10 {
				t.Fatalf("first read: %d segments, %v", len(seen), err)
			}
			if u := r.tx.UsedIdx(); u != 1 {
				t.Errorf("used->idx %d once segments are out, want 1 (the chain returned)", u)
			}
			q := r.q
			if replace {
				q = r.replaceBackEnd(feat)
			} else {
				base, err := r.fe.GetVringBase(1)
				if err != nil {
					t.Fatal(err)
				}
				r.h.waitStopped(t)
				if err := r.fe.StartQueue(1, r.tx, uint16(base)); err != nil {
					t.Fatal(err)
				}
				q = r.h.waitStarted(t)
			}
			// Read whatever the restarted ring still gives, until it waits.
			for {
				got := make(chan error, 1)
				go func() { got <- read(q) }()
				select {
				case err := <-got:
					if err != nil {
						t.Fatal(err)
					}
					continue
				case <-time.After(200 * time.Millisecond):
				}
				q.Close()
				<-got
				break
			}
			twice, missing := 0, 0
			for _, w := range want {
				switch seen[string(w)] {
				case 0:
					missing++
				case 1:
				default:
					twice++
				}
			}
			t.Logf("%d segments: %d read twice, %d never", len(want), twice, missing)
			if twice > 0 {
				t.Errorf("%d segments read twice", twice)
			}
			if !replace && missing > 0 {
				t.Errorf("%d segments lost across GET_VRING_BASE", missing)
			}
		})
	}
}

// replaceBackEnd ends the rig's back end as a crash would, without GET_VRING_BASE, and
// serves the same guest from a new one: negotiation, memory table, both rings started from
// their used->idx (what QEMU does after a back end dies). It returns the new pair.
func (r *rig) replaceBackEnd(features uint64) *QueuePair {
	r.t.Helper()
	rxBase, txBase := r.rx.UsedIdx(), r.tx.UsedIdx()
	r.fe.Close()
	r.srv.Close()
	<-r.done
	fe, conn, err := vhosttest.Pair()
	if err != nil {
		r.t.Fatal(err)
	}
	h := newRecorder()
	srv, err := New(Config{Queues: 1, MTU: 1500, Logger: testLogger()}, h)
	if err != nil {
		r.t.Fatal(err)
	}
	r.fe, r.srv, r.h, r.done = fe, srv, h, make(chan error, 1)
	go func() { r.done <- srv.ServeConn(conn) }()
	if _, err := fe.Negotiate(features, allProto); err != nil {
		r.t.Fatal(err)
	}
	if err := fe.SetMemTable(r.mem); err != nil {
		r.t.Fatal(err)
	}
	if err := fe.StartQueue(0, r.rx, rxBase); err != nil {
		r.t.Fatal(err)
	}
	if err := fe.StartQueue(1, r.tx, txBase); err != nil {
		r.t.Fatal(err)
	}
	r.q = h.waitStarted(r.t)
	return r.q
}
