package capture

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"golang.org/x/sys/cpu"
)

// SnapLen is the most bytes of a frame a capture keeps; longer
// (jumbo) frames are cut, their original length recorded.
const SnapLen = 65535

const (
	// DefaultQueue is the memory, both directions together, for
	// frames captured but not yet written.
	DefaultQueue = 4 << 20
	// minCaptureQueue keeps room for two largest records per direction.
	minCaptureQueue = 256 << 10
	// captureBufSize is the bufio.Writer in front of the destination.
	captureBufSize = 128 << 10
	// recHeaderLen is a queued record's header: captured length (4),
	// original length (4), timestamp in Unix nanoseconds (8).
	recHeaderLen = 16
	// recWrap marks the rest of the ring as unused: the next record
	// starts at its beginning.
	recWrap = 0xffffffff
)

// Direction is the way a captured frame went through the port.
type Direction uint8

const (
	// ToNetwork is a frame the VM sent, on its way into the tunnel.
	ToNetwork Direction = iota
	// ToVM is a frame from the tunnel, on its way to the VM.
	ToVM
)

// String names the direction ("to_network", "to_vm").
func (d Direction) String() string {
	switch d {
	case ToNetwork:
		return "to_network"
	case ToVM:
		return "to_vm"
	}
	return fmt.Sprintf("direction(%d)", uint8(d))
}

// Options tunes a capture; the zero value is the default.
type Options struct {
	// Overwrite lets Create truncate an existing file (which then
	// gets mode 0600); by default an existing file is refused.
	Overwrite bool
	// QueueBytes is the memory for frames not yet written, split evenly
	// between the two directions; each half is rounded up to a power of
	// two. Default DefaultQueue, at least 256 KiB.
	QueueBytes int
}

// Stats counts a capture's frames. Once Close has returned,
// Captured + Dropped is every frame Frames was given.
type Stats struct {
	Captured uint64 // frames written (to the buffer: after a write error, its last contents may be missing)
	Dropped  uint64 // frames not captured: queue full, closed, or write failed
	Bytes    uint64 // frame bytes written (after the cut to SnapLen)
}

// Capture writes the frames that pass through a port, both directions, to
// a pcap stream (LinkTypeEthernet, snap length 65535, nanosecond
// timestamps). Frames copies into a bounded queue per direction and never
// blocks; a goroutine drains both queues, in timestamp order, through a
// bufio.Writer, and flushes whenever the queues run empty. Frames may be
// called from any goroutines; the two directions share no lock.
type Capture struct {
	name   string // the file, for errors; "" for New
	rings  [2]captureRing
	wake   chan struct{} // capacity 1: frames were queued
	done   chan struct{} // closed by Close: drain and stop
	exited chan struct{} // closed by the writer goroutine as it returns

	// Written by the writer goroutine only.
	bw       *bufio.Writer
	pw       *pcapgo.Writer
	flush    func() error // the destination's own Flush, or nil
	captured atomic.Uint64
	bytes    atomic.Uint64
	err      error       // first write error; published by failed
	failed   atomic.Bool // err is set: Frames drops everything

	closer    io.Closer // the file StartCapture opened, or nil
	closeOnce sync.Once
	closeErr  error
}

// captureRing is one direction's queue: records appended by producers (one
// at a time, under mu) and consumed by the writer goroutine; tail and head
// are byte positions that only grow.
type captureRing struct {
	_       cpu.CacheLinePad
	mu      sync.Mutex // serialises this direction's producers; guards closed
	closed  bool
	buf     []byte
	mask    uint64
	tail    atomic.Uint64 // end of published records (producers)
	dropped atomic.Uint64
	_       cpu.CacheLinePad
	head    atomic.Uint64 // start of unconsumed records (writer)
	_       cpu.CacheLinePad
}

