package vhostuser

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
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
	// Allow, when set, vets each accepted front end before any message is read (e.g. its
	// SO_PEERCRED uid); a connection it refuses is closed and the next one awaited.
	Allow func(c *net.UnixConn) bool
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
	case cfg.MTU != 0 && (cfg.MTU < 68 || cfg.MTU > 65535):
		return cfg, fmt.Errorf("vhostuser: MTU %d out of 68..65535", cfg.MTU)
	case cfg.BatchSize < 1 || cfg.BatchSize > 1024:
		return cfg, fmt.Errorf("vhostuser: BatchSize %d out of 1..1024", cfg.BatchSize)
	}
	return cfg, nil
}

// Handler learns when queue pairs start and stop. Both methods are called from the
// connection's control goroutine and must not block: start workers, don't run them.
type Handler interface {
	// QueuePairStarted is called once both vrings of pair i are started.
	QueuePairStarted(i int, q *QueuePair)
	// QueuePairStopped is called when the front end stops either vring of pair i or goes
	// away, and only after every ReadFrames and WriteFrames call on its QueuePair returned.
	QueuePairStopped(i int)
}

// ErrServerClosed is returned by Serve after Close.
var ErrServerClosed = errors.New("vhostuser: server closed")

// Server is a vhost-user net back end serving one front end at a time.
type Server struct {
	cfg Config
	h   Handler
	log *slog.Logger

	ln       *net.UnixListener // Listen, or FromFD with a listening socket
	dialPath string            // Dial
	conn     *net.UnixConn     // FromFD with a connected socket, until served

	// mu guards the fields below.
	mu       sync.Mutex
	cur      *session
	closed   bool
	closedCh chan struct{}
	totals   Stats
}

// newServer validates cfg and h for the constructors.
func newServer(cfg Config, h Handler) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if h == nil {
		return nil, errors.New("vhostuser: nil Handler")
	}
	return &Server{cfg: cfg, h: h, log: cfg.Logger, closedCh: make(chan struct{}),
		totals: Stats{Queues: make([]QueueStats, cfg.Queues)}}, nil
}

