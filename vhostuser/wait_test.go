package vhostuser

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/vhostuser/vhosttest"
	"golang.org/x/sys/unix"
)

// TestKickAtEOF hands the back end a pipe as a ring's kick fd (the spec allows it) and
// closes the pipe's writer (issue 12, defect 5): the 0-byte read must stop that ring,
// counted and logged once, instead of counting endless kicks at the cost of a core.
func TestKickAtEOF(t *testing.T) {
	for _, rx := range []bool{false, true} {
		name := map[bool]string{false: "TX", true: "RX"}[rx]
		t.Run(name, func(t *testing.T) {
			r := newRig(t, rigOpts{noStart: true})
			var p [2]int
			if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
				t.Fatal(err)
			}
			q := r.tx
			if rx {
				q = r.rx
			}
			unix.Close(q.Kick)
			q.Kick = p[0] // closed with the ring
			r.start()
			unix.Close(p[1])
			errc := make(chan error, 1)
			go func() {
				var err error
				if rx {
					err = r.q.WriteFrames([][]byte{frame(100, 1)})
				} else {
					_, err = r.q.ReadFrames([][]byte{make([]byte, 2048)}, []int{0}, 0)
				}
				errc <- err
			}()
			cpu0, t0 := cpuTime(t), time.Now()
			var err error
			select {
			case err = <-errc:
			case <-time.After(2 * time.Second):
				r.q.Close()
				err = <-errc
				t.Errorf("the worker did not stop on the kick fd at EOF (%d kicks counted)", r.srv.Stats().Kicks)
			}
			time.Sleep(300*time.Millisecond - time.Since(t0))
			cpu, wall := cpuTime(t)-cpu0, time.Since(t0)
			t.Logf("CPU %v over %v", cpu, wall.Round(time.Millisecond))
			if cpu > wall/10 {
				t.Errorf("CPU %v over %v: more than 10%% of a core", cpu, wall)
			}
			if !errors.Is(err, ErrRingBroken) || !strings.Contains(err.Error(), "kick fd at end of file") {
				t.Errorf("error %v, want the ring broken: kick fd at end of file", err)
			}
			if st := r.srv.Stats(); st.RingViolations != 1 || st.Kicks > 1 {
				t.Errorf("violations %d, kicks %d; want 1 and at most 1", st.RingViolations, st.Kicks)
			}
		})
	}
}

// TestPartialRXBuffersPark gives a MRG_RXBUF guest's RX ring one 64-byte buffer while a
// 1500-byte frame waits (issue 12, defect 1): the writer must park at no cost, as the
// kernel's vhost_enable_notify decides, not spin because that buffer is still unused, and
// deliver the frame, over both buffers, once the guest posts another.
func TestPartialRXBuffersPark(t *testing.T) {
	for _, evt := range []bool{true, false} {
		feat := uint64(allFeatures)
		if !evt {
			feat &^= vhosttest.FEventIdx | vhosttest.FNotifyOnEmpty
		}
		r := newRig(t, rigOpts{features: feat})
		r.rxBuffers(1, 64)
		r.rx.PublishKick()
		want := frame(1500, 7)
		errc := make(chan error, 1)
		go func() { errc <- r.q.WriteFrames([][]byte{want}) }()
		cpu0, t0 := cpuTime(t), time.Now()
		time.Sleep(500 * time.Millisecond)
		cpu, wall := cpuTime(t)-cpu0, time.Since(t0)
		t.Logf("evt=%v: CPU %v over %v waiting for RX buffers", evt, cpu, wall.Round(time.Millisecond))
		if cpu > wall/10 {
			t.Errorf("evt=%v: CPU %v over %v waiting for RX buffers: more than 10%% of a core", evt, cpu, wall)
		}
		if st := r.srv.Stats(); st.Waits == 0 || st.RXFrames != 0 {
			t.Errorf("evt=%v: waits %d, RX frames %d; want the writer parked, nothing delivered", evt, st.Waits, st.RXFrames)
		}
		r.rxBuffers(1, 2048)
		r.rx.PublishKick()
		select {
		case err := <-errc:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("evt=%v: frame not delivered after the guest posted a buffer", evt)
		}
		got, nb := r.rxFrame(descAddr(r.mem, r.rx))
		if nb != 2 || !bytes.Equal(got, want) {
			t.Errorf("evt=%v: frame of %d bytes over %d buffers, want %d over 2", evt, len(got), nb, len(want))
		}
		r.close()
	}
}
