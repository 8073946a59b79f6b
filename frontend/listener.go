package frontend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/pump"
)

// Where a front end meets QEMU: the one place that listens, accepts, dials
// and retries, for the stream and the vhost-user front end alike (and the
// admin socket's ListenUnix).

// acceptRetry is the pause after an accept that failed for want of file
// descriptors or on a timeout, before accepting again.
const acceptRetry = 100 * time.Millisecond

// firstRedial is the first pause between dials while QEMU does not answer;
// it doubles up to the address's reconnect interval.
const firstRedial = 50 * time.Millisecond

// listener is a front end's socket: one it listens on (server) or an
// address it dials, again after each connection ends (client).
type listener struct {
	network, address string
	redial           time.Duration // client: the longest pause between dials
	ln               net.Listener  // server
	guard            *peerGuard    // allow-uid= on a unix listener; nil otherwise
	log              *slog.Logger
	closeOnce        sync.Once
	closed           chan struct{}
}

// listen prepares a front end's socket. As a server it binds now, so that a
// socket in use or a bad path is refused at start; as a client nothing is
// dialled before next.
func listen(network, address string, server bool, a Access, redial time.Duration, log *slog.Logger) (*listener, error) {
	l := &listener{network: network, address: address, redial: redial, log: log, closed: make(chan struct{})}
	if !server {
		return l, nil
	}
	if network == "unix" {
		ln, err := ListenUnix(address, a, log)
		if err != nil {
			return nil, err
		}
		l.ln, l.guard = ln, ln.(*guardedListener).guard
		return l, nil
	}
	var err error
	if l.ln, err = net.Listen(network, address); err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	return l, nil
}

// next returns the next connection from QEMU: accepted (a refused peer is
// closed and skipped; running out of descriptors is waited out) or dialled
// (again until QEMU answers). After close it returns net.ErrClosed.
func (l *listener) next(ctx context.Context) (net.Conn, error) {
	if l.ln != nil {
		return l.accept()
	}
	return l.dial(ctx)
}

// accept waits for the next allowed connection.
func (l *listener) accept() (net.Conn, error) {
	for {
		c, err := l.ln.Accept()
		if err == nil || l.isClosed() {
			return c, err
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
			l.log.Warn("accept", "socket", l.address, "err", err)
			if !l.sleep(acceptRetry) {
				return nil, net.ErrClosed
			}
			continue
		}
		return nil, err
	}
}

// dial connects to QEMU, retrying with backoff up to the reconnect
// interval until it answers or the listener closes.
func (l *listener) dial(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	pause := min(firstRedial, l.redial)
	for attempt := 0; ; attempt++ {
		c, err := d.DialContext(ctx, l.network, l.address)
		if err == nil {
			return c, nil
		}
		if attempt == 0 {
			l.log.Info("waiting for QEMU", "socket", l.address, "reason", err)
		}
		if !l.sleep(pause) {
			return nil, net.ErrClosed
		}
		pause = min(2*pause, l.redial)
	}
}

// sleep waits d unless the listener closes first, which it reports as false.
func (l *listener) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-l.closed:
		return false
	}
}

// isClosed reports whether close was called.
func (l *listener) isClosed() bool {
	select {
	case <-l.closed:
		return true
	default:
		return false
	}
}

// close stops accepting or dialling and removes a unix socket file;
// idempotent.
func (l *listener) close() error {
	var err error
	l.closeOnce.Do(func() {
		close(l.closed)
		if l.ln != nil {
			err = l.ln.Close()
		}
	})
	return err
}

// handOver is how many QEMU connections a listening front end serves at
// once: two, for a live migration on one host, where the destination QEMU
// connects to the same socket while the source still runs. A further one
// waits until one of them ends; a dialling front end has one.
const handOver = 2

// serve hands each connection to serveConn, up to handOver of them at once
// (one when dialling), until the listener is closed or ctx ends (nil), or
// serveConn returns a network-side error, which ends the front end: the one
// error policy of both front ends. It returns once every serveConn has.
func (l *listener) serve(ctx context.Context, serveConn func(net.Conn) error) error {
	stop := context.AfterFunc(ctx, func() { l.close() })
	defer stop()
	most := 1
	if l.ln != nil {
		most = handOver
	}
	slots := make(chan struct{}, most)
	failed := make(chan error, most)
	var wg sync.WaitGroup
	// end waits for the connections still served and prefers the network
	// error that closed the listener to err.
	end := func(err error) error {
		wg.Wait()
		select {
		case ferr := <-failed:
			return ferr
		default:
			return err
		}
	}
	for {
		select {
		case slots <- struct{}{}:
		case <-l.closed:
			return end(nil)
		}
		c, err := l.next(ctx)
		if err != nil {
			if l.isClosed() {
				err = nil
			}
			return end(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := serveConn(c); pump.IsNetworkError(err) {
				failed <- err
				l.close()
			}
			<-slots
		}()
	}
}

// refused is the number of connections allow-uid= refused.
func (l *listener) refused() uint64 { return l.guard.Refused() }

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

// ListenUnix listens on the unix socket path with access a, as the
// front ends do: a stale socket file is replaced (one in use is refused),
// the file is born 0600 and then given a's owner, group and mode, and is
// removed when the listener closes; a connection from a peer allow-uid=
// does not allow is closed before a byte is read, counted and logged (at
// most once a second) on log.
func ListenUnix(path string, a Access, log *slog.Logger) (net.Listener, error) {
	if err := RemoveStaleSocket(path); err != nil {
		return nil, err
	}
	var ln net.Listener
	if err := BindPrivate(func() (err error) { ln, err = net.Listen("unix", path); return err }); err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(true)
	if err := a.apply(path); err != nil {
		ln.Close()
		return nil, err
	}
	return &guardedListener{ln, newPeerGuard(a, log, path)}, nil
}
