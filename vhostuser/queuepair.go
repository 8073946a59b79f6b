package vhostuser

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"sync/atomic"
	"time"
)

// errQueueClosed is returned once a queue pair is stopped or closed.
var errQueueClosed = fmt.Errorf("vhostuser: queue pair stopped: %w", net.ErrClosed)

// Kick fd failures: each stops the ring it was found on.
var (
	errKickFD  = violation("kick eventfd unusable")
	errKickEOF = violation("kick fd at end of file (a pipe whose writer is gone)")
)

// pollInterval is how often a ring whose front end sent no kick fd (polling mode) is looked at.
const pollInterval = time.Millisecond

// qpClosed is the closed bit of a direction's state word; the low bits count its calls in
// progress.
const qpClosed = int64(1) << 62

// dirState is one direction's closed bit and call count, alone on its cache line so the
// two directions never write the same line.
type dirState struct {
	n atomic.Int64
	_ [56]byte
}

// QueuePair is one started virtio-net queue pair: vring 2i receives (the guest's RX queue)
// and vring 2i+1 transmits. It is handed to Handler.QueuePairStarted and is valid until
// QueuePairStopped; it is never restarted (a new QueuePair comes with the next start).
//
// ReadFrames and WriteFrames may run concurrently with each other, each direction from one
// goroutine at a time; they share no lock and no written cache line, and allocate nothing
// in steady state.
type QueuePair struct {
	index   int
	rx, tx  *vring
	batch   int
	rxState dirState // WriteFrames
	txState dirState // ReadFrames
	once    atomic.Bool
	drained chan struct{} // closed once the pair is closed and no call is in progress
}

// newQueuePair builds the pair for vrings rx and tx.
func newQueuePair(index int, rx, tx *vring, batch int) *QueuePair {
	return &QueuePair{index: index, rx: rx, tx: tx, batch: batch, drained: make(chan struct{})}
}

// Index returns the queue pair number i (vrings 2i and 2i+1).
func (q *QueuePair) Index() int { return q.index }

// BatchSize returns how many frames a caller should offer ReadFrames and WriteFrames at once.
func (q *QueuePair) BatchSize() int { return q.batch }

// enter registers a call in progress on d, or reports that the pair is closed.
func (q *QueuePair) enter(d *dirState) bool {
	if d.n.Add(1)&qpClosed != 0 {
		q.exit(d)
		return false
	}
	return true
}

// exit ends a call on d; the last call out of a closed pair, in either direction, releases
// whoever waits for drained.
func (q *QueuePair) exit(d *dirState) {
	if d.n.Add(-1) == qpClosed {
		q.checkDrained()
	}
}

// leave ends a call on d begun by enter and gives the goroutine back the fault mode prev it
// had before SetPanicOnFault(true). A guest-memory fault inside the call unwinds to here with
// v.mu held (fault.go): it becomes the call's error, the ring is broken, the connection ends
// and the lock is released. One deferred call per batch, no allocation.
func (q *QueuePair) leave(d *dirState, v *vring, prev bool, err *error) {
	if r := recover(); r != nil {
		*err = v.faulted(r)
		v.mu.Unlock()
	}
	debug.SetPanicOnFault(prev)
	q.exit(d)
}

// checkDrained closes drained, once, when both directions are closed and idle; every
// direction checks after its own last exit, so the later of the two sees both idle.
func (q *QueuePair) checkDrained() {
	if q.rxState.n.Load() == qpClosed && q.txState.n.Load() == qpClosed && q.once.CompareAndSwap(false, true) {
		close(q.drained)
	}
}

// closed reports whether shut was called.
func (q *QueuePair) closed() bool { return q.txState.n.Load()&qpClosed != 0 }

// shut closes the pair and wakes both workers; drained is closed once they have returned.
func (q *QueuePair) shut() {
	q.rxState.n.Or(qpClosed)
	q.txState.n.Or(qpClosed)
	q.checkDrained()
	for _, v := range [2]*vring{q.rx, q.tx} {
		v.mu.Lock()
		if v.kick != nil {
			v.kick.interrupt()
		}
		v.mu.Unlock()
	}
}

// Close makes blocked and later ReadFrames and WriteFrames calls return an error wrapping
// net.ErrClosed. It does not stop the rings: the front end still owns them, and
// QueuePairStopped is still called when it stops them. It is idempotent.
func (q *QueuePair) Close() error {
	q.shut()
	return nil
}

// usable returns the error a worker on v must return, or nil; called under v.mu.
func (q *QueuePair) usable(v *vring) error {
	if q.closed() || v.qp != q || !v.started {
		return errQueueClosed
	}
	return v.broken
}

// ReadFrames blocks until the guest has queued at least one frame on the TX virtqueue, pops
// up to len(bufs) frames, strips the virtio-net header, copies each frame into
// bufs[i][offset:], sets sizes[i], returns the chains to the used ring and notifies (per
// EVENT_IDX / NO_INTERRUPT) once per batch. A frame too large for its buffer is dropped and
// counted. While the front end keeps the TX ring disabled its frames are drained and
// discarded. It returns an error wrapping net.ErrClosed when the pair is stopped or closed
// or the front end is gone, and one also wrapping ErrRingBroken when the guest broke the ring.
func (q *QueuePair) ReadFrames(bufs [][]byte, sizes []int, offset int) (n int, err error) {
	if len(sizes) < len(bufs) {
		bufs = bufs[:len(sizes)]
	}
	if !q.enter(&q.txState) {
		return 0, errQueueClosed
	}
	defer q.leave(&q.txState, q.tx, debug.SetPanicOnFault(true), &err)
	v := q.tx
	woke := false
	for {
		v.mu.Lock()
		if err := q.usable(v); err != nil {
			v.mu.Unlock()
			return 0, err
		}
		if woke {
			v.disableNotify()
		}
		n, err := v.popTX(bufs, sizes, offset, !v.enabled)
		if err != nil {
			v.fail(err)
		}
		if n > 0 || err != nil || len(bufs) == 0 {
			err = v.broken
			v.mu.Unlock()
			if n > 0 {
				return n, nil
			}
			return 0, err
		}
		if v.lastAvail != v.availIdx {
			// popTX stopped at its limit with chains left (all dropped or discarded).
			v.yield()
			continue
		}
		kick, more := v.prepareSleep(true)
		v.mu.Unlock()
		if !more {
			woke = v.park(kick)
		}
	}
}

