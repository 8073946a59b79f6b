package l2tp

import (
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Sender is one more send side of a Tunnel, for a VM with several transmit
// queues: each queue's goroutine owns a Sender and calls its WriteFrames
// while the others call theirs. A Sender has its own sendmmsg vector and
// its own duplicate of the tunnel's socket descriptor (Go serialises
// writers of one descriptor; the kernel's UDP and raw send paths do not
// need it), and shares the socket, peer, counters and sequence numbering
// with the tunnel's other Senders.
//
// Sequencing across Senders: QEMU's counter (counter=on) is one atomic
// counter, so every packet carries a distinct number; RFC 4719 sequence
// numbers (seq=send|both) must also leave in order, because a Linux peer
// drops out-of-order packets, so under seq=send|both the Senders take turns
// (one lock, held while numbering and sending a batch). Once a tunnel has
// Senders, its own WriteFrames must not be used on a sequenced session: it
// numbers on its own.
type Sender struct {
	view  Tunnel      // send-only copy of the tunnel: own descriptor and txQueue
	order *sync.Mutex // non-nil under seq=send|both: keeps numbers in order on the wire
	owner *Tunnel
}

// senderSet is what a tunnel shares with its Senders.
type senderSet struct {
	mu      sync.Mutex // guards senders and closed (control path only)
	senders []*Sender
	closed  bool
	counter atomic.Uint32 // the numbering every Sender's encoder uses
	order   sync.Mutex    // taken by Senders under seq=send|both
}

// NewSender returns a new Sender of t, with its own duplicate of the
// socket; Close closes it with the tunnel. It fails once t is closed.
func (t *Tunnel) NewSender() (*Sender, error) {
	set := t.multi
	set.mu.Lock()
	defer set.mu.Unlock()
	if set.closed {
		return nil, fmt.Errorf("l2tpv3: new sender for %s: %w", t.local, net.ErrClosed)
	}
	fd, err := dupSocket(t)
	if err != nil {
		return nil, fmt.Errorf("l2tpv3: new sender for %s: %w", t.local, err)
	}
	f := os.NewFile(uintptr(fd), "l2tpv3-sender:"+socketName(t.cfg))
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("l2tpv3: new sender for %s: %w", t.local, err)
	}
	s := &Sender{owner: t}
	s.view = Tunnel{cfg: t.cfg, batch: t.batch, hl: t.hl, local: t.local, peer: t.peer, stats: t.stats, ul: t.ul, route: t.route, f: f}
	s.view.tx = newTxQueue(t.cfg, t.batch, rc, f, t.tx.peer, t.stats, t.ul, t.route)
	s.view.tx.enc.shared = &set.counter
	s.view.tx.box = t.box
	if s.view.tx.enc.mode == txSeq {
		s.order = &set.order
	}
	set.senders = append(set.senders, s)
	return s, nil
}

// dupSocket duplicates t's socket descriptor (close-on-exec); the copy is
// nonblocking like the original, since they share the open file.
func dupSocket(t *Tunnel) (int, error) {
	var fd int
	var derr error
	err := t.tx.rc.Control(func(orig uintptr) {
		fd, derr = unix.FcntlInt(orig, unix.F_DUPFD_CLOEXEC, 0)
	})
	if err != nil {
		return -1, err
	}
	return fd, derr
}

// WriteFrames is Tunnel.WriteFrames through this Sender's own vector and
// descriptor: it encapsulates bufs[i][offset:offset+sizes[i]] in place and
// sends them all in order, blocking while the socket is full; net.ErrClosed
// after the tunnel is closed. Only one goroutine may call it at a time.
func (s *Sender) WriteFrames(bufs [][]byte, sizes []int, offset int) error {
	if s.order != nil {
		s.order.Lock()
		defer s.order.Unlock()
	}
	err := s.view.WriteFrames(bufs, sizes, offset)
	if err != nil && s.owner.closed.Load() {
		return net.ErrClosed
	}
	return err
}

// Headroom is the bytes WriteFrames needs in front of each frame.
func (s *Sender) Headroom() int { return s.view.hl }

// closeSenders closes every Sender's descriptor (Tunnel.Close): blocked and
// later WriteFrames calls return net.ErrClosed and the socket is released.
func (t *Tunnel) closeSenders() {
	set := t.multi
	set.mu.Lock()
	defer set.mu.Unlock()
	set.closed = true
	for _, s := range set.senders {
		if s.view.closed.CompareAndSwap(false, true) {
			s.view.f.Close()
		}
	}
	set.senders = nil
}

// nextCounter returns the QEMU counter value for the next packet: the
// encoder's own, or the one its Senders share.
func (e *Encoder) nextCounter() uint32 {
	if e.shared != nil {
		return e.shared.Add(1)
	}
	e.counter++
	return e.counter
}

// nextNs returns the RFC 4719 sequence number for the next packet: the
// encoder's own, or the one its Senders share.
func (e *Encoder) nextNs() uint32 {
	if e.shared != nil {
		return e.shared.Add(1) - 1
	}
	n := e.ns
	e.ns++
	return n
}