// Create creates path (mode 0600; an existing file is refused unless
// opts.Overwrite) and starts capturing into it.
func Create(path string, opts Options) (*Capture, error) {
	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if opts.Overwrite {
		flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	f, err := os.OpenFile(path, flags, 0o600)
	if err != nil {
		return nil, fmt.Errorf("capture: %w", err)
	}
	if err := f.Chmod(0o600); err != nil { // an overwritten file keeps its mode
		f.Close()
		return nil, fmt.Errorf("capture: %w", err)
	}
	c, err := newCapture(f, path, opts)
	if err != nil {
		f.Close()
		return nil, err
	}
	c.closer = f
	return c, nil
}

// New starts capturing into w (an HTTP response, a pipe). The pcap
// file header is written, and flushed, before it returns. If w has a
// Flush() error or Flush() method, it is called after each flush of the
// buffer. Close does not close w.
func New(w io.Writer, opts Options) (*Capture, error) {
	return newCapture(w, "", opts)
}

// newCapture writes the file header and starts the writer goroutine.
func newCapture(w io.Writer, name string, opts Options) (*Capture, error) {
	size := opts.QueueBytes
	if size == 0 {
		size = DefaultQueue
	}
	size = max(size, minCaptureQueue) / 2
	c := &Capture{
		name:   name,
		wake:   make(chan struct{}, 1),
		done:   make(chan struct{}),
		exited: make(chan struct{}),
		bw:     bufio.NewWriterSize(w, captureBufSize),
		flush:  flushOf(w),
	}
	for i := range c.rings {
		c.rings[i].init(size)
	}
	c.pw = pcapgo.NewWriterNanos(c.bw)
	if err := c.pw.WriteFileHeader(SnapLen, layers.LinkTypeEthernet); err != nil {
		return nil, c.wrap(err)
	}
	if err := c.flushAll(); err != nil {
		return nil, c.wrap(err)
	}
	go c.run()
	return c, nil
}

// flushOf finds w's own Flush (bufio-like or http.Flusher-like), so a
// streaming client sees frames as soon as the queues run empty.
func flushOf(w io.Writer) func() error {
	switch f := w.(type) {
	case interface{ Flush() error }:
		return f.Flush
	case interface{ Flush() }:
		return func() error { f.Flush(); return nil }
	}
	return nil
}

// wrap names the capture's file in an error.
func (c *Capture) wrap(err error) error {
	if c.name == "" {
		return fmt.Errorf("capture: %w", err)
	}
	return fmt.Errorf("capture %s: %w", c.name, err)
}

// Frames queues a copy of each frame, stamped with one time for the batch,
// for the writer goroutine. It never blocks on the destination: a frame
// that does not fit in dir's queue is counted as dropped. It does not
// allocate. dir is ToNetwork or ToVM (other values use their low bit).
func (c *Capture) Frames(dir Direction, frames [][]byte) {
	if len(frames) == 0 {
		return
	}
	r := &c.rings[dir&1]
	if c.failed.Load() {
		r.dropped.Add(uint64(len(frames)))
		return
	}
	if r.put(time.Now().UnixNano(), frames) {
		c.notify()
	}
}

// notify wakes the writer goroutine unless a wake-up is already pending.
func (c *Capture) notify() {
	if len(c.wake) > 0 {
		return
	}
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Stats returns the counters so far.
func (c *Capture) Stats() Stats {
	return Stats{
		Captured: c.captured.Load(),
		Dropped:  c.rings[0].dropped.Load() + c.rings[1].dropped.Load(),
		Bytes:    c.bytes.Load(),
	}
}

// Err reports the write error that stopped the capture (frames are
// dropped from then on), or nil while it runs.
func (c *Capture) Err() error {
	if c.failed.Load() {
		return c.err
	}
	return nil
}

// Close stops queuing (later Frames calls count as dropped), waits for
// the writer to write what is queued, flushes, and closes the file
// Create opened. It returns the first write, flush or close error;
// it is idempotent. With a destination that blocks, Close blocks too.
func (c *Capture) Close() error {
	c.closeOnce.Do(func() {
		for i := range c.rings {
			c.rings[i].close()
		}
		close(c.done)
		<-c.exited
		err := c.err
		if c.closer != nil {
			if cerr := c.closer.Close(); err == nil && cerr != nil {
				err = c.wrap(cerr)
			}
		}
		c.closeErr = err
	})
	return c.closeErr
}

// run is the writer goroutine: drain whenever woken, and once more after
// Close so nothing queued is lost.
func (c *Capture) run() {
	defer close(c.exited)
	for {
		c.drain()
		select {
		case <-c.wake:
		case <-c.done:
			c.drain()
			return
		}
	}
}

// drain writes every queued record, oldest timestamp first across the two
// directions, then flushes if it wrote anything.
func (c *Capture) drain() {
	wrote := false
	for {
		a, b := &c.rings[0], &c.rings[1]
		ta, oka := a.peekTime()
		tb, okb := b.peekTime()
		r := a
		switch {
		case !oka && !okb:
			if wrote && !c.failed.Load() {
				c.fail(c.flushAll())
			}
			return
		case !oka || (okb && tb < ta):
			r = b
		}
		c.writeOne(r)
		wrote = true
	}
}

// writeOne writes r's oldest record (or counts it dropped after a write
// error) and frees its room in the queue.
func (c *Capture) writeOne(r *captureRing) {
	ts, orig, data, next := r.peek()
	if c.failed.Load() {
		r.dropped.Add(1)
	} else {
		ci := gopacket.CaptureInfo{Timestamp: time.Unix(0, ts), CaptureLength: len(data), Length: orig}
		if err := c.pw.WritePacket(ci, data); err != nil {
			c.fail(err)
			r.dropped.Add(1)
		} else {
			c.captured.Add(1)
			c.bytes.Add(uint64(len(data)))
		}
	}
	r.head.Store(next)
}

// flushAll pushes the buffer, then the destination's own buffer, out.
func (c *Capture) flushAll() error {
	if err := c.bw.Flush(); err != nil {
		return err
	}
	if c.flush != nil {
		return c.flush()
	}
	return nil
}

// fail records the first write error and makes Frames drop from then on.
func (c *Capture) fail(err error) {
	if err == nil || c.failed.Load() {
		return
	}
	c.err = c.wrap(err)
	c.failed.Store(true)
}

// init allocates the ring: half of the queue, rounded up to a power of two.
func (r *captureRing) init(size int) {
	n := 1
	for n < size {
		n <<= 1
	}
	r.buf = make([]byte, n)
	r.mask = uint64(n - 1)
}

// close makes later puts count their frames as dropped; once it returns,
// no put is copying into the ring.
func (r *captureRing) close() {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
}

// put appends one record per frame, all stamped ts, and publishes them at
// once. Frames that do not fit are counted as dropped. It reports whether
// anything was queued.
func (r *captureRing) put(ts int64, frames [][]byte) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		r.dropped.Add(uint64(len(frames)))
		return false
	}
	start := r.tail.Load()
	tail, free := start, uint64(len(r.buf))-(start-r.head.Load())
	drops := 0
	for _, f := range frames {
		if !r.append(&tail, &free, ts, f) {
			drops++
		}
	}
	if drops > 0 {
		r.dropped.Add(uint64(drops))
	}
	if tail == start {
		return false
	}
	r.tail.Store(tail)
	return true
}

