package l2tp

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// connectTunnel connects the tunnel's socket to its peer, as a caller
// tuning for speed might: ICMP errors for the peer (port unreachable) are
// then queued on the socket and reported by the next recvmmsg or sendmmsg
// as ECONNREFUSED. The tunnel's own socket is unconnected and never sees
// them; this checks that both paths would survive it anyway.
func connectTunnel(t *testing.T, tun *Tunnel) {
	t.Helper()
	var errno syscall.Errno
	err := tun.rx.rc.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall(unix.SYS_CONNECT, fd,
			uintptr(unsafe.Pointer(tun.tx.peer.ptr())), uintptr(tun.tx.peer.len))
	})
	if err != nil || errno != 0 {
		t.Fatalf("connect %s: %v %v", tun.PeerAddr(), err, errno)
	}
}

// TestPeerGoneAndBack closes the peer's socket (every datagram then earns
// an ICMP port unreachable), keeps sending and receiving, and reopens the
// peer: nothing fails, nothing the kernel accepted is lost, no frame is
// refused, and traffic resumes. Run both with the tunnel's unconnected
// socket and with a connected one (ECONNREFUSED reported on both paths).
func TestPeerGoneAndBack(t *testing.T) {
	for _, connected := range []bool{false, true} {
		t.Run(fmt.Sprintf("connected=%v", connected), func(t *testing.T) {
			a, b := openPair(t, true, false, "", TunnelOptions{BatchSize: 16}, TunnelOptions{})
			if connected {
				connectTunnel(t, a)
			}
			bCfg := b.Config()
			b.Close() // the peer is gone

			var readErr atomic.Value
			got := make(chan []byte, 16)
			go func() {
				frames := make([][]byte, a.BatchSize())
				for {
					n, err := a.ReadFrames(frames)
					if err != nil {
						readErr.Store(err)
						close(got)
						return
					}
					for _, f := range frames[:n] {
						got <- bytes.Clone(f)
					}
				}
			}()
			const gone = 2000
			for i := 0; i < gone; i += 50 {
				var batch [][]byte
				for k := range 50 {
					batch = append(batch, frameOf(i+k, 100))
				}
				send(t, a, batch...)
				time.Sleep(time.Millisecond) // let the ICMP errors come back
			}
			s := a.Stats().Snapshot()
			if s.TxPackets != gone || s.Drops[DropSendError] != 0 {
				t.Fatalf("peer gone: %d of %d frames sent, send errors %d (%s)", s.TxPackets, gone, s.Drops[DropSendError], s)
			}
			if err, _ := readErr.Load().(error); err != nil {
				t.Fatalf("ReadFrames failed while the peer was gone: %v", err)
			}

			// The peer returns on the same port.
			b2, err := Open(bCfg, TunnelOptions{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { b2.Close() })
			send(t, a, frameOf(1, 200))
			if f := collect(t, b2, 1); !bytes.Equal(f[0], frameOf(1, 200)) {
				t.Fatal("a → b after the peer returned: wrong frame")
			}
			send(t, b2, frameOf(2, 300))
			select {
			case f, ok := <-got:
				if !ok {
					t.Fatalf("ReadFrames ended: %v", readErr.Load())
				}
				if !bytes.Equal(f, frameOf(2, 300)) {
					t.Fatal("b → a after the peer returned: wrong frame")
				}
			case <-time.After(5 * time.Second):
				t.Fatal("b → a: nothing arrived after the peer returned")
			}
			a.Close()
			for range got {
			}
			if err, _ := readErr.Load().(error); !errors.Is(err, net.ErrClosed) {
				t.Fatalf("ReadFrames ended with %v, want net.ErrClosed at Close", err)
			}
		})
	}
}

// TestWriteFramesStorms injects long runs of EAGAIN, ENOBUFS and
// ECONNREFUSED into sendmmsg: every frame still arrives, in order, and
// the waits are parked, not spun (bounded sendmmsg calls per second).
func TestWriteFramesStorms(t *testing.T) {
	for _, tc := range []struct {
		errno   unix.Errno
		storm   time.Duration
		maxRate float64 // sendmmsg calls per second of storm, at most
	}{
		{unix.EAGAIN, 300 * time.Millisecond, 100},   // parked on the netpoller, 50 ms bound
		{unix.ENOBUFS, 300 * time.Millisecond, 1500}, // 1 ms retries
		{unix.ECONNREFUSED, 0, 0},                    // one at a time, resent at once
	} {
		t.Run(tc.errno.Error(), func(t *testing.T) {
			a, b := openPair(t, true, false, "", TunnelOptions{BatchSize: 8}, TunnelOptions{})
			var calls, failed int
			var until time.Time
			a.tx.sendFn = func(fd uintptr, msgs []mmsghdr) (int, unix.Errno) {
				calls++
				if tc.errno == unix.ECONNREFUSED && calls%2 == 1 {
					failed++
					return 0, tc.errno
				}
				if until.IsZero() {
					until = time.Now().Add(tc.storm)
				}
				if time.Now().Before(until) {
					failed++
					return 0, tc.errno
				}
				return sendmmsg(fd, msgs)
			}
			var frames [][]byte
			for i := range 40 {
				frames = append(frames, frameOf(i, 100))
			}
			start := time.Now()
			var ru0, ru1 unix.Rusage
			unix.Getrusage(unix.RUSAGE_SELF, &ru0)
			send(t, a, frames...)
			unix.Getrusage(unix.RUSAGE_SELF, &ru1)
			wall := time.Since(start)
			got := collect(t, b, len(frames))
			for i := range frames {
				if !bytes.Equal(got[i], frames[i]) {
					t.Fatalf("frame %d lost or out of order", i)
				}
			}
			cpu := time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
			if s := a.Stats().Snapshot(); s.TxPackets != uint64(len(frames)) || s.Dropped() != 0 {
				t.Fatalf("stats %s", s)
			}
			if tc.storm > 0 {
				rate := float64(failed) / tc.storm.Seconds()
				if rate > tc.maxRate {
					t.Errorf("%d failed sendmmsg calls in a %v storm: %.0f/s, want <= %.0f/s (a busy loop?)", failed, tc.storm, rate, tc.maxRate)
				}
				if cpu > wall/2 {
					t.Errorf("%v of CPU in %v of storm: a busy loop?", cpu, wall)
				}
			}
			t.Logf("%d failed sendmmsg calls, %d in all, %v wall, %v CPU (process)", failed, calls, wall.Round(time.Millisecond), cpu.Round(time.Millisecond))
		})
	}
}
