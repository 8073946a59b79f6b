package l2tp

import (
	"encoding/binary"
	"errors"
	"net"
	"sync"
	"testing"
)

// sendVia writes frames through s with its headroom.
func sendVia(s *Sender, frames ...[]byte) error {
	off := s.Headroom()
	bufs, sizes := make([][]byte, len(frames)), make([]int, len(frames))
	for i, f := range frames {
		bufs[i] = append(make([]byte, off), f...)
		sizes[i] = len(f)
	}
	return s.WriteFrames(bufs, sizes, off)
}

// TestSendersShareSequence runs four Senders of one tunnel at once under
// seq=both: the receiver (which drops anything out of order, like Linux)
// gets every frame, none counted as a sequence drop or gap.
func TestSendersShareSequence(t *testing.T) {
	a, b := openPair(t, true, false, ",seq=both", TunnelOptions{BatchSize: 8}, TunnelOptions{BatchSize: 64})
	const senders, batches, per = 4, 50, 8
	var wg sync.WaitGroup
	errs := make(chan error, senders)
	for k := range senders {
		s, err := a.NewSender()
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range batches {
				var fs [][]byte
				for j := range per {
					fs = append(fs, frameOf(k*10000+i*per+j, 80))
				}
				if err := sendVia(s, fs...); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	got := collect(t, b, senders*batches*per)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	st := b.Stats().Snapshot()
	if st.Drops[DropSequence] != 0 || st.SeqLost != 0 || len(got) != senders*batches*per {
		t.Fatalf("received %d, stats %s", len(got), st)
	}
	if tx := a.Stats().Snapshot().TxPackets; tx != senders*batches*per {
		t.Fatalf("sender stats count %d packets", tx)
	}
}

// TestSendersShareCounter checks QEMU's counter=on across Senders: every
// packet carries a distinct counter, 1..n.
func TestSendersShareCounter(t *testing.T) {
	a, b := openPair(t, true, false, ",counter=on", TunnelOptions{BatchSize: 8}, TunnelOptions{})
	// b decodes without looking at the counter; read it from the raw
	// datagram through a plain socket instead.
	b.Close()
	pc, err := net.ListenPacket("udp4", b.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	const n = 3 * 40
	var wg sync.WaitGroup
	for k := range 3 {
		s, err := a.NewSender()
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 40 / 4 {
				if err := sendVia(s, frameOf(k, 60), frameOf(i, 60), frameOf(i, 61), frameOf(i, 62)); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	seen := map[uint32]bool{}
	buf := make([]byte, 2048)
	for range n {
		m, _, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		// UDP word, session, then the counter (no cookie).
		if m < 12 {
			t.Fatalf("short datagram %d", m)
		}
		seen[binary.BigEndian.Uint32(buf[8:])] = true
	}
	wg.Wait()
	for c := uint32(1); c <= n; c++ {
		if !seen[c] {
			t.Fatalf("counter %d never sent (saw %d distinct)", c, len(seen))
		}
	}
}

// TestSenderClosedWithTunnel: closing the tunnel closes its Senders' copies
// of the socket (the port can be bound again) and they report
// net.ErrClosed; no Sender can be made afterwards.
func TestSenderClosedWithTunnel(t *testing.T) {
	a, _ := openPair(t, true, false, "", TunnelOptions{}, TunnelOptions{})
	s, err := a.NewSender()
	if err != nil {
		t.Fatal(err)
	}
	if err := sendVia(s, frameOf(1, 60)); err != nil {
		t.Fatal(err)
	}
	a.Close()
	if err := sendVia(s, frameOf(2, 60)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("WriteFrames after Close: %v", err)
	}
	if _, err := a.NewSender(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("NewSender after Close: %v", err)
	}
	pc, err := net.ListenPacket("udp4", a.LocalAddr())
	if err != nil {
		t.Fatalf("socket still held by a Sender: %v", err)
	}
	pc.Close()
}

// TestSenderNoAllocs: a Sender's steady-state send allocates nothing.
func TestSenderNoAllocs(t *testing.T) {
	a, b := openPair(t, true, false, ",seq=both", TunnelOptions{BatchSize: 16}, TunnelOptions{BatchSize: 64})
	s, err := a.NewSender()
	if err != nil {
		t.Fatal(err)
	}
	off := s.Headroom()
	bufs, sizes := make([][]byte, 16), make([]int, 16)
	for i := range bufs {
		bufs[i] = append(make([]byte, off), frameOf(i, 100)...)
		sizes[i] = 100
	}
	go func() {
		frames := make([][]byte, 64)
		for {
			if _, err := b.ReadFrames(frames); err != nil {
				return
			}
		}
	}()
	if allocs := testing.AllocsPerRun(200, func() {
		if err := s.WriteFrames(bufs, sizes, off); err != nil {
			t.Fatal(err)
		}
	}); allocs != 0 {
		t.Fatalf("%v allocs per batch", allocs)
	}
}

// TestTunnelAndSendersShareSequence: the tunnel's own WriteFrames is its
// first send queue, so it may run beside its Senders under seq=both (it
// used to number on its own: the receiver dropped the mix as out of order).
func TestTunnelAndSendersShareSequence(t *testing.T) {
	a, b := openPair(t, true, false, ",seq=both", TunnelOptions{BatchSize: 8}, TunnelOptions{BatchSize: 64})
	s, err := a.NewSender()
	if err != nil {
		t.Fatal(err)
	}
	const batches, per = 50, 8
	send := func(k int, write func(bufs [][]byte, sizes []int, off int) error) error {
		off := a.Headroom()
		for i := range batches {
			bufs, sizes := make([][]byte, per), make([]int, per)
			for j := range per {
				bufs[j] = append(make([]byte, off), frameOf(k*10000+i*per+j, 80)...)
				sizes[j] = 80
			}
			if err := write(bufs, sizes, off); err != nil {
				return err
			}
		}
		return nil
	}
	errs := make(chan error, 2)
	go func() { errs <- send(0, a.WriteFrames) }()
	go func() { errs <- send(1, s.WriteFrames) }()
	got := collect(t, b, 2*batches*per)
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	st := b.Stats().Snapshot()
	if st.Drops[DropSequence] != 0 || st.SeqLost != 0 || len(got) != 2*batches*per {
		t.Fatalf("received %d, stats %s", len(got), st)
	}
}
