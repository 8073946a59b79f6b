package frontend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/pump"
)

// Stream is a -netdev stream front end: it listens (or dials), serves one
// QEMU connection at a time through a Pump, and waits for the next. During
// a live migration on one host a second QEMU (the destination) connects
// while the first runs: it waits until it sends its first frame (QEMU
// announces the guest as soon as it runs it) or the first goes, then takes
// the port over and the first connection is closed, so frames from the
// network always go to the QEMU that runs the guest, and to one only.
type Stream struct {
	addr  StreamAddr
	batch int
	log   *slog.Logger
	l     *listener
	// Stats counts frames and connections across all connections.
	Stats StreamStats

	mu     sync.Mutex    // guards ports and closed
	ports  []*StreamPort // the connections, oldest first (two during a hand-over)
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
	if !s.add(port) {
		port.Close()
		return nil
	}
	defer s.remove(port)
	if s.connected() > 1 {
		s.log.Info("second VM connection (a migration's destination?): it takes over when it speaks", "stream", s.addr.String())
		if !s.waitTurn(port) {
			return nil
		}
		s.closeOthers(port)
	}
	s.log.Info("VM connected", "stream", s.addr.String())
	err = p.Serve(port)
	switch {
	case pump.IsNetworkError(err):
		s.Close() // a network error ends the front end, every connection with it
	case err == nil, errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		if !s.isClosed() {
			s.log.Info("VM disconnected", "stream", s.addr.String())
		}
	default:
		s.log.Warn("VM connection closed", "stream", s.addr.String(), "reason", err)
	}
	return err
}

// add records a connection so Close can end it; it refuses one after Close.
func (s *Stream) add(p *StreamPort) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.ports = append(s.ports, p)
	return true
}

// remove forgets a connection that ended.
func (s *Stream) remove(p *StreamPort) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ports = slices.DeleteFunc(s.ports, func(x *StreamPort) bool { return x == p })
}

// connected is the number of QEMU connections.
func (s *Stream) connected() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ports)
}

// closeOthers closes every connection but p: the source QEMU of a migration
// once the destination runs the guest.
func (s *Stream) closeOthers(p *StreamPort) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, o := range s.ports {
		if o != p {
			s.log.Info("VM connection handed over to the newer one", "stream", s.addr.String())
			o.Close()
		}
	}
}

// handOverPoll is how often a waiting second connection checks whether the
// first one went away.
const handOverPoll = 100 * time.Millisecond

// waitTurn holds the second connection p until it sends its first bytes or
// is the only one left; false when the front end closed meanwhile.
func (s *Stream) waitTurn(p *StreamPort) bool {
	defer p.conn.SetReadDeadline(time.Time{})
	for {
		if s.isClosed() {
			return false
		}
		if s.connected() == 1 {
			return true
		}
		p.conn.SetReadDeadline(time.Now().Add(handOverPoll))
		if p.readable() {
			return true
		}
	}
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
	for _, p := range s.ports {
		p.Close()
	}
	return s.l.close()
}

// Status reports the stream front end.
func (s *Stream) Status() Status {
	connected := s.connected() > 0
	return Status{Kind: "stream", Address: s.addr.String(), Connected: connected,
		Connections: s.Stats.Connections.Load(), ProtocolErrors: s.Stats.BadLength.Load(),
		Waits: s.Stats.Stalls.Load(), WaitNanos: s.Stats.StallNanos.Load(), RefusedPeers: s.l.refused()}
}