// Listen creates the socket at path for QEMU to connect to (-chardev socket,path=…,
// reconnect=1). A stale socket file nobody listens on is replaced; the file is removed on
// Close.
func Listen(path string, cfg Config, h Handler) (*Server, error) {
	s, err := newServer(cfg, h)
	if err != nil {
		return nil, err
	}
	addr := &net.UnixAddr{Name: path, Net: "unix"}
	ln, err := net.ListenUnix("unix", addr)
	if errors.Is(err, syscall.EADDRINUSE) {
		// Replace only a socket nobody listens on; never another kind of file.
		if fi, serr := os.Lstat(path); serr == nil && fi.Mode()&os.ModeSocket != 0 {
			if c, derr := net.Dial("unix", path); derr == nil {
				c.Close()
			} else if errors.Is(derr, syscall.ECONNREFUSED) {
				os.Remove(path)
				ln, err = net.ListenUnix("unix", addr)
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("vhostuser: listen %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(true)
	s.ln = ln
	return s, nil
}

// Dial returns a server that connects to a QEMU chardev listening at path (server=on),
// retrying until it answers and again after each disconnection; nothing is dialled before
// Serve.
func Dial(path string, cfg Config, h Handler) (*Server, error) {
	s, err := newServer(cfg, h)
	if err != nil {
		return nil, err
	}
	s.dialPath = path
	return s, nil
}

// FromFD adopts an inherited AF_UNIX stream socket (the --fd convention of vhost-user back
// ends): a listening socket is served like Listen, a connected one serves that single front
// end and Serve returns when it leaves. The fd is duplicated; the caller may close its copy.
func FromFD(fd int, cfg Config, h Handler) (*Server, error) {
	s, err := newServer(cfg, h)
	if err != nil {
		return nil, err
	}
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil || typ != unix.SOCK_STREAM {
		return nil, fmt.Errorf("vhostuser: fd %d is not a stream socket", fd)
	}
	listening, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	if err != nil {
		return nil, fmt.Errorf("vhostuser: fd %d: %w", fd, err)
	}
	f := os.NewFile(uintptr(fd), "vhost-user")
	defer f.Close() // only our os.File wrapper; net keeps a duplicate
	if listening == 1 {
		l, err := net.FileListener(f)
		if err != nil {
			return nil, fmt.Errorf("vhostuser: fd %d: %w", fd, err)
		}
		ul, ok := l.(*net.UnixListener)
		if !ok {
			l.Close()
			return nil, fmt.Errorf("vhostuser: fd %d is not a unix socket", fd)
		}
		s.ln = ul
		return s, nil
	}
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("vhostuser: fd %d: %w", fd, err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("vhostuser: fd %d is not a unix socket", fd)
	}
	s.conn = uc
	return s, nil
}

// Serve serves front ends one after the other until Close or ctx ends (which closes the
// server); it returns only after QueuePairStopped was called for every started pair.
// It returns ErrServerClosed, ctx.Err(), nil when the single front end of a connected
// FromFD socket left, or the listener's error.
func (s *Server) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	for {
		c, err := s.next()
		if err != nil {
			if s.isClosed() {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return ErrServerClosed
			}
			return err
		}
		if c == nil {
			return nil // the one connection of a connected FromFD socket is done
		}
		s.serveConn(c)
	}
}

// isClosed reports whether Close was called.
func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// next returns the next front-end connection: accepted, dialled (with retries) or the
// inherited one; nil, nil once an inherited connection has been served.
func (s *Server) next() (*net.UnixConn, error) {
	switch {
	case s.ln != nil:
		for {
			c, err := s.ln.AcceptUnix()
			if err == nil && s.cfg.Allow != nil && !s.cfg.Allow(c) {
				c.Close() // refused; Allow counts and logs it
				continue
			}
			if err == nil || s.isClosed() {
				return c, err
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				s.log.Warn("vhostuser: accept", "err", err)
				if !s.sleep(100 * time.Millisecond) {
					return nil, ErrServerClosed
				}
				continue
			}
			return nil, err
		}
	case s.dialPath != "":
		return s.dial()
	default:
		s.mu.Lock()
		c := s.conn
		s.conn = nil
		closed := s.closed
		s.mu.Unlock()
		if closed {
			return nil, ErrServerClosed
		}
		return c, nil
	}
}

// dial connects to the front end, retrying with backoff until it answers or Close.
func (s *Server) dial() (*net.UnixConn, error) {
	delay := 50 * time.Millisecond
	for attempt := 0; ; attempt++ {
		c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: s.dialPath, Net: "unix"})
		if err == nil {
			return c, nil
		}
		if attempt == 0 {
			s.log.Info("vhostuser: waiting for the front end", "path", s.dialPath, "err", err)
		}
		if !s.sleep(delay) {
			return nil, ErrServerClosed
		}
		delay = min(2*delay, time.Second)
	}
}

// sleep waits d unless the server closes first, which it reports as false.
func (s *Server) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.closedCh:
		return false
	}
}

// serveConn runs one front end's session to its end and folds its counters into the totals.
func (s *Server) serveConn(c *net.UnixConn) {
	sess := newSession(&s.cfg, s.h, s.log, newUnixTransport(c))
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		c.Close()
		return
	}
	s.cur = sess
	s.totals.Connections++
	s.mu.Unlock()
	s.log.Info("vhostuser: front end connected")

	err := sess.run()

	// Count before hanging up, so a front end that sees the hang-up sees the count too.
	s.mu.Lock()
	s.cur = nil
	s.totals.addVrings(sess.stats)
	closing := s.closed
	if err != nil && !isDisconnect(err) && !closing {
		s.totals.ProtocolErrors++
	}
	s.mu.Unlock()
	c.Close()
	if isDisconnect(err) || closing {
		s.log.Info("vhostuser: front end disconnected")
	} else {
		s.log.Warn("vhostuser: ending connection", "reason", err.Error())
	}
}

// isDisconnect reports whether err is the front end (or Close) ending the connection
// rather than a refused message.
func isDisconnect(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET)
}

// Close stops accepting or dialling and ends the current connection; Serve then stops the
// queue pairs and returns. It does not wait for that, so it may be called from anywhere
// except that Handler methods must not wait for Serve to return.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.closedCh)
	cur, conn := s.cur, s.conn
	s.conn = nil
	s.mu.Unlock()
	var err error
	if s.ln != nil {
		err = s.ln.Close()
	}
	if cur != nil {
		cur.t.close()
	}
	if conn != nil {
		conn.Close()
	}
	return err
}

// Stats returns the counters of every connection so far, the live one included.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.totals
	st.Queues = slices.Clone(s.totals.Queues)
	if s.cur != nil {
		st.addVrings(s.cur.stats)
		st.MTU = int(s.cur.mtu.Load())
	}
	return st
}
