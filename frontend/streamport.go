package frontend

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/pump"
	"golang.org/x/sys/unix"
)

// MinFrame is the shortest frame accepted on a stream: an Ethernet header.
const MinFrame = 14

// streamBufSize is the receive buffer of a stream connection: room for
// several maximum frames so one read() usually yields a whole batch.
const streamBufSize = 256 << 10

// iovMax is the kernel's limit on iovecs per writev (IOV_MAX).
const iovMax = 1024

// FrameLengthError is a length prefix outside MinFrame..MaxFrame: the
// stream cannot be resynchronised, so the connection is closed.
type FrameLengthError struct{ Length uint32 }

// Error names the offending length and the accepted range.
func (e *FrameLengthError) Error() string {
	return fmt.Sprintf("stream: frame length %d outside %d..%d", e.Length, MinFrame, pump.MaxFrame)
}

// StreamStats counts what happens on a stream front end across its
// connections. Fields are updated atomically and may be read at any time.
type StreamStats struct {
	Connections atomic.Uint64 // connections served
	BadLength   atomic.Uint64 // connections closed for an impossible length prefix
	FromVM      atomic.Uint64 // frames read from the VM
	ToVM        atomic.Uint64 // frames written to the VM
	Stalls      atomic.Uint64 // times the VM could not take frames (socket full)
	StallNanos  atomic.Uint64 // time spent waiting for the VM to take frames
}

// StreamPort is one QEMU -netdev stream connection: each frame is a 4-byte
// big-endian length followed by the raw Ethernet frame, no virtio header.
// It is a VMPort: one goroutine reads, another writes.
type StreamPort struct {
	conn      net.Conn
	rc        syscall.RawConn
	stats     *StreamStats
	batch     int
	closeOnce sync.Once

	// Read side (VM→network), touched only by the reading goroutine.
	rbuf    []byte
	r, w    int
	readFn  func(fd uintptr) bool
	readN   int
	readErr error

	// Write side (network→VM), touched only by the writing goroutine.
	lens     [][4]byte
	iov      []unix.Iovec
	wpos     int
	wend     int
	writeFn  func(fd uintptr) bool
	writeErr error
	stalled  bool
}

// NewStreamPort wraps an accepted or dialled stream connection (a
// *net.UnixConn or *net.TCPConn). batch bounds the frames per ReadFrames
// and WriteFrames call's iovec array; stats may be shared by connections.
func NewStreamPort(conn net.Conn, batch int, stats *StreamStats) (*StreamPort, error) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("stream: %T has no file descriptor", conn)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("stream: raw connection: %w", err)
	}
	if stats == nil {
		stats = new(StreamStats)
	}
	if batch <= 0 {
		return nil, fmt.Errorf("stream: batch %d: must be positive", batch)
	}
	s := &StreamPort{
		conn:  conn,
		rc:    rc,
		stats: stats,
		batch: batch,
		rbuf:  make([]byte, streamBufSize),
		lens:  make([][4]byte, batch),
		iov:   make([]unix.Iovec, 2*batch),
	}
	s.readFn = s.readOnce
	s.writeFn = s.writeOnce
	stats.Connections.Add(1)
	return s, nil
}

// BatchSize is the most frames one ReadFrames call returns.
func (s *StreamPort) BatchSize() int { return s.batch }

// Close ends the connection and unblocks both directions; idempotent.
func (s *StreamPort) Close() error {
	var err error
	s.closeOnce.Do(func() { err = s.conn.Close() })
	return err
}

// ReadFrames blocks until at least one whole frame has arrived and copies
// up to len(bufs) frames into bufs[i][offset:]. An impossible length prefix
// returns a *FrameLengthError (after the good frames before it).
func (s *StreamPort) ReadFrames(bufs [][]byte, sizes []int, offset int) (int, error) {
	for {
		n, err := s.parse(bufs, sizes, offset)
		if n > 0 {
			s.stats.FromVM.Add(uint64(n))
			return n, nil
		}
		if err != nil {
			return 0, err
		}
		if err := s.fill(); err != nil {
			return 0, err
		}
	}
}

