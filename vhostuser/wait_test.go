package vhostuser

import (
	"errors"
	"strings"
	"testing"
	"time"

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
