package l2tp

import (
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// Sender is one more send queue of a Tunnel, for a VM with several
// transmit queues: each queue's goroutine owns a Sender and calls its
// WriteFrames while the others call theirs. A Sender has its own sendmmsg
// vector and its own duplicate of the tunnel's socket descriptor (Go
// serialises writers of one descriptor; the kernel's UDP and raw send paths
// do not need it), and shares the socket, peer, counters and sequence
// numbering with the tunnel's own queue and its other Senders.
//
// Sequencing across queues: QEMU's counter (counter=on) is one atomic
// counter, so every packet carries a distinct number; RFC 4719 sequence
// numbers (seq=send|both) must also leave in order, because a Linux peer
// drops out-of-order packets, so under seq=send|both the queues take turns
// (one lock, held while numbering and sending a batch).
type Sender struct{ *txQueue }

// senderSet is what a tunnel's send queues share.
type senderSet struct {
	mu      sync.Mutex // guards senders and closed (control path only)
	senders []*Sender
	closed  bool
	counter atomic.Uint32 // the numbering every queue's encoder uses
	order   sync.Mutex    // taken by every queue under seq=send|both
}

// newQueue makes a send queue of t on descriptor rc (f): its own vector
// and encoder, numbering and ordering shared with t's other queues.
func (t *Tunnel) newQueue(rc syscall.RawConn, f *os.File, peer sockaddr) *txQueue {
	q := newTxQueue(t.cfg, t.batch, rc, f, peer, t.stats, t.ul, t.route)
	q.closed, q.peerName, q.box = &t.closed, t.peer, t.box
	q.enc.shared = &t.multi.counter
	if q.enc.mode == txSeq {
		q.order = &t.multi.order
	}
	return q
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
	s := &Sender{t.newQueue(rc, f, t.tx.peer)}
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

// Headroom is the bytes WriteFrames needs in front of each frame.
func (q *txQueue) Headroom() int { return q.hl }

// closeSenders closes every Sender's descriptor (Tunnel.Close): blocked and
// later WriteFrames calls return net.ErrClosed and the socket is released.
func (t *Tunnel) closeSenders() {
	set := t.multi
	set.mu.Lock()
	defer set.mu.Unlock()
	set.closed = true
	for _, s := range set.senders {
		s.f.Close() // t.closed is set: WriteFrames returns net.ErrClosed
	}
	set.senders = nil
}

// nextCounter returns the QEMU counter value for the next packet: the
// encoder's own, or the one its tunnel's queues share.
func (e *Encoder) nextCounter() uint32 {
	if e.shared != nil {
		return e.shared.Add(1)
	}
	e.counter++
	return e.counter
}

// nextNs returns the RFC 4719 sequence number for the next packet: the
// encoder's own, or the one its tunnel's queues share.
func (e *Encoder) nextNs() uint32 {
	if e.shared != nil {
		return e.shared.Add(1) - 1
	}
	n := e.ns
	e.ns++
	return n
}
