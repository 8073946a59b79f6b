package frontend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/pump"
)

// Stream is a -netdev stream front end: it listens (or dials), serves one
// QEMU connection at a time through a Pump, and waits for the next.
type Stream struct {
	addr  StreamAddr
	batch int
	log   *slog.Logger
	l     *listener
	// Stats counts frames and connections across all connections.
	Stats StreamStats

	mu     sync.Mutex // guards cur and closed
	cur    *StreamPort
	closed bool
}

// ListenStream prepares the front end: as server it binds now, so a socket
// in use or a bad path is refused at start. A stale unix socket file (no
// one listening) is replaced; any other existing file is refused.
func ListenStream(addr StreamAddr, batch int, log *slog.Logger) (*Stream, error) {
	l, err := listen(addr.Network, addr.Address, addr.Server, addr.Access, addr.Reconnect, log)
	if err != nil {
		return nil, fmt.Errorf("--stream %s: %w", addr, err)
	}
	return &Stream{addr: addr, batch: batch, log: log, l: l}, nil
}

// Queues is 1: a stream carries one queue pair.
func (s *Stream) Queues() int { return 1 }

// Run serves QEMU connections through p until ctx ends, Close is called,
// or the network side fails (that error is returned).
func (s *Stream) Run(ctx context.Context, p *pump.Pump) error {
	return s.l.serve(ctx, func(conn net.Conn) error { return s.serveConn(conn, p) })
}

// serveConn forwards one QEMU connection through p until it ends, and
// logs how it ended; a network-side error is returned.
func (s *Stream) serveConn(conn net.Conn, p *pump.Pump) error {
	port, err := NewStreamPort(conn, s.batch, &s.Stats)
	if err != nil {
		conn.Close()
		return err
	}
	if !s.setCurrent(port) {
		port.Close()
		return nil
	}
	s.log.Info("VM connected", "stream", s.addr.String())
	err = p.Serve(port)
	s.setCurrent(nil)
	switch {
	case pump.IsNetworkError(err):
	case err == nil, errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		if !s.isClosed() {
			s.log.Info("VM disconnected", "stream", s.addr.String())
		}
	default:
		s.log.Warn("VM connection closed", "stream", s.addr.String(), "reason", err)
	}
	return err
}

// setCurrent records the connection being served so Close can end it; it
// refuses a new one after Close.
func (s *Stream) setCurrent(p *StreamPort) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed && p != nil {
		return false
	}
	s.cur = p
	return true
}

// isClosed reports whether Close was called.
func (s *Stream) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Close stops accepting, ends the current connection and removes the
// socket file; idempotent.
func (s *Stream) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.cur != nil {
		s.cur.Close()
	}
	return s.l.close()
}

// Status reports the stream front end.
func (s *Stream) Status() Status {
	s.mu.Lock()
	connected := s.cur != nil
	s.mu.Unlock()
	return Status{Kind: "stream", Address: s.addr.String(), Connected: connected,
		Connections: s.Stats.Connections.Load(), ProtocolErrors: s.Stats.BadLength.Load(),
		Waits: s.Stats.Stalls.Load(), WaitNanos: s.Stats.StallNanos.Load(), RefusedPeers: s.l.refused()}
}
