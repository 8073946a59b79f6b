package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/pump"
)

// StreamAddr is where a -netdev stream front end meets QEMU.
type StreamAddr struct {
	// Network is "unix" or "tcp".
	Network string
	// Address is a socket path (unix) or host:port (tcp).
	Address string
	// Server makes the sidecar listen (QEMU server=off); otherwise the
	// sidecar connects to a QEMU server=on and reconnects when it drops.
	Server bool
	// Reconnect is the client's retry interval.
	Reconnect time.Duration
	// Access is the socket file's owner, group and mode and the peer UID
	// allowed (unix, server=on only; see access.go).
	Access Access
}

// String renders the address in the --stream syntax.
func (a StreamAddr) String() string {
	s := a.Network + ":" + a.Address
	if a.Server {
		return s + ",server=on" + a.Access.String()
	}
	return s + ",server=off,reconnect-ms=" + strconv.FormatInt(a.Reconnect.Milliseconds(), 10)
}

// ParseStreamAddr reads `unix:PATH[,server=on|off][,reconnect=SECONDS]
// [,reconnect-ms=MS]` or `tcp:HOST:PORT[,…]`. The sidecar is the server by
// default (QEMU then uses server=off); a client retries every second unless
// told otherwise.
func ParseStreamAddr(spec string) (StreamAddr, error) {
	a := StreamAddr{Server: true, Reconnect: time.Second}
	parts := strings.Split(spec, ",")
	kind, addr, ok := strings.Cut(parts[0], ":")
	if !ok || addr == "" {
		return a, fmt.Errorf("--stream %q: want unix:PATH or tcp:HOST:PORT", spec)
	}
	switch kind {
	case "unix":
	case "tcp":
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return a, fmt.Errorf("--stream %q: tcp address: %v", spec, err)
		}
	default:
		return a, fmt.Errorf("--stream %q: unknown socket type %q (want unix or tcp)", spec, kind)
	}
	a.Network, a.Address = kind, addr
	for _, kv := range parts[1:] {
		if err := a.set(kv); err != nil {
			return a, fmt.Errorf("--stream %q: %v", spec, err)
		}
	}
	if err := a.Access.validFor(a.Network == "unix" && a.Server); err != nil {
		return a, fmt.Errorf("--stream %q: %v", spec, err)
	}
	return a, nil
}

// set applies one key=value of the --stream syntax.
func (a *StreamAddr) set(kv string) error {
	key, val, _ := strings.Cut(kv, "=")
	switch key {
	case "server":
		b, err := parseOnOff(val)
		if err != nil {
			return fmt.Errorf("server=%s: %v", val, err)
		}
		a.Server = b
	case "reconnect", "reconnect-ms":
		n, err := strconv.ParseUint(val, 10, 32)
		if err != nil || n == 0 {
			return fmt.Errorf("%s=%s: want a positive whole number", key, val)
		}
		unit := time.Second
		if key == "reconnect-ms" {
			unit = time.Millisecond
		}
		a.Reconnect = time.Duration(n) * unit
	default:
		if known, err := a.Access.set(key, val); known {
			return err
		}
		return fmt.Errorf("unknown key %q (want server, reconnect, reconnect-ms, %s)", key, accessKeys)
	}
	return nil
}

// parseOnOff reads QEMU's boolean spellings; a bare key means on.
func parseOnOff(v string) (bool, error) {
	switch v {
	case "", "on", "yes", "true":
		return true, nil
	case "off", "no", "false":
		return false, nil
	}
	return false, errors.New("want on or off")
}

// Stream is a -netdev stream front end: it listens (or dials), serves one
// QEMU connection at a time through a Pump, and waits for the next.
type Stream struct {
	addr  StreamAddr
	batch int
	log   *slog.Logger
	ln    net.Listener
	// Stats counts frames and connections across all connections.
	Stats StreamStats

	mu      sync.Mutex // guards cur and closed
	cur     *StreamPort
	closed  bool
	closeCh chan struct{}
	guard   *peerGuard // allow-uid= check on accept; nil without a unix listener
}

// ListenStream prepares the front end: as server it binds now, so a socket
// in use or a bad path is refused at start. A stale unix socket file (no
// one listening) is replaced; any other existing file is refused.
func ListenStream(addr StreamAddr, batch int, log *slog.Logger) (*Stream, error) {
	s := &Stream{addr: addr, batch: batch, log: log, closeCh: make(chan struct{})}
	if !addr.Server {
		return s, nil
	}
	if addr.Network == "unix" {
		if err := RemoveStaleSocket(addr.Address); err != nil {
			return nil, fmt.Errorf("--stream unix:%s: %w", addr.Address, err)
		}
	}
	var ln net.Listener
	err := BindPrivate(func() (err error) { ln, err = net.Listen(addr.Network, addr.Address); return err })
	if err != nil {
		return nil, fmt.Errorf("--stream %s: listen: %w", addr, err)
	}
	if addr.Network == "unix" {
		ln.(*net.UnixListener).SetUnlinkOnClose(true)
		if err := addr.Access.apply(addr.Address); err != nil {
			ln.Close()
			return nil, fmt.Errorf("--stream %s: %w", addr, err)
		}
		s.guard = newPeerGuard(addr.Access, log, addr.Address)
		ln = &guardedListener{ln, s.guard}
	}
	s.ln = ln
	return s, nil
}

// RemoveStaleSocket deletes a unix socket file nobody listens on, so a
// daemon restarted after a crash can listen again; a socket someone
// answers on, or a file that is not a socket, is refused.
func RemoveStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return errors.New("file exists and is not a socket")
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return errors.New("socket in use by another process")
	}
	return os.Remove(path)
}

// Run serves QEMU connections through p until ctx ends, Close is called,
// or the network side fails (that error is returned).
func (s *Stream) Run(ctx context.Context, p *pump.Pump) error {
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	for {
		conn, err := s.next(ctx)
		if err != nil {
			if s.isClosed() {
				return nil
			}
			return err
		}
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
			return err
		case err == nil, errors.Is(err, io.EOF), errIsClosed(err):
			if !s.isClosed() {
				s.log.Info("VM disconnected", "stream", s.addr.String())
			}
		default:
			s.log.Warn("VM connection closed", "stream", s.addr.String(), "reason", err)
		}
	}
}

// next accepts the next connection, or dials until one is made.
func (s *Stream) next(ctx context.Context) (net.Conn, error) {
	if s.ln != nil {
		return s.ln.Accept()
	}
	var d net.Dialer
	logged := false
	for {
		c, err := d.DialContext(ctx, s.addr.Network, s.addr.Address)
		if err == nil {
			return c, nil
		}
		if s.isClosed() {
			return nil, net.ErrClosed
		}
		if !logged {
			s.log.Info("waiting for QEMU", "stream", s.addr.String(), "reason", err)
			logged = true
		}
		select {
		case <-time.After(s.addr.Reconnect):
		case <-s.closeCh:
			return nil, net.ErrClosed
		}
	}
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
	close(s.closeCh)
	if s.cur != nil {
		s.cur.Close()
	}
	if s.ln != nil {
		return s.ln.Close()
	}
	return nil
}
