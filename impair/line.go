package impair

import (
	"errors"
	"sync"
	"time"
)

// ErrClosed is Push's answer once the line is closed, and Take's once it
// is closed and empty.
var ErrClosed = errors.New("impair: line closed")

// Line is an Engine between the goroutines that push frames (serialised by
// its lock) and one goroutine that takes them when they are due. A full
// line holds the pushers back, unless the spec drops instead. The lock is
// held for the length of one batch's copies, never while waiting.
type Line struct {
	mu     sync.Mutex // guards e and closed
	e      *Engine
	closed bool

	start  time.Time
	onDrop func(d Drop, n uint64)
	room   chan struct{} // a token after Take freed slots
	ready  chan struct{} // a token after Push queued frames
	stop   chan struct{} // closed by Close
	timer  *time.Timer   // Take's wait for the next due frame
}

// NewLine makes a line for spec whose frames have headroom bytes in front;
// onDrop, called with the lock held once per batch and reason, counts what
// the impairments drop. seed is used when the spec sets none.
func NewLine(spec Spec, headroom int, seed uint64, onDrop func(d Drop, n uint64)) *Line {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &Line{e: NewEngine(spec, headroom, seed), start: time.Now(), onDrop: onDrop,
		room: make(chan struct{}, 1), ready: make(chan struct{}, 1), stop: make(chan struct{}), timer: t}
}

// Spec is what the line applies.
func (l *Line) Spec() Spec { return l.e.Spec() }

// Status is the line's counters and the frames waiting in it now.
func (l *Line) Status() (Counters, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.e.Counters, l.e.Len()
}

// now is the line's clock in nanoseconds (monotonic).
func (l *Line) now() int64 { return int64(time.Since(l.start)) }

// PushFrames offers each frame to the line, in order, waiting while it is
// full (unless the spec drops). It returns how many frames it took and
// ErrClosed if the line was closed before it took them all.
func (l *Line) PushFrames(frames [][]byte) (int, error) {
	return l.push(len(frames), func(i int) []byte { return frames[i] })
}

// PushBufs is PushFrames for frames at bufs[i][offset:offset+sizes[i]].
func (l *Line) PushBufs(bufs [][]byte, sizes []int, offset int) (int, error) {
	return l.push(len(bufs), func(i int) []byte { return bufs[i][offset : offset+sizes[i]] })
}

// push offers frame(0..n-1).
func (l *Line) push(n int, frame func(int) []byte) (int, error) {
	l.mu.Lock()
	before := l.e.Counters.Drops
	done := 0
	var err error
	for done < n {
		if l.closed {
			err = ErrClosed
			break
		}
		if l.e.Offer(frame(done), l.now()) {
			done++
			continue
		}
		l.mu.Unlock() // full: wait for Take to free slots
		signal(l.ready)
		select {
		case <-l.room:
		case <-l.stop:
		}
		l.mu.Lock()
	}
	for d, c := range l.e.Counters.Drops {
		if c != before[d] {
			l.onDrop(Drop(d), c-before[d])
		}
	}
	l.mu.Unlock()
	signal(l.ready)
	return done, err
}

// Take waits until at least one frame is due and moves up to len(bufs) due
// frames into bufs and sizes (bufs[i][headroom:headroom+sizes[i]]). They
// stay valid until the next Take, which frees their slots. Once the line is
// closed it still hands out what is queued, each at its time, then returns
// ErrClosed.
func (l *Line) Take(bufs [][]byte, sizes []int) (int, error) {
	l.mu.Lock()
	if len(l.e.taken) > 0 {
		l.e.Release()
		signal(l.room)
	}
	for {
		if n := l.e.Pop(l.now(), bufs, sizes); n > 0 {
			l.mu.Unlock()
			return n, nil
		}
		due, ok := l.e.NextDue()
		closed := l.closed
		l.mu.Unlock()
		if !ok && closed {
			return 0, ErrClosed
		}
		l.wait(due, ok, closed)
		l.mu.Lock()
	}
}

// wait sleeps until due (if ok), a push, or Close (if not yet closed).
func (l *Line) wait(due int64, ok, closed bool) {
	var timeout <-chan time.Time
	if ok {
		l.timer.Reset(time.Duration(due - l.now()))
		defer l.timer.Stop()
		timeout = l.timer.C
	}
	stop := l.stop
	if closed {
		stop = nil
	}
	select {
	case <-timeout:
	case <-l.ready:
	case <-stop:
	}
}

// Close stops the line taking frames: pushers get ErrClosed, the taker
// gets what is queued, at its time, then ErrClosed. Idempotent.
func (l *Line) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		l.closed = true
		close(l.stop)
	}
}

// Abort closes the line and discards what it holds: Take returns
// ErrClosed at once (the port is going away).
func (l *Line) Abort() {
	l.Close()
	l.mu.Lock()
	l.e.discard()
	l.mu.Unlock()
	signal(l.ready)
}

// signal leaves a token in c unless one is there.
func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}
