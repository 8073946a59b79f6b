package vhostuser

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/vhostuser/vhosttest"
)

// TestTXLayouts pops single, chained and indirect TX chains and checks frames, used ring
// and notification.
func TestTXLayouts(t *testing.T) {
	r := newRig(t, rigOpts{})
	f1, f2, f3, f4 := frame(60, 1), frame(1514, 2), frame(9000, 3), frame(300, 4)
	h1 := r.putTX(f1, false)                 // header and frame in one buffer
	h2 := r.putTX(f2, false, 12, 500, 500)   // header alone, then three pieces
	h3 := r.putTX(f3, true, 20, 4000)        // indirect, header split across buffers
	h4 := r.putTX(f4, true, 5, 5, 2, 100, 1) // indirect, tiny pieces
	r.tx.SetUsedEvent(0)
	r.tx.PublishKick()
	got := readN(t, r.q, 4)
	for i, want := range [][]byte{f1, f2, f3, f4} {
		if !bytes.Equal(got[i], want) {
			t.Errorf("frame %d: got %d bytes, want %d", i, len(got[i]), len(want))
		}
	}
	for _, h := range []uint16{h1, h2, h3, h4} {
		id, n, ok := r.tx.PopUsed()
		if !ok || id != h || n != 0 {
			t.Errorf("used: id %d len %d ok %v, want head %d len 0", id, n, ok, h)
		}
	}
	if err := r.tx.WaitCall(time.Second); err != nil {
		t.Error(err)
	}
	st := r.srv.Stats()
	if st.TXFrames != 4 || st.TXBytes != uint64(60+1514+9000+300) || st.RingViolations != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestTXDrops drops a frame larger than the caller's buffer and an empty one, and goes on.
func TestTXDrops(t *testing.T) {
	r := newRig(t, rigOpts{})
	r.putTX(frame(2000, 1), false)
	r.putTX(nil, false) // header only
	a := r.mem.Alloc(64, 8)
	r.tx.Add([]vhosttest.Seg{{Addr: a, Len: 0}}) // zero-length descriptor, no header at all
	ok := frame(100, 2)
	r.putTX(ok, false)
	r.tx.PublishKick()
	bufs := [][]byte{make([]byte, 1500), make([]byte, 1500)}
	sizes := make([]int, 2)
	n, err := r.q.ReadFrames(bufs, sizes, 0)
	if err != nil || n != 1 || !bytes.Equal(bufs[0][:sizes[0]], ok) {
		t.Fatalf("ReadFrames = %d, %v", n, err)
	}
	if st := r.srv.Stats(); st.TXDropped != 3 || st.RingViolations != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestRXMergeable spreads 9000-byte and 64 KiB frames over 1536-byte buffers with
// num_buffers set, across a guest-memory region boundary too.
func TestRXMergeable(t *testing.T) {
	for _, split := range []bool{false, true} {
		r := newRig(t, rigOpts{split: split})
		if split {
			// One buffer straddling the two regions.
			a := r.mem.AllocAt(r.mem.Regions[1].GPA-700, 1536)
			r.rx.Add([]vhosttest.Seg{{Addr: a, Len: 1536, Write: true}})
		}
		r.rxBuffers(127, 1536)
		r.rx.Publish()
		frames := [][]byte{frame(9000, 1), frame(60, 2), frame(65535, 3), frame(1514, 4)}
		if err := r.q.WriteFrames(frames); err != nil {
			t.Fatal(err)
		}
		wantBufs := []int{6, 1, 43, 1}
		for i, want := range frames {
			got, nb := r.rxFrame(descAddr(r.mem, r.rx))
			if !bytes.Equal(got, want) || nb != wantBufs[i] {
				t.Errorf("split=%v frame %d: %d bytes in %d buffers, want %d in %d", split, i, len(got), nb, len(want), wantBufs[i])
			}
		}
		if err := r.rx.WaitCall(time.Second); err != nil {
			t.Error(err)
		}
		if st := r.srv.Stats(); st.RXFrames != 4 || st.RXDropped != 0 {
			t.Errorf("stats %+v", st)
		}
	}
}

// TestRXWithoutMergeable puts each frame in one chain and drops one too big for it.
func TestRXWithoutMergeable(t *testing.T) {
	r := newRig(t, rigOpts{features: allFeatures &^ vhosttest.FMrgRxbuf})
	for range 4 {
		h, l := r.mem.Alloc(12, 8), r.mem.Alloc(1514, 8) // header buffer + data, like Linux
		r.rx.Add([]vhosttest.Seg{{Addr: h, Len: 12, Write: true}, {Addr: l, Len: 1514, Write: true}})
	}
	r.rx.Publish()
	small, big := frame(1514, 1), frame(3000, 2)
	if err := r.q.WriteFrames([][]byte{small, big, small}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		id, n, ok := r.rx.PopUsed()
		if !ok || n != 12+1514 {
			t.Fatalf("used %d %d %v", id, n, ok)
		}
		data := r.mem.At(descAddr(r.mem, r.rx)(id), 12)
		if data[10] != 1 {
			t.Errorf("num_buffers %d", data[10])
		}
	}
	if st := r.srv.Stats(); st.RXFrames != 2 || st.RXDropped != 1 {
		t.Errorf("stats %+v", st)
	}
}

// TestEventIdxSuppression checks used_event decides the call and avail_event is published
// before the worker sleeps.
func TestEventIdxSuppression(t *testing.T) {
	r := newRig(t, rigOpts{})
	r.rxBuffers(8, 2048)
	r.rx.Publish()
	r.rx.Calls() // the start's own notification
	// The first batch after a start always notifies (no previous decision to compare with).
	if err := r.q.WriteFrames([][]byte{frame(100, 0)}); err != nil {
		t.Fatal(err)
	}
	if c := r.rx.Calls(); c != 1 {
		t.Errorf("first batch notified %d times, want 1", c)
	}
	r.rx.SetUsedEvent(100) // "tell me when used->idx passes 100"
	if err := r.q.WriteFrames([][]byte{frame(100, 1)}); err != nil {
		t.Fatal(err)
	}
	if c := r.rx.Calls(); c != 0 {
		t.Errorf("notified %d times although used_event is far ahead", c)
	}
	r.rx.SetUsedEvent(2) // the next used entry (idx 2 -> 3) crosses it
	if err := r.q.WriteFrames([][]byte{frame(100, 2)}); err != nil {
		t.Fatal(err)
	}
	if c := r.rx.Calls(); c != 1 {
		t.Errorf("notified %d times, want 1", c)
	}
	// TX: nothing queued, ReadFrames parks after setting avail_event to the avail index.
	done := make(chan int)
	go func() { done <- len(readN(t, r.q, 1)) }()
	deadline := time.Now().Add(2 * time.Second)
	for r.srv.Stats().Waits == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if ev := r.tx.AvailEvent(); ev != 0 {
		t.Errorf("avail_event %d, want 0", ev)
	}
	r.putTX(frame(64, 3), false)
	if !r.tx.PublishKick() {
		t.Error("device did not ask for a kick")
	}
	if n := <-done; n != 1 {
		t.Errorf("got %d frames", n)
	}
}

// TestNoInterrupt honours VRING_AVAIL_F_NO_INTERRUPT without EVENT_IDX.
func TestNoInterrupt(t *testing.T) {
	r := newRig(t, rigOpts{features: allFeatures &^ (vhosttest.FEventIdx | vhosttest.FNotifyOnEmpty)})
	r.rxBuffers(8, 2048)
	r.rx.SetNoInterrupt(true)
	r.rx.Publish()
	r.rx.Calls() // the start's own notification
	r.q.WriteFrames([][]byte{frame(100, 1)})
	if c := r.rx.Calls(); c != 0 {
		t.Errorf("notified %d times with NO_INTERRUPT", c)
	}
	r.rx.SetNoInterrupt(false)
	r.q.WriteFrames([][]byte{frame(100, 1)})
	if c := r.rx.Calls(); c != 1 {
		t.Errorf("notified %d times, want 1", c)
	}
}

// TestFlushOnPeerReady blocks WriteFrames on an RX ring that has too few buffers and lets a
// slow guest refill it; every frame must arrive, in order, with and without EVENT_IDX.
func TestFlushOnPeerReady(t *testing.T) {
	for _, evt := range []bool{true, false} {
		feat := uint64(allFeatures)
		if !evt {
			feat &^= vhosttest.FEventIdx | vhosttest.FNotifyOnEmpty
		}
		r := newRig(t, rigOpts{features: feat, num: 16})
		var spare []uint64 // buffers the guest owns and may post
		for range 16 {
			spare = append(spare, r.mem.Alloc(2048, 8))
		}
		addrOf := descAddr(r.mem, r.rx)
		const total = 300
		frames := make([][]byte, total)
		for i := range frames {
			frames[i] = frame(64+i%1400, byte(i))
		}
		errc := make(chan error, 1)
		go func() {
			for i := 0; i < total; i += 50 {
				if err := r.q.WriteFrames(frames[i : i+50]); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
		time.Sleep(20 * time.Millisecond) // the ring is empty: the writer must park
		got := 0
		deadline := time.Now().Add(10 * time.Second)
		for got < total && time.Now().Before(deadline) {
			for {
				id, n, ok := r.rx.PopUsed()
				if !ok {
					break
				}
				a := addrOf(id)
				if b := r.mem.At(a, uint64(n)); !bytes.Equal(b[netHdrLen:], frames[got]) {
					t.Fatalf("evt=%v frame %d corrupt or out of order", evt, got)
				}
				spare = append(spare, a)
				got++
			}
			for k := 0; k < 3 && len(spare) > 0; k++ { // refill slowly, a few at a time
				a := spare[len(spare)-1]
				spare = spare[:len(spare)-1]
				r.rx.Add([]vhosttest.Seg{{Addr: a, Len: 2048, Write: true}})
			}
			r.rx.PublishKick()
			time.Sleep(time.Millisecond)
		}
		if err := <-errc; err != nil || got != total {
			t.Fatalf("evt=%v: %d of %d frames, %v", evt, got, total, err)
		}
		if st := r.srv.Stats(); st.RXDropped != 0 || st.Waits == 0 {
			t.Errorf("evt=%v stats %+v", evt, st)
		}
	}
}

// TestStopRestart stops the TX ring under a blocked ReadFrames, checks the order of events
// and the base, then restarts both rings from the returned bases.
func TestStopRestart(t *testing.T) {
	r := newRig(t, rigOpts{})
	r.putTX(frame(100, 1), false)
	r.tx.PublishKick()
	readN(t, r.q, 1)
	errc := make(chan error, 1)
	go func() {
		_, err := r.q.ReadFrames([][]byte{make([]byte, 2000)}, []int{0}, 0)
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond)
	base, err := r.fe.GetVringBase(1)
	if err != nil || base != 1 {
		t.Fatalf("GET_VRING_BASE = %d, %v", base, err)
	}
	// Stopped must come after the blocked call returned.
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("blocked ReadFrames returned %v", err)
		}
	default:
		t.Fatal("GET_VRING_BASE answered while ReadFrames was still blocked")
	}
	if i := r.h.waitStopped(t); i != 0 {
		t.Errorf("stopped pair %d", i)
	}
	if err := r.q.WriteFrames([][]byte{frame(10, 1)}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("WriteFrames on a stopped pair: %v", err)
	}
	// Restart TX (RX stayed started) from the base.
	if err := r.fe.StartQueue(1, r.tx, uint16(base)); err != nil {
		t.Fatal(err)
	}
	q := r.h.waitStarted(t)
	if q == r.q {
		t.Fatal("restart reused the old QueuePair")
	}
	r.putTX(frame(200, 2), false)
	r.tx.PublishKick()
	if got := readN(t, q, 1); len(got[0]) != 200 {
		t.Errorf("after restart: %d bytes", len(got[0]))
	}
}

// TestDisabledRings drains and discards a disabled TX ring and holds frames for a
// disabled RX ring until it is enabled.
func TestDisabledRings(t *testing.T) {
	r := newRig(t, rigOpts{})
	for _, i := range []uint32{0, 1} {
		if err := r.fe.Set(vhosttest.SetVringEnable, vhosttest.State(i, 0)); err != nil {
			t.Fatal(err)
		}
	}
	r.putTX(frame(100, 1), false)
	r.putTX(frame(100, 2), false)
	r.tx.PublishKick()
	rd := make(chan error, 1)
	go func() {
		_, err := r.q.ReadFrames([][]byte{make([]byte, 2000)}, []int{0}, 0)
		rd <- err
	}()
	deadline := time.Now().Add(2 * time.Second)
	for r.srv.Stats().TXDropped < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if st := r.srv.Stats(); st.TXDropped != 2 || st.TXFrames != 0 {
		t.Errorf("disabled TX: %+v", st)
	}
	r.rxBuffers(4, 2048)
	r.rx.Publish()
	wr := make(chan error, 1)
	go func() { wr <- r.q.WriteFrames([][]byte{frame(100, 3)}) }()
	time.Sleep(20 * time.Millisecond)
	if _, _, ok := r.rx.PopUsed(); ok {
		t.Fatal("a disabled RX ring was filled")
	}
	if err := r.fe.Set(vhosttest.SetVringEnable, vhosttest.State(0, 1)); err != nil {
		t.Fatal(err)
	}
	if err := <-wr; err != nil {
		t.Fatal(err)
	}
	if _, n, ok := r.rx.PopUsed(); !ok || n != 112 {
		t.Errorf("after enable: used len %d ok %v", n, ok)
	}
	r.q.Close()
	if err := <-rd; !errors.Is(err, net.ErrClosed) {
		t.Errorf("ReadFrames after Close: %v", err)
	}
}

// TestMemTableSwap replaces the memory table while both workers are busy.
func TestMemTableSwap(t *testing.T) {
	r := newRig(t, rigOpts{})
	stop := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				errc <- nil
				return
			default:
			}
			if err := r.fe.SetMemTable(r.mem); err != nil {
				errc <- err
				return
			}
		}
	}()
	r.rxBuffers(200, 2048)
	r.rx.Publish()
	for i := range 100 {
		r.putTX(frame(100+i, byte(i)), false)
		r.tx.PublishKick()
		got := readN(t, r.q, 1)
		if len(got[0]) != 100+i {
			t.Fatalf("frame %d: %d bytes", i, len(got[0]))
		}
		if err := r.q.WriteFrames([][]byte{got[0]}); err != nil {
			t.Fatal(err)
		}
		r.tx.PopUsed()
	}
	close(stop)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if st := r.srv.Stats(); st.RXFrames != 100 || st.RingViolations != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestDeliverFramesDisabled: DeliverFrames delivers into an enabled RX ring,
