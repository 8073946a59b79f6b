package l2tp

import (
	"net"
	"sync/atomic"
	"time"

	"golang.org/x/sys/cpu"
)

// A session of a shared tunnel receives through a sessionQueue: the
// tunnel's demultiplexer copies each of its frames in, the session's
// ReadFrames takes them out. Frames wait there while the session's VM is
// not taking them; only when the queue is full are they dropped (vm_slow),
// so one slow VM never holds up the socket the others read from.

const (
	// sessionQueueFrames bounds the frames one session's queue holds (a
	// power of two).
	sessionQueueFrames = 1024
	// sessionQueueBytes bounds its bytes: 1 MiB, room for 692 frames of
	// 1514 bytes or 16 of 64 KiB.
	sessionQueueBytes = 1 << 20
)

// sessionQueue is a single-producer (the demultiplexer), single-consumer
// (the session's ReadFrames) ring of frames over one byte buffer. A frame
// is stored whole and contiguous; the consumer hands out sub-slices of the
// buffer, which stay valid until its next pop. Neither side allocates.
type sessionQueue struct {
	buf   []byte
	start []uint64 // byte position (monotonic) of frame i%len
	size  []int32
	seqs  []uint32 // sequence number of frame i%len (reorder window)
	mask  uint64

	_ cpu.CacheLinePad
	// Written by the consumer.
	head   atomic.Uint64 // frames released
	freeAt atomic.Uint64 // byte position up to which the buffer is free
	taken  uint64        // frames handed out by the last pop, not yet released
	endAt  uint64        // byte position after them

	_ cpu.CacheLinePad
	// Written by the producer.
	tail atomic.Uint64 // frames pushed
	wpos uint64        // byte position of the next frame
	hot  bool          // pushed to in the current batch, not yet signalled

	_     cpu.CacheLinePad
	ready chan struct{} // producer → consumer: frames waiting (cap 1)
	space chan struct{} // consumer → producer: room again (cap 1)
	done  chan struct{} // closed when the session leaves
	err   atomic.Pointer[error]
}

// newSessionQueue allocates a queue of the default bounds.
func newSessionQueue() *sessionQueue {
	return newSessionQueueSized(sessionQueueFrames, sessionQueueBytes)
}

// newSessionQueueSized allocates a queue of frames (a power of two) and bytes.
func newSessionQueueSized(frames, bytes int) *sessionQueue {
	return &sessionQueue{
		buf: make([]byte, bytes), start: make([]uint64, frames), size: make([]int32, frames), seqs: make([]uint32, frames),
		mask: uint64(frames - 1), ready: make(chan struct{}, 1), space: make(chan struct{}, 1),
		done: make(chan struct{}),
	}
}

// push copies frame in, with its sequence number ns for a reorder window;
// false when the queue has no room for it.
func (q *sessionQueue) push(frame []byte, ns uint32) bool {
	t := q.tail.Load()
	if t-q.head.Load() > q.mask {
		return false
	}
	n := uint64(len(frame))
	pos := q.wpos
	capB := uint64(len(q.buf))
	if t == q.head.Load() && pos%capB != 0 {
		// Empty, all released: start over at the beginning of the buffer,
		// whose cache lines are still warm. The consumer writes freeAt
		// only when it releases frames, and it holds none until the next
		// push, so here the producer may reset it.
		pos += capB - pos%capB
		q.freeAt.Store(pos)
	}
	if off := pos % capB; off+n > capB {
		pos += capB - off // a frame never wraps: skip to the start
	}
	if pos+n-q.freeAt.Load() > capB {
		return false
	}
	off := pos % capB
	copy(q.buf[off:off+n], frame)
	q.start[t&q.mask], q.size[t&q.mask], q.seqs[t&q.mask] = pos, int32(n), ns
	q.wpos = pos + n
	q.tail.Store(t + 1)
	return true
}

// signalReady wakes the consumer if it waits (never blocks).
func (q *sessionQueue) signalReady() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// signalSpace wakes the producer if it waits for room (never blocks).
func (q *sessionQueue) signalSpace() {
	select {
	case q.space <- struct{}{}:
	default:
	}
}

// release frees what the last pop handed out.
func (q *sessionQueue) release() {
	if q.taken == 0 {
		return
	}
	q.freeAt.Store(q.endAt)
	q.head.Add(q.taken)
	q.taken = 0
	q.signalSpace()
}

// pop releases the frames of the previous pop, then waits until at least
// one frame is queued and puts up to len(frames) of them in frames (and
// their sequence numbers in seqs, unless nil). It returns 0 when wake
// fires first (nil: never), and net.ErrClosed (or the tunnel's receive
// error) once the session has left and the queue is empty.
func (q *sessionQueue) pop(frames [][]byte, seqs []uint32, wake <-chan time.Time) (int, error) {
	q.release()
	for {
		h, t := q.head.Load(), q.tail.Load()
		if t != h {
			n := int(min(uint64(len(frames)), t-h))
			capB := uint64(len(q.buf))
			for i := range n {
				j := (h + uint64(i)) & q.mask
				off := q.start[j] % capB
				end := off + uint64(q.size[j])
				frames[i] = q.buf[off:end:end]
				if seqs != nil {
					seqs[i] = q.seqs[j]
				}
				q.endAt = q.start[j] + uint64(q.size[j])
			}
			q.taken = uint64(n)
			return n, nil
		}
		if e := q.err.Load(); e != nil {
			return 0, *e
		}
		select {
		case <-q.ready:
		case <-wake:
			return 0, nil
		case <-q.done:
			if q.tail.Load() != h {
				continue
			}
			if e := q.err.Load(); e != nil {
				return 0, *e
			}
			return 0, net.ErrClosed
		}
	}
}

// close ends the queue: pop returns err (net.ErrClosed if nil) once it is
// empty, and a producer waiting for room wakes. Call it once.
func (q *sessionQueue) close(err error) {
	if err != nil {
		q.err.Store(&err)
	}
	close(q.done)
}

// queued is the number of frames waiting (any goroutine).
func (q *sessionQueue) queued() int { return int(q.tail.Load() - q.head.Load()) }