// WriteFrames delivers every frame, in order, into the guest's RX virtqueue (virtio-net
// header + frame; with MRG_RXBUF a large frame spans several buffers and num_buffers says
// how many) and notifies once per batch. When the RX ring runs out of buffers, or while the
// front end keeps it disabled, it blocks (flush-on-peer-ready): it asks the guest for a kick
// (avail_event with EVENT_IDX), re-checks the ring so the kick cannot be missed, parks on
// the RX kick eventfd in the netpoller and continues from the first undelivered frame.
// Nothing is dropped except a frame that no ring of this size could ever hold, which is
// counted. It returns an error wrapping net.ErrClosed when the pair is stopped or closed.
func (q *QueuePair) WriteFrames(frames [][]byte) error {
	_, err := q.write(frames, false)
	return err
}

// ErrRXDisabled is returned by DeliverFrames when the front end has disabled the pair's RX
// ring (a multiqueue guest that uses fewer queue pairs than the device offers). Its
// RXDisabled method lets callers that do not import this package recognise it.
var ErrRXDisabled error = rxDisabledError{}

// rxDisabledError is ErrRXDisabled's type.
type rxDisabledError struct{}

// Error says what happened.
func (rxDisabledError) Error() string { return "vhostuser: RX ring disabled by the front end" }

// RXDisabled is true: the frames were not taken because the ring is disabled.
func (rxDisabledError) RXDisabled() bool { return true }

// DeliverFrames is WriteFrames for a caller that spreads frames over several queue pairs:
// it waits for RX buffers like WriteFrames, but when it finds the RX ring disabled it
// returns at once with the number of frames delivered and ErrRXDisabled, so that the rest
// can go to an enabled pair instead of waiting for this one to be enabled again.
func (q *QueuePair) DeliverFrames(frames [][]byte) (int, error) {
	return q.write(frames, true)
}

// RXEnabled reports whether the front end has the pair's RX ring enabled; it takes no lock,
// so a caller choosing among pairs for each batch may ask often.
func (q *QueuePair) RXEnabled() bool { return q.rx.live.Load() }

// write is WriteFrames and DeliverFrames: it returns how many frames were delivered.
func (q *QueuePair) write(frames [][]byte, stopDisabled bool) (done int, err error) {
	if !q.enter(&q.rxState) {
		return 0, errQueueClosed
	}
	defer q.leave(&q.rxState, q.rx, debug.SetPanicOnFault(true), &err)
	v := q.rx
	woke := false
	for done < len(frames) {
		v.mu.Lock()
		if err := q.usable(v); err != nil {
			v.mu.Unlock()
			return done, err
		}
		if !v.enabled && stopDisabled {
			v.mu.Unlock()
			return done, ErrRXDisabled
		}
		if woke {
			v.disableNotify()
		}
		if v.enabled {
			n, more, err := v.fillRX(frames[done:])
			done += n
			if err != nil {
				v.fail(err)
				err = v.broken
				v.mu.Unlock()
				return done, err
			}
			if done == len(frames) {
				v.mu.Unlock()
				return done, nil
			}
			if more {
				v.yield()
				continue
			}
		}
		kick, more := v.prepareSleep(v.enabled)
		v.mu.Unlock()
		if !more {
			woke = v.park(kick)
		}
	}
	return done, nil
}

// yield releases v.mu after a batch that stopped at maxWalk with work left, and lets a
// control goroutine waiting for the lock (woken onto this P by Unlock) run before the
// worker takes it again.
func (v *vring) yield() {
	v.mu.Unlock()
	runtime.Gosched()
}

// prepareSleep, under v.mu, clears a pending interrupt and (for an enabled ring) re-enables
// guest kicks and re-checks the avail ring. It returns the kick file to park on, and
// more=true when buffers arrived meanwhile so the caller should not sleep.
func (v *vring) prepareSleep(enabled bool) (*eventFile, bool) {
	if v.kick != nil {
		v.kick.rearm()
	}
	if enabled {
		more, err := v.enableNotify()
		if err != nil {
			v.fail(err)
			return nil, true // the next loop returns v.broken
		}
		if more {
			return nil, true
		}
	}
	v.stats.waits.Add(1)
	return v.kick, false
}

// park waits, without v.mu, for a kick, an interrupt from the control goroutine or the
// kick file being closed; it reports whether a real kick arrived. A kick fd that cannot be
// waited on stops the ring instead of spinning.
func (v *vring) park(kick *eventFile) bool {
	if kick == nil {
		time.Sleep(pollInterval)
		return false
	}
	err := kick.wait()
	if err == nil {
		v.stats.kicks.Add(1)
		return true
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return false
	}
	v.mu.Lock()
	if v.kick == kick && v.started {
		if errors.Is(err, io.EOF) {
			v.fail(errKickEOF)
		} else {
			v.fail(errKickFD)
		}
	}
	v.mu.Unlock()
	return false
}
