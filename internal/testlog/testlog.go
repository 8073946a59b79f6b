// Package testlog holds the loggers tests share: one that discards, and
// one that writes text lines to a buffer the test reads while the code
// under test logs.
package testlog

import (
	"bytes"
	"io"
	"log/slog"
	"sync"
)

// Discard is a logger for tests that check behaviour, not logs.
func Discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// Buffer is a log destination tests read while the logger writes.
type Buffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

// Write appends p.
func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String is what was logged so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Text logs text lines to w.
func Text(w *Buffer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }
