package l2tp

import "time"

// The reorder window (reorder=N, with seq=recv|both) is the kernel's
// reorder_timeout done the way seq.go decides: a frame up to
// reorder-frames-1 numbers ahead of the expected one is copied into a
// preallocated slot and held; it is delivered, in order, when the gap
// before it fills, or when a held frame has waited N (the gap is then
// counted lost, as SeqLost, and delivery goes on from the held frames), or
// when a frame further ahead pushes the window on. Frames behind the
// expected number are dropped (sequence) as without the window. The kernel,
// on a timeout, discards the frame that waited instead of the gap.
//
// It sits where a session's frames are handed to the caller (ReadFrames),
// so it works alike whether the session reads its socket alone or through
// the queue a shared socket's demultiplexer fills.

const (
	// DefaultReorderFrames is the window's width when reorder-frames is
	// not given.
	DefaultReorderFrames = 64
	// MaxReorderFrames bounds reorder-frames (memory: one slot per frame).
	MaxReorderFrames = 1024
	// MaxReorder bounds reorder: a frame held longer is no longer news.
	MaxReorder = 10 * time.Second
)

// reorderSource reads up to len(in) frames with their sequence numbers in
// ns; wait > 0 bounds the time it blocks (then it may return 0, nil).
type reorderSource func(in [][]byte, ns []uint32, wait time.Duration) (int, error)

// reorderWindow is one session's window. Only the ReadFrames goroutine
// touches it; nothing in it allocates after newReorderWindow.
type reorderWindow struct {
	src     reorderSource
	stats   *Stats
	timeout time.Duration
	width   uint32 // frames ahead of next that may be held: 1..width-1
	mask    uint32 // of the table (a power of two >= width)
	seq     seqState
	epoch   time.Time

	in [][]byte // what the source returned
	ns []uint32 // and their sequence numbers

	mem     []byte  // slots of slotLen bytes
	slotLen int     // the longest frame a slot holds
	lens    []int32 // frame length per slot
	free    []int32 // free slots (a stack)
	handed  []int32 // slots handed out by the last read: free at the next
	ready   []int32 // released slots waiting for room in out, in order
	held    []int32 // by ns&mask: the slot holding it, -1 none
	heldAt  []time.Duration
	nheld   int
	oldest  time.Duration // arrival of the oldest held frame, if fresh
	stale   bool          // oldest must be recomputed

	wait     time.Duration // what bounds the current source call (0: nothing)
	timer    *time.Timer   // bounds a queue wait; stopped otherwise
	deadline bool          // a socket read deadline is set

	out   [][]byte // the caller's frames during one read
	n     int      // filled in out
	bytes int
}

// newReorderWindow preallocates a window of width frames (rounded up to a
// power of two for the table) holding frames of up to slotLen bytes, for a
// source returning up to batch frames per call.
func newReorderWindow(src reorderSource, s *Stats, timeout time.Duration, width, batch, slotLen int) *reorderWindow {
	table := 1
	for table < width {
		table <<= 1
	}
	slots := width + batch
	w := &reorderWindow{
		src: src, stats: s, timeout: timeout, width: uint32(width), mask: uint32(table - 1),
		epoch: time.Now(), in: make([][]byte, batch), ns: make([]uint32, batch),
		mem: make([]byte, slots*slotLen), slotLen: slotLen, lens: make([]int32, slots),
		free: make([]int32, slots), handed: make([]int32, 0, slots), ready: make([]int32, 0, slots),
		held: make([]int32, table), heldAt: make([]time.Duration, table),
		timer: time.NewTimer(time.Hour),
	}
	w.timer.Stop()
	for i := range w.free {
		w.free[i] = int32(i)
	}
	for i := range w.held {
		w.held[i] = -1
	}
	return w
}

// read is ReadFrames with the window: it frees what the last read handed
// out, then returns frames released before, or due by now, or reads the
// source (waking when the oldest held frame is due) until some are in
// order. It counts what it delivers.
func (w *reorderWindow) read(out [][]byte) (int, error) {
	w.free = append(w.free, w.handed...)
	w.handed = w.handed[:0]
	w.out, w.n, w.bytes = out, 0, 0
	for {
		w.flushReady()
		if w.n > 0 {
			return w.finish(), nil
		}
		now := time.Since(w.epoch)
		wait := time.Duration(0)
		if w.nheld > 0 {
			w.expire(now)
			if w.n > 0 || len(w.ready) > 0 {
				continue
			}
			wait = max(w.oldestAt()+w.timeout-now, time.Microsecond)
		}
		w.wait = wait
		k, err := w.src(w.in[:min(len(out), len(w.in))], w.ns, wait)
		if err != nil {
			return 0, err
		}
		if k > 0 {
			now = time.Since(w.epoch)
		}
		for i := range k {
			w.accept(w.in[i], w.ns[i], now)
		}
	}
}

// finish counts the frames delivered and forgets the caller's slice.
func (w *reorderWindow) finish() int {
	n := w.n
	w.stats.addRx(uint64(n), uint64(w.bytes))
	w.out = nil
	return n
}

// accept places one frame by its number: in order, held, or dropped.
func (w *reorderWindow) accept(frame []byte, ns uint32, now time.Duration) {
	s := &w.seq
	if !s.synced {
		s.synced, s.next = true, ns
	}
	ahead := (ns - s.next) & seqMask
	switch {
	case ahead == 0:
	case ahead < seqMaxGap:
		s.oosRun = 0
		if ahead >= w.width { // the window moves on: the oldest gaps are lost
			w.skipTo((ns - w.width + 1) & seqMask)
			if ahead = (ns - s.next) & seqMask; ahead >= seqMaxGap { // a duplicate it released
				w.stats.rxDrops[DropSequence].Add(1)
				return
			}
		}
		if ahead > 0 {
			w.hold(frame, ns, now)
			return
		}
	default: // behind or implausibly far ahead: seq.go's rule
		if !s.resyncs(ns) {
			w.stats.rxDrops[DropSequence].Add(1)
			return
		}
		w.flushHeld()
		s.next = ns
	}
	s.oosRun = 0
	w.emit(frame, -1)
	s.next = (ns + 1) & seqMask
	w.drain()
}

