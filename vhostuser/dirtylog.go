package vhostuser

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// logPageShift is the dirty log's granularity: one bit per 4 KiB guest-physical page
// (VHOST_LOG_PAGE), bit k of the log standing for the page at guest-physical k<<12.
const logPageShift = 12

// setLogBaseSize is the body of SET_LOG_BASE: u64 mmap size, u64 mmap offset.
const setLogBaseSize = 16

// dirtyLog is the front end's migration log shared through SET_LOG_BASE: while
// VHOST_F_LOG_ALL is acked every guest page the back end writes gets its bit set, so the
// front end re-sends it. It is immutable once installed; workers set bits with atomic ORs
// on its 32-bit words (the front end clears them concurrently).
type dirtyLog struct {
	words   []uint32 // the log as aligned little-endian words (the package is LE-only)
	mapping []byte   // what to munmap
	// fault ends the connection when a write lands outside the log: the front end sized
	// it too small for the memory it gave us, a protocol error.
	fault func(gpa uint64)
}

// mapLog maps the log of a SET_LOG_BASE body from fd, after checking the fd is a file
// long enough to back it; the fd stays owned by the caller.
func mapLog(body []byte, fd int) (*dirtyLog, error) {
	size := binary.NativeEndian.Uint64(body[0:])
	off := binary.NativeEndian.Uint64(body[8:])
	if size < 4 || size > 1<<40 || off > 1<<62 || off%8 != 0 {
		return nil, protoErr(reqSetLogBase, "log of %#x bytes at offset %#x", size, off)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, protoErr(reqSetLogBase, "fstat: %v", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || uint64(st.Size) < off+size {
		return nil, protoErr(reqSetLogBase, "fd is not a file of at least %#x bytes", off+size)
	}
	page := uint64(unix.Getpagesize())
	start := off &^ (page - 1)
	delta := off - start
	m, err := unix.Mmap(fd, int64(start), int(delta+size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("vhostuser: SET_LOG_BASE: mmap %#x bytes: %w", delta+size, err)
	}
	// Whole words only: a trailing partial word is never written.
	words := unsafe.Slice((*uint32)(unsafe.Pointer(&m[delta])), size/4)
	return &dirtyLog{words: words, mapping: m}, nil
}

// unmap releases the log; the caller guarantees no worker still holds it.
func (l *dirtyLog) unmap() {
	if l != nil && l.mapping != nil {
		unix.Munmap(l.mapping)
		l.mapping, l.words = nil, nil
	}
}

// mapsAddr reports whether addr, an address in this process, lies in the log's mapping:
// where a fault may happen if the front end shrinks the log's file (fault.go).
func (l *dirtyLog) mapsAddr(addr uintptr) bool {
	return l != nil && len(l.mapping) > 0 && addr-uintptr(unsafe.Pointer(&l.mapping[0])) < uintptr(len(l.mapping))
}

// mark sets the bit of every page that [gpa, gpa+n) touches and reports false, setting
// nothing, when one lies beyond the log.
func (l *dirtyLog) mark(gpa, n uint64) bool {
	if n == 0 {
		return true
	}
	first, last := gpa>>logPageShift, (gpa+n-1)>>logPageShift
	if last < first || last/32 >= uint64(len(l.words)) {
		return false
	}
	for p := first; p <= last; p++ {
		atomic.OrUint32(&l.words[p/32], 1<<(p%32))
	}
	return true
}

// logWrite marks the guest pages of a write the ring just made, when logging is on; a
// write the log cannot hold stops the ring and ends the connection.
func (v *vring) logWrite(gpa, n uint64) {
	if v.dlog.mark(gpa, n) {
		return
	}
	v.fail(violation(fmt.Sprintf("dirty log too small for guest address %#x", gpa+n-1)))
	v.dlog.fault(gpa + n - 1)
}

// logUsed marks the pages of the whole used ring (flags, idx, elements, avail_event) after
// the back end wrote any of it: a few pages at most, cheaper than tracking the elements.
func (v *vring) logUsed() {
	v.logWrite(v.usedGPA, uint64(len(v.used)))
}

// usedRingGPA returns the guest-physical address of the used ring: the log address
// SET_VRING_ADDR gave with its LOG flag, else its translation through the memory table.
func (v *vring) usedRingGPA() uint64 {
	if v.addr.flags&vringFLog != 0 {
		return v.addr.log
	}
	return v.mem.uaddrToGPA(v.addr.used)
}

// activeLog returns the log the vrings must mark: the last SET_LOG_BASE while LOG_ALL is
// acked, else nil.
func (s *session) activeLog() *dirtyLog {
	if s.acked&featLogAll != 0 {
		return s.dlog
	}
	return nil
}

// applyLog installs or withdraws the dirty log on every vring, under all vring locks, so
// that logging starts and stops between batches.
func (s *session) applyLog() {
	s.lockAll()
	for _, v := range s.vrings {
		v.dlog = s.activeLog()
	}
	s.unlockAll()
}

// setLogBase maps the front end's new dirty log and swaps it in for the old one, which is
// unmapped once no worker can hold it. QEMU waits for the (empty) reply.
func (s *session) setLogBase(m *message) ([]byte, error) {
	l, err := mapLog(m.body, m.fds[0])
	if err != nil {
		return nil, err
	}
	l.fault = s.abort
	old := s.dlog
	s.dlog = l
	s.applyLog()
	old.unmap()
	s.log.Info("vhostuser: dirty log set", "bytes", 4*len(l.words))
	return nil, nil
}

// setLogFD accepts the log eventfd of front ends that do not use LOG_SHMFD's reply; the
// back end never signals it, so the dispatcher closes it.
func (s *session) setLogFD(*message) ([]byte, error) { return nil, nil }
