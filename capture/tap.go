package capture

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/pump"
)

// ErrActive is returned by Start while the tap is already capturing.
var ErrActive = errors.New("a capture of this port is running")

// ErrNotActive is returned by Stop when the tap is not capturing.
var ErrNotActive = errors.New("no capture of this port is running")

// Status is a port's running (or just stopped) capture.
type Status struct {
	Target   string    `json:"target"` // the pcap file, or "stream" for one sent over the admin API
	Started  time.Time `json:"started"`
	Captured uint64    `json:"captured"` // frames written
	Dropped  uint64    `json:"dropped"`  // frames not captured (queue full, write failed)
	Bytes    uint64    `json:"bytes"`
	Error    string    `json:"error,omitempty"` // the write error that stopped it
}

// activeCapture is a Capture attached to a port and what the status says
// about it.
type activeCapture struct {
	c       *Capture
	target  string
	started time.Time
}

// status reports the capture's counters.
func (a *activeCapture) status() Status {
	st := a.c.Stats()
	s := Status{Target: a.target, Started: a.started, Captured: st.Captured, Dropped: st.Dropped, Bytes: st.Bytes}
	if err := a.c.Err(); err != nil {
		s.Error = err.Error()
	}
	return s
}

// Tap is a port's network side with an optional capture: each
// batch goes to the attached Capture, if any, for the cost of one atomic
// load per batch when there is none. Frames from the network are captured
// after decapsulation (ToVM); frames from the VM before encapsulation,
// which happens in place (ToNetwork).
type Tap struct {
	pump.Network
	active atomic.Pointer[activeCapture]

	mu     sync.Mutex // guards frames: WriteFrames may run on several queues
	frames [][]byte   // the VM's frames of one batch, as the capture takes them
}

// NewTap wraps the network side of a port.
func NewTap(n pump.Network) *Tap {
	return &Tap{Network: n, frames: make([][]byte, 0, n.BatchSize())}
}

// ReadFrames reads a batch from the network and captures it.
func (t *Tap) ReadFrames(frames [][]byte) (int, error) {
	n, err := t.Network.ReadFrames(frames)
	if n > 0 {
		if a := t.active.Load(); a != nil {
			a.c.Frames(ToVM, frames[:n])
		}
	}
	return n, err
}

// WriteFrames captures a batch from the VM, then encapsulates and sends it.
func (t *Tap) WriteFrames(bufs [][]byte, sizes []int, offset int) error {
	if a := t.active.Load(); a != nil {
		t.capture(a.c, bufs, sizes, offset)
	}
	return t.Network.WriteFrames(bufs, sizes, offset)
}

// capture hands the VM's frames (without headroom) to the capture.
func (t *Tap) capture(k *Capture, bufs [][]byte, sizes []int, offset int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.frames[:0]
	for i, b := range bufs {
		f = append(f, b[offset:offset+sizes[i]])
	}
	k.Frames(ToNetwork, f)
	clear(f)
	t.frames = f[:0]
}

// Start attaches c to the tap: from now on every frame, both directions,
// is handed to it. target names it in the status (the file, or "stream").
// A tap already capturing refuses with ErrActive; the caller keeps c and
// closes it then.
func (t *Tap) Start(c *Capture, target string) error {
	a := &activeCapture{c: c, target: target, started: time.Now()}
	if !t.active.CompareAndSwap(nil, a) {
		return ErrActive
	}
	return nil
}

// Stop detaches the tap's capture, closes it (flushing what is queued,
// closing its file) and returns its final counters. With c not nil it
// stops only that capture. ErrNotActive if there is none.
func (t *Tap) Stop(c *Capture) (Status, error) {
	a := t.active.Load()
	if a == nil || (c != nil && a.c != c) || !t.active.CompareAndSwap(a, nil) {
		return Status{}, ErrNotActive
	}
	err := a.c.Close()
	st := a.status()
	if err != nil && st.Error == "" {
		st.Error = err.Error()
	}
	return st, err
}

// Status reports the running capture, nil if there is none.
func (t *Tap) Status() *Status {
	a := t.active.Load()
	if a == nil {
		return nil
	}
	st := a.status()
	return &st
}

// NewSender gives a queue pair its own sender of the captured network,
// with the capture in front, so a capture sees every queue's frames.
func (t *Tap) NewSender() (pump.NetSender, error) {
	s, err := t.Network.NewSender()
	if err != nil {
		return nil, err
	}
	return &captureSender{t: t, s: s}, nil
}

// captureSender is one queue pair's sender behind a port's capture.
type captureSender struct {
	t *Tap
	s pump.NetSender
}

// WriteFrames captures the batch, if a capture runs, then sends it.
func (cs *captureSender) WriteFrames(bufs [][]byte, sizes []int, offset int) error {
	if a := cs.t.active.Load(); a != nil {
		cs.t.capture(a.c, bufs, sizes, offset)
	}
	return cs.s.WriteFrames(bufs, sizes, offset)
}
