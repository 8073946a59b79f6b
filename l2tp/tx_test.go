package l2tp

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestWriteFramesErrors injects sendmmsg results: EAGAIN and ENOBUFS make
// WriteFrames wait and resend from the first unsent frame; an error once
// (a one-shot socket error an ICMP message left) is resent; an error that
// refuses the same frame twice drops exactly that frame; nothing else is
// lost or reordered.
func TestWriteFramesErrors(t *testing.T) {
	a, b := openPair(t, true, false, "", TunnelOptions{BatchSize: 8}, TunnelOptions{})
	// script: what each sendmmsg call does: an errno, or 0 to send up to
	// limit messages for real.
	script := []struct {
		errno unix.Errno
		limit int
	}{
		{0, 3}, {unix.EAGAIN, 0}, {unix.EAGAIN, 0}, {0, 2}, {unix.EMSGSIZE, 0}, {unix.EMSGSIZE, 0},
		{unix.ENOBUFS, 0}, {unix.ENOBUFS, 0}, {unix.ENOBUFS, 0}, {0, 100},
		{unix.ECONNREFUSED, 0}, {0, 1}, {unix.EHOSTUNREACH, 0}, {unix.EHOSTUNREACH, 0},
	}
	step := 0
	a.tx.sendFn = func(fd uintptr, msgs []mmsghdr) (int, unix.Errno) {
		if step < len(script) {
			s := script[step]
			step++
			if s.errno != 0 {
				return 0, s.errno
			}
			return sendmmsg(fd, msgs[:min(len(msgs), s.limit)])
		}
		return sendmmsg(fd, msgs)
	}
	var frames [][]byte
	for i := range 20 {
		frames = append(frames, frameOf(i, 60+i))
	}
	send(t, a, frames...)
	// Batch 0-7: 3 sent, EAGAIN×2, 2 sent, EMSGSIZE×2 drops 5, ENOBUFS×3,
	// 6-7 sent. Batch 8-15: ECONNREFUSED once, 8 resent, EHOSTUNREACH×2
	// drops 9, the rest sent.
	got := collect(t, b, 18)
	dropped := map[int]bool{}
	j := 0
	for i := range frames {
		if j < len(got) && bytes.Equal(got[j], frames[i]) {
			j++
			continue
		}
		dropped[i] = true
	}
	if j != 18 || len(dropped) != 2 || !dropped[5] || !dropped[9] {
		t.Fatalf("delivered %d in order, dropped %v", j, dropped)
	}
	s := a.Stats().Snapshot()
	if s.Drops[DropSendError] != 2 || s.TxPackets != 18 || s.TxStalls != 2 || s.TxQueueFull != 3 {
		t.Fatalf("stats %s", s)
	}
}

// TestTunnelConcurrent runs both directions of both tunnels at once (run
// with -race): each tunnel's reader and writer share nothing but counters.
func TestTunnelConcurrent(t *testing.T) {
	a, b := openPair(t, true, true, ",seq=both", TunnelOptions{BatchSize: 16}, TunnelOptions{BatchSize: 16})
	const n = 2000
	errc := make(chan error, 4)
	for _, ends := range [][2]*Tunnel{{a, b}, {b, a}} {
		go func() {
			for i := 0; i < n; i += 50 {
				var batch [][]byte
				for k := range 50 {
					batch = append(batch, frameOf(i+k, 100))
				}
				if err := sendErr(ends[0], batch...); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
		go func() {
			got, err := collectErr(ends[1], n)
			for i := range got {
				if err == nil && !bytes.Equal(got[i], frameOf(i, 100)) {
					err = fmt.Errorf("frame %d out of order or corrupt", i)
				}
			}
			errc <- err
		}()
	}
	for range 4 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
}

// TestWriteFramesErrorPathsNoAllocs: the refusal paths (ENOBUFS and its
// sleep, a one-shot error and the error-queue drain, a GSO fallback)
// allocate nothing.
func TestWriteFramesErrorPathsNoAllocs(t *testing.T) {
	a, b := openPair(t, true, false, "", TunnelOptions{BatchSize: 64}, TunnelOptions{BatchSize: 64})
	calls := 0
	a.tx.sendFn = func(fd uintptr, msgs []mmsghdr) (int, unix.Errno) {
		calls++
		switch calls % 7 {
		case 1, 2: // refused twice: a GSO message falls back, a single one is dropped
			return 0, unix.EINVAL
		case 4:
			return 0, unix.ENOBUFS
		case 6:
			return 0, unix.ECONNREFUSED
		}
		return sendmmsg(fd, msgs[:min(len(msgs), 5)])
	}
	off := a.Headroom()
	bufs, sizes := make([][]byte, 64), make([]int, 64)
	for i := range bufs {
		bufs[i], sizes[i] = make([]byte, off+100), 100
	}
	frames := make([][]byte, 64)
	var rxd uint64
	gso := a.tx.gsoMax
	if gso == 0 {
		t.Skip("UDP_SEGMENT not available on this kernel")
	}
	allocs := testing.AllocsPerRun(20, func() {
		a.tx.drainAt = time.Time{}            // drain the error queue every batch
		a.tx.gsoMax, a.tx.gsoOff = gso, false // GSO on again, so that it can fall back
		if err := a.WriteFrames(bufs, sizes, off); err != nil {
			t.Fatal(err)
		}
		for sent := a.Stats().Snapshot().TxPackets; rxd < sent; {
			n, err := b.ReadFrames(frames)
			if err != nil {
				t.Fatal(err)
			}
			rxd += uint64(n)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocs per batch", allocs)
	}
	if s := a.Stats().Snapshot(); s.TxQueueFull == 0 || s.GSOFallbacks == 0 || s.Drops[DropSendError] == 0 {
		t.Fatalf("not every path was taken: %s", s)
	}
}
