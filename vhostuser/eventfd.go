package vhostuser

import (
	"errors"
	"io"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// eventFile is a kick, call or err eventfd handed over by the front end, driven through Go's
// netpoller: a worker waiting for a kick parks its goroutine instead of a thread, and the
// control goroutine interrupts that wait with a read deadline. The read and write callbacks
// are built once so steady-state waits and signals allocate nothing.
type eventFile struct {
	f       *os.File
	rc      syscall.RawConn
	rbuf    [8]byte
	wbuf    [8]byte
	rerr    error
	werr    error
	readFn  func(fd uintptr) bool
	writeFn func(fd uintptr) bool
}

// errNotPollable reports an fd the netpoller cannot wait on (not an eventfd, pipe or socket).
var errNotPollable = errors.New("vhostuser: eventfd is not pollable")

// newEventFile takes ownership of fd, switches it to non-blocking mode and registers it with
// the netpoller; on error fd is closed.
func newEventFile(fd int, name string) (*eventFile, error) {
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	f := os.NewFile(uintptr(fd), name)
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	if err := f.SetReadDeadline(time.Time{}); err != nil {
		// A regular file or another fd the netpoller refuses: waiting on it would be
		// impossible, and interrupting a wait would be too.
		f.Close()
		return nil, errNotPollable
	}
	e := &eventFile{f: f, rc: rc}
	e.wbuf[0] = 1 // native-endian 1 on the little-endian hosts this package supports
	e.readFn = e.doRead
	e.writeFn = e.doWrite
	return e, nil
}

// doRead consumes the eventfd counter; returning false parks the goroutine until readable.
// A read of 0 bytes is a pipe whose writer is gone: io.EOF, never a kick.
func (e *eventFile) doRead(fd uintptr) bool {
	n, err := unix.Read(int(fd), e.rbuf[:])
	for err == unix.EINTR {
		n, err = unix.Read(int(fd), e.rbuf[:])
	}
	if err == unix.EAGAIN {
		return false
	}
	if err == nil && n == 0 {
		err = io.EOF
	}
	e.rerr = err
	return true
}

// doWrite adds one to the eventfd counter; EAGAIN means the counter is saturated, which
// already wakes the reader, so it is success too.
func (e *eventFile) doWrite(fd uintptr) bool {
	_, err := unix.Write(int(fd), e.wbuf[:])
	if err == unix.EAGAIN {
		err = nil
	}
	e.werr = err
	return true
}

// wait blocks until the fd is readable and consumes its counter. It returns
// os.ErrDeadlineExceeded after interrupt, another error once the file is closed or broken.
func (e *eventFile) wait() error {
	e.rerr = nil
	if err := e.rc.Read(e.readFn); err != nil {
		return err
	}
	return e.rerr
}

// signal writes to the eventfd without ever blocking.
func (e *eventFile) signal() error {
	e.werr = nil
	if err := e.rc.Write(e.writeFn); err != nil {
		return err
	}
	return e.werr
}

// interrupt makes a current or the next wait return os.ErrDeadlineExceeded.
func (e *eventFile) interrupt() { e.f.SetReadDeadline(time.Unix(1, 0)) }

// rearm clears an interrupt; callers do it under the vring lock before re-checking state,
// so an interrupt issued after that check is never lost.
func (e *eventFile) rearm() { e.f.SetReadDeadline(time.Time{}) }

// close releases the fd and wakes a goroutine parked in wait.
func (e *eventFile) close() {
	if e != nil {
		e.f.Close()
	}
}
