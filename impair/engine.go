package impair

import (
	"math"
	"math/rand/v2"
)

// Drop is why the Engine dropped a frame.
type Drop uint8

// The reasons an Engine drops a frame.
const (
	DropLoss  Drop = iota // random or Gilbert–Elliott loss
	DropRate              // the line was full behind a rate limit
	DropLimit             // the line was full and the spec set limit
	NumDrops
)

// Counters are what an Engine did, frame by frame.
type Counters struct {
	Queued     uint64 // frames taken into the line (duplicates included)
	Duplicated uint64
	Corrupted  uint64
	Reordered  uint64 // frames sent at once, past delayed ones
	Drops      [NumDrops]uint64
}

// slotFrameRoom is the room each slot has from the start for a frame
// (an Ethernet frame of a 1500-byte MTU and a VLAN tag, with margin); a
// larger frame grows its slot once.
const slotFrameRoom = 2048

// slot holds one frame waiting in the line.
type slot struct {
	buf  []byte // headroom + frame
	size int
	due  int64  // nanoseconds on the caller's clock
	seq  uint64 // arrival order, to break ties
}

// Engine applies a Spec to frames offered one at a time, holding each in a
// preallocated slot until it is due. It has no clock and no goroutine: the
// caller passes the time, so a seed and a clock replay the same pattern.
// It is not safe for concurrent use (a Line guards it).
type Engine struct {
	spec     Spec
	rng      *rand.Rand
	headroom int

	slots []slot
	free  []int32 // indexes of free slots
	heap  []int32 // queued slots, a min-heap by (due, seq)
	taken []int32 // slots handed out by Pop, freed by Release

	seq      uint64
	lastSent int64 // when the rate limiter let the last frame go
	bad      bool  // Gilbert–Elliott state
	sinceGap int   // frames since the last reordered one

	Counters Counters
}

// NewEngine preallocates a line of spec.Capacity() slots, each with
// headroom bytes in front of the frame (the caller's encapsulation room).
// seed is used when the spec sets none.
func NewEngine(spec Spec, headroom int, seed uint64) *Engine {
	if spec.SeedSet {
		seed = spec.Seed
	}
	n := spec.Capacity()
	e := &Engine{spec: spec, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), headroom: headroom,
		slots: make([]slot, n), free: make([]int32, n), heap: make([]int32, 0, n), taken: make([]int32, 0, n)}
	for i := range e.slots {
		e.slots[i].buf = make([]byte, headroom+slotFrameRoom)
		e.free[i] = int32(n - 1 - i)
	}
	return e
}

// Spec is what the engine applies.
func (e *Engine) Spec() Spec { return e.spec }

// Free is the number of frames the line can still take.
func (e *Engine) Free() int { return len(e.free) }

// Len is the number of frames waiting in the line.
func (e *Engine) Len() int { return len(e.heap) }

// Offer runs one frame through the impairments at time now: it may be
// lost, duplicated, corrupted (one bit flipped in the copy), given a due
// time, or dropped because the line is full. It reports false only when
// the line is full and the spec holds the sender back instead of dropping
// (nothing was done: offer it again once there is room).
func (e *Engine) Offer(frame []byte, now int64) bool {
	if len(e.free) == 0 {
		if !e.spec.DropsWhenFull() {
			return false
		}
		e.dropFull()
		return true
	}
	if e.lost() {
		e.Counters.Drops[DropLoss]++
		return true
	}
	dup := e.spec.Duplicate > 0 && e.rng.Float64() < e.spec.Duplicate
	s := e.enqueue(frame, now)
	if e.spec.Corrupt > 0 && e.rng.Float64() < e.spec.Corrupt && s.size > 0 {
		bit := e.rng.IntN(s.size * 8)
		s.buf[e.headroom+bit/8] ^= 1 << (bit % 8)
		e.Counters.Corrupted++
	}
	if dup && len(e.free) > 0 { // the copy travels unless the line is full
		e.enqueue(frame, now)
		e.Counters.Duplicated++
	}
	return true
}

// dropFull counts a frame that found the line full.
func (e *Engine) dropFull() {
	if e.spec.Rate > 0 {
		e.Counters.Drops[DropRate]++
	} else {
		e.Counters.Drops[DropLimit]++
	}
}

// lost decides random or Gilbert–Elliott loss for the next frame, netem's
// way: the state moves first, then the state the frame arrived in decides.
func (e *Engine) lost() bool {
	if e.spec.Loss > 0 {
		return e.rng.Float64() < e.spec.Loss
	}
	g := &e.spec.GE
	if !g.Configured {
		return false
	}
	if !e.bad {
		e.bad = e.rng.Float64() < g.P
		return e.rng.Float64() < g.LossGood
	}
	e.bad = e.rng.Float64() >= g.R
	return e.rng.Float64() < g.LossBad
}

