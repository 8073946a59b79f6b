// Package pumptest holds test doubles for the pump's two sides. It imports
// nothing of this module, so the pump's own tests can use it too.
package pumptest

import (
	"bytes"
	"net"
	"sync"
	"sync/atomic"
)

// Net is a network-side double: it serves the batches queued on In to
// ReadFrames and records what WriteFrames sends, optionally stalling until
// Gate is closed. Closing Closed makes ReadFrames return net.ErrClosed.
type Net struct {
	In       chan [][]byte
	Consumed atomic.Int64  // frames ReadFrames handed out
	Gate     chan struct{} // WriteFrames waits on it when non-nil
	Closed   chan struct{}

	mu   sync.Mutex // guards sent
	sent [][]byte
}

// NewNet returns a Net with room for 1024 queued batches.
func NewNet() *Net {
	return &Net{In: make(chan [][]byte, 1024), Closed: make(chan struct{})}
}

// ReadFrames hands out the next queued batch.
func (f *Net) ReadFrames(frames [][]byte) (int, error) {
	select {
	case b := <-f.In:
		n := copy(frames, b)
		f.Consumed.Add(int64(n))
		return n, nil
	case <-f.Closed:
		return 0, net.ErrClosed
	}
}

// WriteFrames records a copy of each frame, after Gate opens.
func (f *Net) WriteFrames(bufs [][]byte, sizes []int, offset int) error {
	if f.Gate != nil {
		<-f.Gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range bufs {
		f.sent = append(f.sent, bytes.Clone(bufs[i][offset:offset+sizes[i]]))
	}
	return nil
}

// NewSender returns f itself: every queue pair records into the one list.
func (f *Net) NewSender() (interface {
	WriteFrames(bufs [][]byte, sizes []int, offset int) error
}, error) {
	return f, nil
}

// Headroom is 16 bytes: enough to catch a pump that ignores it.
func (f *Net) Headroom() int { return 16 }

// BatchSize is 32 frames.
func (f *Net) BatchSize() int { return 32 }

// SentCount is how many frames reached the network.
func (f *Net) SentCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.sent)
}

// Sent is a copy of the list of frames sent so far.
func (f *Net) Sent() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]byte(nil), f.sent...)
}