// and on a ring the front end disabled returns at once with ErrRXDisabled
// and the count delivered, where WriteFrames would wait; RXEnabled follows
// SET_VRING_ENABLE; per-queue counters see the frames.
func TestDeliverFramesDisabled(t *testing.T) {
	r := newRig(t, rigOpts{})
	r.rxBuffers(8, 2048)
	r.rx.Publish()
	if !r.q.RXEnabled() {
		t.Fatal("RX ring not reported enabled")
	}
	if n, err := r.q.DeliverFrames([][]byte{frame(60, 1), frame(60, 2)}); n != 2 || err != nil {
		t.Fatalf("DeliverFrames = %d, %v", n, err)
	}
	if err := r.fe.Set(vhosttest.SetVringEnable, vhosttest.State(0, 0)); err != nil {
		t.Fatal(err)
	}
	if r.q.RXEnabled() {
		t.Fatal("RX ring still reported enabled")
	}
	n, err := r.q.DeliverFrames([][]byte{frame(60, 3)})
	if n != 0 || !errors.Is(err, ErrRXDisabled) {
		t.Fatalf("DeliverFrames on a disabled ring = %d, %v", n, err)
	}
	if st := r.srv.Stats(); len(st.Queues) != 1 || st.Queues[0].RXFrames != 2 {
		t.Fatalf("per-queue stats %+v", st.Queues)
	}
}