// enqueue copies frame into a free slot with its due time.
func (e *Engine) enqueue(frame []byte, now int64) *slot {
	i := e.free[len(e.free)-1]
	e.free = e.free[:len(e.free)-1]
	s := &e.slots[i]
	if need := e.headroom + len(frame); need > len(s.buf) {
		s.buf = make([]byte, need) // once per slot, for a frame above slotFrameRoom
	}
	s.size = copy(s.buf[e.headroom:], frame)
	s.due = e.dueTime(len(frame), now)
	s.seq = e.seq
	e.seq++
	e.Counters.Queued++
	e.push(i)
	return s
}

// dueTime is when a frame of size bytes offered at now leaves the line:
// serialised at the rate behind the frames before it, then delayed (a link
// of that speed and that length), the delay drawn around its mean; a
// reordered frame skips the delay.
func (e *Engine) dueTime(size int, now int64) int64 {
	t := now
	if r := e.spec.Rate; r > 0 {
		t = max(t, e.lastSent) + int64(float64(size*8)*1e9/float64(r))
		e.lastSent = t
	}
	if e.reorderNow() {
		e.Counters.Reordered++
		return t
	}
	return t + e.delay()
}

// reorderNow decides, as netem does, whether this frame goes at once: one
// in every gap frames may, with the reorder probability.
func (e *Engine) reorderNow() bool {
	if e.spec.Reorder == 0 || e.sinceGap < e.spec.Gap-1 || e.rng.Float64() >= e.spec.Reorder {
		e.sinceGap++
		return false
	}
	e.sinceGap = 0
	return true
}

// delay draws one frame's delay in nanoseconds.
func (e *Engine) delay() int64 {
	d, j := float64(e.spec.Delay), float64(e.spec.Jitter)
	if j > 0 {
		if e.spec.Distribution == Normal {
			d += j * e.rng.NormFloat64()
		} else {
			d += j * (2*e.rng.Float64() - 1)
		}
	}
	return int64(math.Max(d, 0))
}

// NextDue is when the first queued frame is due; ok is false when the line
// is empty.
func (e *Engine) NextDue() (due int64, ok bool) {
	if len(e.heap) == 0 {
		return 0, false
	}
	return e.slots[e.heap[0]].due, true
}

// Pop moves up to len(bufs) frames due at now out of the line, in due
// order: bufs[i][headroom:headroom+sizes[i]] is a frame. They stay valid,
// and their slots taken, until Release.
func (e *Engine) Pop(now int64, bufs [][]byte, sizes []int) int {
	n := 0
	for n < len(bufs) && len(e.heap) > 0 && e.slots[e.heap[0]].due <= now {
		i := e.pop()
		bufs[n], sizes[n] = e.slots[i].buf, e.slots[i].size
		e.taken = append(e.taken, i)
		n++
	}
	return n
}

// Release frees the slots of the frames the last Pops returned.
func (e *Engine) Release() {
	e.free = append(e.free, e.taken...)
	e.taken = e.taken[:0]
}

// discard empties the line (frames already popped stay taken until
// Release).
func (e *Engine) discard() {
	for _, i := range e.heap {
		e.free = append(e.free, i)
	}
	e.heap = e.heap[:0]
}

// less orders slots by due time, then arrival.
func (e *Engine) less(a, b int32) bool {
	sa, sb := &e.slots[a], &e.slots[b]
	return sa.due < sb.due || sa.due == sb.due && sa.seq < sb.seq
}

// push adds slot i to the heap.
func (e *Engine) push(i int32) {
	e.heap = append(e.heap, i)
	h := e.heap
	for c := len(h) - 1; c > 0; {
		p := (c - 1) / 2
		if !e.less(h[c], h[p]) {
			break
		}
		h[c], h[p] = h[p], h[c]
		c = p
	}
}

// pop removes the heap's first slot.
func (e *Engine) pop() int32 {
	h := e.heap
	top := h[0]
	last := len(h) - 1
	h[0] = h[last]
	h = h[:last]
	for p := 0; ; {
		c := 2*p + 1
		if c >= len(h) {
			break
		}
		if c+1 < len(h) && e.less(h[c+1], h[c]) {
			c++
		}
		if !e.less(h[c], h[p]) {
			break
		}
		h[c], h[p] = h[p], h[c]
		p = c
	}
	e.heap = h
	return top
}