// hold copies a frame ahead of the expected one into a slot; a duplicate,
// or one too long for a slot, is dropped (sequence).
func (w *reorderWindow) hold(frame []byte, ns uint32, now time.Duration) {
	i := ns & w.mask
	if w.held[i] >= 0 || len(frame) > w.slotLen {
		w.stats.rxDrops[DropSequence].Add(1)
		return
	}
	slot := w.copyIn(frame)
	w.held[i], w.heldAt[i] = slot, now
	if w.nheld == 0 {
		w.oldest, w.stale = now, false
	}
	w.nheld++
}

// copyIn copies frame into a free slot (there always is one: held frames
// plus this read's input never exceed width+batch).
func (w *reorderWindow) copyIn(frame []byte) int32 {
	slot := w.free[len(w.free)-1]
	w.free = w.free[:len(w.free)-1]
	copy(w.mem[int(slot)*w.slotLen:], frame)
	w.lens[slot] = int32(len(frame))
	return slot
}

// slotFrame is the frame slot holds.
func (w *reorderWindow) slotFrame(slot int32) []byte {
	at := int(slot) * w.slotLen
	end := at + int(w.lens[slot])
	return w.mem[at:end:end]
}

// emit delivers the next frame in order: into out while nothing released
// waits before it and there is room, else to the ready list (copied into a
// slot unless it is in one; one too long for a slot is dropped).
func (w *reorderWindow) emit(frame []byte, slot int32) {
	if len(w.ready) == 0 && w.n < len(w.out) {
		w.out[w.n] = frame
		w.n++
		w.bytes += len(frame)
		if slot >= 0 {
			w.handed = append(w.handed, slot)
		}
		return
	}
	if slot < 0 {
		if len(frame) > w.slotLen {
			w.stats.rxDrops[DropSequence].Add(1)
			return
		}
		slot = w.copyIn(frame)
	}
	w.ready = append(w.ready, slot)
}

// flushReady moves released frames into out while there is room.
func (w *reorderWindow) flushReady() {
	k := 0
	for ; k < len(w.ready) && w.n < len(w.out); k++ {
		f := w.slotFrame(w.ready[k])
		w.out[w.n] = f
		w.n++
		w.bytes += len(f)
		w.handed = append(w.handed, w.ready[k])
	}
	if k > 0 {
		w.ready = w.ready[:copy(w.ready, w.ready[k:])]
	}
}

// release hands on the held frame at table index i.
func (w *reorderWindow) release(i uint32) {
	slot := w.held[i]
	w.held[i] = -1
	w.nheld--
	w.stale = true
	w.emit(w.slotFrame(slot), slot)
}

// drain releases the held frames that follow next without a gap.
func (w *reorderWindow) drain() {
	s := &w.seq
	for w.nheld > 0 && w.held[s.next&w.mask] >= 0 {
		w.release(s.next & w.mask)
		s.next = (s.next + 1) & seqMask
	}
}

// skipTo moves next on to ns, releasing the held frames before it in order
// and counting the numbers missing among them lost.
func (w *reorderWindow) skipTo(ns uint32) {
	s := &w.seq
	lost := uint64(0)
	for w.nheld > 0 && s.next != ns {
		if i := s.next & w.mask; w.held[i] >= 0 {
			w.release(i)
		} else {
			lost++
		}
		s.next = (s.next + 1) & seqMask
	}
	lost += uint64((ns - s.next) & seqMask)
	s.next = ns
	if lost > 0 {
		w.stats.seqLost.Add(lost)
	}
	w.drain()
}

// flushHeld releases every held frame in order, counting the gaps lost
// (before a resync: they belong to the old numbering).
func (w *reorderWindow) flushHeld() {
	for w.nheld > 0 {
		w.skipTo(w.lowestHeld())
	}
}

// lowestHeld is the number of the held frame nearest next (nheld > 0).
func (w *reorderWindow) lowestHeld() uint32 {
	ns := w.seq.next
	for w.held[ns&w.mask] < 0 {
		ns = (ns + 1) & seqMask
	}
	return ns
}

// expire gives up the gaps before every frame that has waited the
// timeout: delivery goes on from the held frames, the gaps counted lost.
func (w *reorderWindow) expire(now time.Duration) {
	for w.nheld > 0 && w.oldestAt()+w.timeout <= now {
		w.skipTo(w.lowestHeld())
	}
}

// oldestAt is when the oldest held frame arrived (nheld > 0).
func (w *reorderWindow) oldestAt() time.Duration {
	if w.stale {
		w.oldest, w.stale = 1<<62, false
		for i, slot := range w.held {
			if slot >= 0 && w.heldAt[i] < w.oldest {
				w.oldest = w.heldAt[i]
			}
		}
	}
	return w.oldest
}

// popQueued is a windowed session's queue read: the numbers go to w.ns,
// and the timer ends the wait when a held frame is due.
func (w *reorderWindow) popQueued(q *sessionQueue, frames [][]byte) (int, error) {
	if w.wait <= 0 {
		return q.pop(frames, w.ns, nil)
	}
	w.timer.Reset(w.wait)
	n, err := q.pop(frames, w.ns, w.timer.C)
	w.timer.Stop()
	return n, err
}