// ackWatch is a transport that calls onAck, on the control goroutine, as it sends the reply
// to each SET_MEM_TABLE.
type ackWatch struct {
	transport
	onAck func()
}

// send calls onAck before a SET_MEM_TABLE reply goes out.
func (w *ackWatch) send(p []byte) error {
	if len(p) >= hdrSize && request(binary.NativeEndian.Uint32(p)) == reqSetMemTable {
		w.onAck()
	}
	return w.transport.send(p)
}

// TestMemTableUnmappedAfterReply: SET_MEM_TABLE's REPLY_ACK goes out while the table it
// replaced is still mapped, and that table is unmapped before the next request is served
// (munmap of memory the workers were touching costs more than the rest of the request).
// Before, the old table was unmapped before the reply.
func TestMemTableUnmappedAfterReply(t *testing.T) {
	fe, conn, err := vhosttest.Pair()
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Config{Logger: testLogger()}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	var tables []*memTable // s.mem at each reply
	var mappedAtReply []bool
	w := &ackWatch{transport: newUnixTransport(conn)}
	s := newSession(&cfg, newRecorder(), cfg.Logger, w)
	w.onAck = func() {
		if n := len(tables); n > 0 {
			mappedAtReply = append(mappedAtReply, mapped(t, tables[n-1]))
		}
		tables = append(tables, s.mem)
	}
	done := make(chan error, 1)
	go func() { done <- s.run() }()
	defer func() { fe.Close(); <-done }()
	if _, err := fe.Negotiate(allFeatures, allProto); err != nil {
		t.Fatal(err)
	}
	mem, err := vhosttest.NewMemory(1<<20, false)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	for range 3 {
		if err := fe.SetMemTable(mem); err != nil {
			t.Fatal(err)
		}
	}
	// Served after the third SET_MEM_TABLE: what the control goroutine did since is seen.
	if _, err := fe.Get(vhosttest.GetFeatures, nil); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(mappedAtReply, []bool{true, true}) {
		t.Errorf("the replaced table mapped when the reply went out: %v, want [true true]", mappedAtReply)
	}
	for i, tb := range tables[:2] {
		if mapped(t, tb) {
			t.Errorf("table %d still mapped after the next request", i)
		}
	}
}

// mapped reports whether tb's first region is mapped in this process (/proc/self/maps).
func mapped(t *testing.T, tb *memTable) bool {
	t.Helper()
	m := tb.regions[0].mapping
	if m == nil {
		return false
	}
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Error(err) // called on the control goroutine too: no Fatal
	}
	return strings.Contains(string(b), fmt.Sprintf("\n%x-", uintptr(unsafe.Pointer(&m[0]))))
}
