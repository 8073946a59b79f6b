package guest

import (
	"errors"
	"sync"
	"time"
)

// errTimeout is returned by logBuf.wait when its deadline passes.
var errTimeout = errors.New("timed out")

// logBuf collects what a QEMU process writes (the serial console or its
// standard error) and lets readers wait for text to appear. Carriage returns
// are dropped so that lines end in "\n" whatever the guest's tty settings.
type logBuf struct {
	mu      sync.Mutex    // guards data and changed
	data    []byte        // everything written so far, without '\r'
	changed chan struct{} // closed (and replaced) on every write
}

func newLogBuf() *logBuf { return &logBuf{changed: make(chan struct{})} }

// Write appends p; it never fails.
func (b *logBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	for _, c := range p {
		if c != '\r' {
			b.data = append(b.data, c)
		}
	}
	close(b.changed)
	b.changed = make(chan struct{})
	b.mu.Unlock()
	return len(p), nil
}

// Len returns the number of bytes collected so far.
func (b *logBuf) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.data)
}

// String returns everything collected so far.
func (b *logBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.data)
}

// tail returns at most the last n bytes collected.
func (b *logBuf) tail(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.data) <= n {
		return string(b.data)
	}
	return "…" + string(b.data[len(b.data)-n:])
}

// wait calls match with the data from offset from on every change until it
// reports done, the deadline passes (errTimeout), or stop is closed
// (stopErr()). match must not keep the slice.
func (b *logBuf) wait(from int, deadline time.Time, stop <-chan struct{}, stopErr func() error,
	match func(data []byte) bool) error {
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	for {
		b.mu.Lock()
		data := b.data
		if from > len(data) {
			from = len(data)
		}
		done := match(data[from:])
		ch := b.changed
		b.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-timer.C:
			return errTimeout
		case <-stop:
			// Whatever QEMU wrote last may still be on its way.
			b.mu.Lock()
			done = match(b.data[from:])
			b.mu.Unlock()
			if done {
				return nil
			}
			return stopErr()
		}
	}
}
