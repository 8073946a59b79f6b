package vhostuser

import (
	"errors"
	"fmt"
	"runtime"
)

// Guest memory is a file the front end owns, and so is the dirty log (SET_LOG_BASE). If it
// shrinks that file after sharing it (ftruncate of a memfd or a file), or a hugetlbfs page
// cannot be allocated when first touched, the next access to the mapping raises SIGBUS,
// which Go turns into a fatal "unexpected fault address": every port of the process would
// die. So every goroutine that touches guest memory runs with
// runtime/debug.SetPanicOnFault(true) and recovers the fault at one boundary, where it
// becomes an error that ends that front end's connection (counted, logged once) and
// nothing else. A fault at any other address is a bug and is raised again. The boundaries:
//
//   - a data-path worker: ReadFrames, WriteFrames and DeliverFrames (QueuePair.leave);
//   - the control goroutine: each request handler (session.handle), e.g. SET_VRING_KICK,
//     which reads used->idx and publishes used->flags when it starts a ring.
//
// Locks. A worker touches guest memory only while it holds its vring's lock, and holds no
// other lock then; so when a fault unwinds to QueuePair.leave, that lock is held and leave
// releases it. The control goroutine touches guest memory only when it starts a ring
// (session.kickRing), whose vring lock is released by defer, so the unwinding releases it
// before session.handle recovers; under lockAll (SET_FEATURES, SET_MEM_TABLE, SET_LOG_BASE)
// it only re-translates ring addresses and never touches guest memory.
//
// Half-done work. A fault may stop a batch between writing used elements and publishing
// used->idx, or after consuming avail entries, so the ring's private indexes may be ahead of
// what the guest sees. The guest sees only what was published: used->idx is one atomic
// store made after the elements it covers, so it never claims an element that was not
// written. The private state is never used again: the ring is marked broken at once, every
// later call on it returns that error, and the connection is closed, so the session and its
// vrings are discarded; a reconnecting front end starts from used->idx in guest memory.
// The batch during which the fault struck is neither returned to the caller nor counted,
// even when its used entries were published before a later access (the notification
// decision) faulted: the guest's memory is gone by then, and with it those frames.

// ErrMemoryFault is wrapped by the error a QueuePair method returns when touching guest
// memory faulted: the front end shrank a region's file after sharing it, or the host could
// not back a page (hugetlbfs). The connection is ended; the error also matches
// ErrRingBroken and net.ErrClosed.
var ErrMemoryFault = errors.New("vhostuser: guest memory fault")

// faultAddr returns the address of a memory fault recovered from a goroutine running with
// SetPanicOnFault, and false for any other panic value.
func faultAddr(r any) (uintptr, bool) {
	if _, ok := r.(runtime.Error); !ok {
		return 0, false
	}
	a, ok := r.(interface{ Addr() uintptr })
	if !ok {
		return 0, false
	}
	return a.Addr(), true
}

// guestFault turns the panic value r into the error of a fault inside guest memory t or
// dirty log l, both mapped from the front end's files; any other panic (a bug, not the
// front end) is raised again.
func guestFault(r any, t *memTable, l *dirtyLog) error {
	addr, ok := faultAddr(r)
	if !ok || !t.mapsAddr(addr) && !l.mapsAddr(addr) {
		panic(r)
	}
	return fmt.Errorf("%w at %#x (the front end shrank its memory file or the host could not back a page)",
		ErrMemoryFault, addr)
}

// faulted marks v broken by the guest-memory fault r and reports it to the connection,
// which ends; called under v.mu from the boundary that recovered r.
func (v *vring) faulted(r any) error {
	v.broken = &RingError{Vring: v.index, Reason: guestFault(r, v.mem, v.dlog)}
	if v.onFault != nil {
		v.onFault(v.broken)
	}
	return v.broken
}

// handle runs the handler of one request. A guest-memory fault in it unwinds to here,
// through the handler's deferred unlocks, and becomes the error that ends the connection.
func (s *session) handle(spec *reqSpec, m *message) (reply []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = guestFault(r, s.mem, s.dlog)
		}
	}()
	return spec.handle(s, m)
}
