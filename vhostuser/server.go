package vhostuser

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"syscall"
)

// The bounds of the MTU offered to a guest (VIRTIO_NET_F_MTU) and accepted
// back (NET_SET_MTU): the virtio-net mtu field's range, the one place the
// daemon keeps them.
const (
	MinMTU = 68
	MaxMTU = 65535
)

// Config configures a vhost-user net device. Zero values select the defaults.
type Config struct {
	// Queues is the number of queue pairs, 1..16 (default 1). With more than one, MQ is
	// offered and QEMU needs -netdev vhost-user,queues=N.
	Queues int
	// MTU, when non-zero (68..65535), offers VIRTIO_NET_F_MTU; the value the guest sees
	// still comes from QEMU's host_mtu property (sent back as NET_SET_MTU; one above MTU
	// is accepted with a warning, since refusing it costs the guest its NIC).
	MTU int
	// NoOffload withholds the guest's transmit offloads (CSUM, HOST_TSO4/6, HOST_ECN), which
	// are offered by default: the guest then checksums and segments every frame itself.
	NoOffload bool
	// BatchSize is what QueuePair.BatchSize reports, 1..1024 (default 64).
	BatchSize int
	// Logger receives connection-level events; nothing is logged per packet. Default:
	// slog.Default().
	Logger *slog.Logger
}

// withDefaults validates cfg and fills in its defaults.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.Queues == 0 {
		cfg.Queues = 1
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = 64
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	switch {
	case cfg.Queues < 1 || cfg.Queues > 16:
		return cfg, fmt.Errorf("vhostuser: Queues %d out of 1..16", cfg.Queues)
	case cfg.MTU != 0 && (cfg.MTU < MinMTU || cfg.MTU > MaxMTU):
		return cfg, fmt.Errorf("vhostuser: MTU %d out of %d..%d", cfg.MTU, MinMTU, MaxMTU)
	case cfg.BatchSize < 1 || cfg.BatchSize > 1024:
		return cfg, fmt.Errorf("vhostuser: BatchSize %d out of 1..1024", cfg.BatchSize)
	}
	return cfg, nil
}

// Handler learns when queue pairs start and stop. Both methods are called from the
// control goroutine of the connection concerned and must not block: start workers, don't
// run them. While two front ends are connected (a migration's hand-over) calls may come
// from both goroutines at once; the destination starts pair i after the source stopped
// it, but a misbehaving pair of front ends may overlap, so a Handler must tolerate a
// second QueuePairStarted(i) before the first QueuePairStopped(i).
type Handler interface {
	// QueuePairStarted is called once both vrings of pair i are started.
	QueuePairStarted(i int, q *QueuePair)
	// QueuePairStopped is called when the front end stops either vring of pair i or goes
	// away, and only after every ReadFrames and WriteFrames call on its QueuePair returned.
	QueuePairStopped(i int)
}

// ErrServerClosed is returned by ServeConn after Close.
var ErrServerClosed = errors.New("vhostuser: server closed")

// Server is a vhost-user net back end serving the connections it is handed
// (ServeConn): where they come from, and who may connect, is the caller's
// policy. Usually one front end at a time; during a live migration on one host
// the destination QEMU connects and negotiates while the source still runs (it
// waits for those answers before it can receive the VM), so ServeConn may run
// for two connections at once.
type Server struct {
	cfg Config
	h   Handler
	log *slog.Logger

	// mu guards the fields below.
	mu     sync.Mutex
	live   []*session // the connected front ends, oldest first
	closed bool
	totals Stats
}

// New validates cfg and h and returns a server for the connections
// ServeConn is given.
func New(cfg Config, h Handler) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if h == nil {
		return nil, errors.New("vhostuser: nil Handler")
	}
	return &Server{cfg: cfg, h: h, log: cfg.Logger, totals: Stats{Queues: make([]QueueStats, cfg.Queues)}}, nil
}

// ServeConn runs one front end's session on c to its end, folds its counters into the
// totals and closes c. It returns once QueuePairStopped was called for every started pair:
// nil when the front end left, ErrServerClosed after Close, or the error that ended the
// connection (a refused message, counted in ProtocolErrors; a fault in guest memory,
// wrapping ErrMemoryFault, counted in MemoryFaults).
func (s *Server) ServeConn(c *net.UnixConn) error {
	sess := newSession(&s.cfg, s.h, s.log, newUnixTransport(c))
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		c.Close()
		return ErrServerClosed
	}
	s.live = append(s.live, sess)
	s.totals.Connections++
	s.mu.Unlock()
	s.log.Info("vhostuser: front end connected")

	err := sess.run()
	fault := errors.Is(err, ErrMemoryFault)

	// Count before hanging up, so a front end that sees the hang-up sees the count too.
	s.mu.Lock()
	s.live = slices.DeleteFunc(s.live, func(x *session) bool { return x == sess })
	s.totals.addVrings(sess.stats)
	closing := s.closed
	switch {
	case fault:
		s.totals.MemoryFaults++
	case err != nil && !isDisconnect(err) && !closing:
		s.totals.ProtocolErrors++
	}
	s.mu.Unlock()
	c.Close()
	switch {
	case fault: // logged below, once
	case closing:
		s.log.Info("vhostuser: front end disconnected")
		return ErrServerClosed
	case err == nil, isDisconnect(err):
		s.log.Info("vhostuser: front end disconnected")
		return nil
	}
	s.log.Warn("vhostuser: ending connection", "reason", err.Error())
	return err
}

// isDisconnect reports whether err is the front end (or Close) ending the connection
// rather than a refused message.
func isDisconnect(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET)
}

// Close ends the current connection and refuses further ones; ServeConn then stops the
// queue pairs and returns. It does not wait for that, so it may be called from anywhere
// except that Handler methods must not wait for ServeConn to return.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	live := slices.Clone(s.live)
	s.mu.Unlock()
	for _, sess := range live {
		sess.t.close()
	}
	return nil
}

// Stats returns the counters of every connection so far, the live one included.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.totals
	st.Queues = slices.Clone(s.totals.Queues)
	for _, sess := range s.live {
		st.addVrings(sess.stats)
	}
	if n := len(s.live); n > 0 { // the newest front end's settings
		newest := s.live[n-1]
		st.MTU = int(newest.mtu.Load())
		st.Regions = int(newest.nRegions.Load())
		st.SealedRegions = int(newest.nSealed.Load())
	}
	return st
}
