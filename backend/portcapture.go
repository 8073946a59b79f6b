package backend

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/pump"
)

// ErrCaptureActive is returned by StartCapture while the port is already
// being captured.
var ErrCaptureActive = errors.New("a capture of this port is running")

// ErrNoCapture is returned by StopCapture when the port is not captured.
var ErrNoCapture = errors.New("no capture of this port is running")

// CaptureStatus is a port's running (or just stopped) capture.
type CaptureStatus struct {
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
func (a *activeCapture) status() CaptureStatus {
	st := a.c.Stats()
	s := CaptureStatus{Target: a.target, Started: a.started, Captured: st.Captured, Dropped: st.Dropped, Bytes: st.Bytes}
	if err := a.c.Err(); err != nil {
		s.Error = err.Error()
	}
	return s
}

// captureNetwork is a port's network side with an optional capture: each
// batch goes to the attached Capture, if any, for the cost of one atomic
// load per batch when there is none. Frames from the network are captured
// after decapsulation (ToVM); frames from the VM before encapsulation,
// which happens in place (ToNetwork).
type captureNetwork struct {
	pump.Network
	active atomic.Pointer[activeCapture]

	mu     sync.Mutex // guards frames: WriteFrames may run on several queues
	frames [][]byte   // the VM's frames of one batch, as the capture takes them
}

// newCaptureNetwork wraps the network side of a port.
func newCaptureNetwork(n pump.Network) *captureNetwork {
	return &captureNetwork{Network: n, frames: make([][]byte, 0, n.BatchSize())}
}

// ReadFrames reads a batch from the network and captures it.
func (c *captureNetwork) ReadFrames(frames [][]byte) (int, error) {
	n, err := c.Network.ReadFrames(frames)
	if n > 0 {
		if a := c.active.Load(); a != nil {
			a.c.Frames(ToVM, frames[:n])
		}
	}
	return n, err
}

// WriteFrames captures a batch from the VM, then encapsulates and sends it.
func (c *captureNetwork) WriteFrames(bufs [][]byte, sizes []int, offset int) error {
	if a := c.active.Load(); a != nil {
		c.capture(a.c, bufs, sizes, offset)
	}
	return c.Network.WriteFrames(bufs, sizes, offset)
}

// capture hands the VM's frames (without headroom) to the capture.
func (c *captureNetwork) capture(k *Capture, bufs [][]byte, sizes []int, offset int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.frames[:0]
	for i, b := range bufs {
		f = append(f, b[offset:offset+sizes[i]])
	}
	k.Frames(ToNetwork, f)
	clear(f)
	c.frames = f[:0]
}

// StartCapture attaches c to the port: from now on every frame, both
// directions, is handed to it. target names it in the status (the file,
// or "stream"). A port already captured is refused with ErrCaptureActive;
// the caller keeps c and closes it then.
func (p *Port) StartCapture(c *Capture, target string) error {
	a := &activeCapture{c: c, target: target, started: time.Now()}
	if !p.net.active.CompareAndSwap(nil, a) {
		return fmt.Errorf("port %s: %w", p.cfg.Name, ErrCaptureActive)
	}
	p.log.Info("capture started", "target", target)
	return nil
}

// StopCapture detaches the port's capture, closes it (flushing what is
// queued, closing its file) and returns its final counters. With c not nil
// it stops only that capture. ErrNoCapture if there is none.
func (p *Port) StopCapture(c *Capture) (CaptureStatus, error) {
	a := p.net.active.Load()
	if a == nil || (c != nil && a.c != c) || !p.net.active.CompareAndSwap(a, nil) {
		return CaptureStatus{}, fmt.Errorf("port %s: %w", p.cfg.Name, ErrNoCapture)
	}
	err := a.c.Close()
	st := a.status()
	if err != nil && st.Error == "" {
		st.Error = err.Error()
	}
	p.log.Info("capture stopped", "target", a.target, "captured", st.Captured, "dropped", st.Dropped, "err", err)
	return st, err
}

// CaptureStatus reports the running capture, nil if there is none.
func (p *Port) CaptureStatus() *CaptureStatus {
	a := p.net.active.Load()
	if a == nil {
		return nil
	}
	st := a.status()
	return &st
}

// closeCapture stops a running capture as the port closes.
func (p *Port) closeCapture() {
	if p.net.active.Load() != nil {
		p.StopCapture(nil)
	}
}

// NewSender gives a queue pair its own sender of the captured network,
// with the capture in front, so a capture sees every queue's frames.
func (c *captureNetwork) NewSender() (pump.NetSender, error) {
	s, err := pump.SenderOf(c.Network)
	if err != nil {
		return nil, err
	}
	return &captureSender{c: c, s: s}, nil
}

// captureSender is one queue pair's sender behind a port's capture.
type captureSender struct {
	c *captureNetwork
	s pump.NetSender
}

// WriteFrames captures the batch, if a capture runs, then sends it.
func (cs *captureSender) WriteFrames(bufs [][]byte, sizes []int, offset int) error {
	if a := cs.c.active.Load(); a != nil {
		cs.c.capture(a.c, bufs, sizes, offset)
	}
	return cs.s.WriteFrames(bufs, sizes, offset)
}