// parse takes whole frames out of the receive buffer.
func (s *StreamPort) parse(bufs [][]byte, sizes []int, offset int) (int, error) {
	n := 0
	for n < len(bufs) && s.w-s.r >= 4 {
		length := binary.BigEndian.Uint32(s.rbuf[s.r:])
		if length < MinFrame || length > pump.MaxFrame {
			if n > 0 {
				break // hand over the good frames first
			}
			s.stats.BadLength.Add(1)
			return 0, &FrameLengthError{Length: length}
		}
		if s.w-s.r-4 < int(length) {
			break
		}
		if len(bufs[n])-offset < int(length) {
			return n, fmt.Errorf("stream: frame of %d bytes exceeds a %d-byte buffer", length, len(bufs[n])-offset)
		}
		start := s.r + 4
		sizes[n] = copy(bufs[n][offset:], s.rbuf[start:start+int(length)])
		s.r = start + int(length)
		n++
	}
	if s.r == s.w {
		s.r, s.w = 0, 0
	}
	return n, nil
}

// fill reads more bytes from the VM, parking on the netpoller when none are
// ready; a partial frame is moved to the front when room runs short.
func (s *StreamPort) fill() error {
	if s.r > 0 && len(s.rbuf)-s.w < pump.MaxFrame+4 {
		s.w = copy(s.rbuf, s.rbuf[s.r:s.w])
		s.r = 0
	}
	if err := s.rc.Read(s.readFn); err != nil {
		return err
	}
	if s.readErr != nil {
		return s.readErr
	}
	if s.readN == 0 {
		return io.EOF
	}
	s.w += s.readN
	return nil
}

// readOnce is the netpoller callback for fill: false means "would block".
func (s *StreamPort) readOnce(fd uintptr) bool {
	for {
		n, err := unix.Read(int(fd), s.rbuf[s.w:])
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			return false
		}
		s.readN, s.readErr = n, nil
		if err != nil {
			s.readN, s.readErr = 0, fmt.Errorf("stream: read: %w", err)
		}
		return true
	}
}

// WriteFrames writes every frame with its length prefix using writev,
// resuming a partial write at the byte it stopped at (never splitting or
// dropping a frame) and parking on the netpoller while the VM's socket is
// full.
func (s *StreamPort) WriteFrames(frames [][]byte) error {
	for len(frames) > 0 {
		k := min(len(frames), s.batch)
		s.load(frames[:k])
		s.stalled = false
		start := time.Now()
		err := s.rc.Write(s.writeFn)
		if s.stalled {
			s.stats.Stalls.Add(1)
			s.stats.StallNanos.Add(uint64(time.Since(start)))
		}
		if err != nil {
			return err
		}
		if s.writeErr != nil {
			return s.writeErr
		}
		s.stats.ToVM.Add(uint64(k))
		frames = frames[k:]
	}
	return nil
}

// load builds the iovec pairs (length prefix, frame) for one writev batch.
func (s *StreamPort) load(frames [][]byte) {
	for i, f := range frames {
		binary.BigEndian.PutUint32(s.lens[i][:], uint32(len(f)))
		s.iov[2*i] = unix.Iovec{Base: &s.lens[i][0], Len: 4}
		s.iov[2*i+1] = unix.Iovec{Base: unsafe.SliceData(f), Len: uint64(len(f))}
	}
	s.wpos, s.wend = 0, 2*len(frames)
	s.writeErr = nil
}

// writeOnce is the netpoller callback for WriteFrames: it writes until done
// or the socket is full (false: wait for writability, then call again).
func (s *StreamPort) writeOnce(fd uintptr) bool {
	for s.wpos < s.wend {
		cnt := min(s.wend-s.wpos, iovMax)
		n, _, e := unix.Syscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&s.iov[s.wpos])), uintptr(cnt))
		switch e {
		case 0:
			s.advance(int(n))
		case unix.EINTR:
		case unix.EAGAIN:
			s.stalled = true
			return false
		default:
			s.writeErr = fmt.Errorf("stream: write: %w", e)
			return true
		}
	}
	return true
}

// advance moves the iovec cursor past n written bytes.
func (s *StreamPort) advance(n int) {
	for n > 0 && s.wpos < s.wend {
		v := &s.iov[s.wpos]
		if uint64(n) < v.Len {
			v.Base = (*byte)(unsafe.Add(unsafe.Pointer(v.Base), n))
			v.Len -= uint64(n)
			return
		}
		n -= int(v.Len)
		s.wpos++
	}
}

// readable waits, up to the connection's read deadline, for bytes (or the
// end) to arrive without consuming them; false when the deadline passed.
func (s *StreamPort) readable() bool {
	var b [1]byte
	ready := false
	err := s.rc.Read(func(fd uintptr) bool {
		_, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		if err == unix.EAGAIN || err == unix.EINTR {
			return false
		}
		ready = true // bytes, the end, or an error the port will meet
		return true
	})
	return ready || err != nil && !errors.Is(err, os.ErrDeadlineExceeded)
}