// append copies one record at *tail if *free allows, wrapping to the
// ring's start (after a wrap marker) when the record would cross its end.
func (r *captureRing) append(tail, free *uint64, ts int64, f []byte) bool {
	n := min(len(f), SnapLen)
	need := recLen(n)
	pos := *tail & r.mask
	toEnd := uint64(len(r.buf)) - pos
	skip := uint64(0)
	if toEnd < need {
		skip = toEnd
	}
	if skip+need > *free {
		return false
	}
	if skip > 0 {
		if skip >= recHeaderLen {
			binary.LittleEndian.PutUint32(r.buf[pos:], recWrap)
		}
		pos = 0
	}
	h := r.buf[pos : pos+recHeaderLen]
	binary.LittleEndian.PutUint32(h[0:], uint32(n))
	binary.LittleEndian.PutUint32(h[4:], uint32(len(f)))
	binary.LittleEndian.PutUint64(h[8:], uint64(ts))
	copy(r.buf[pos+recHeaderLen:], f[:n])
	*tail += skip + need
	*free -= skip + need
	return true
}

// recLen is a record's size in the ring: header and data, 8-byte aligned
// so a header never straddles the ring's end.
func recLen(n int) uint64 { return uint64(recHeaderLen+n+7) &^ 7 }

// skipWrap moves head past the unused end of the ring, if it is there
// (writer goroutine only). It reports whether a record is available.
func (r *captureRing) skipWrap() bool {
	head, tail := r.head.Load(), r.tail.Load()
	if head == tail {
		return false
	}
	pos := head & r.mask
	toEnd := uint64(len(r.buf)) - pos
	if toEnd < recHeaderLen || binary.LittleEndian.Uint32(r.buf[pos:]) == recWrap {
		r.head.Store(head + toEnd)
		return head+toEnd != tail
	}
	return true
}

// peekTime returns the timestamp of the oldest record, if there is one.
func (r *captureRing) peekTime() (int64, bool) {
	if !r.skipWrap() {
		return 0, false
	}
	pos := r.head.Load() & r.mask
	return int64(binary.LittleEndian.Uint64(r.buf[pos+8:])), true
}

// peek returns the oldest record (skipWrap must have reported one) and the
// head position just past it.
func (r *captureRing) peek() (ts int64, orig int, data []byte, next uint64) {
	head := r.head.Load()
	pos := head & r.mask
	h := r.buf[pos : pos+recHeaderLen]
	n := int(binary.LittleEndian.Uint32(h[0:]))
	ts = int64(binary.LittleEndian.Uint64(h[8:]))
	orig = int(binary.LittleEndian.Uint32(h[4:]))
	return ts, orig, r.buf[pos+recHeaderLen : pos+recHeaderLen+uint64(n)], head + recLen(n)
}
