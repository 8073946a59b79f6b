package backend

import (
	"errors"
	"sync"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/l2tp"
)

// Multiqueue, decided and measured (see the issue note and
// BenchmarkPumpQueues): all queue pairs of a NIC share the one L2TPv3
// socket of its session.
//
//   - Receive: a session has a single peer 4-tuple, so SO_REUSEPORT (which
//     hashes that 4-tuple) would hand every datagram to the same one of
//     several sockets; nothing is gained by more sockets. One goroutine
//     reads the socket and steers frames to the RX queues by flow hash.
//   - Send: each queue pair has its own goroutine and a Sender of its own
//     (own sendmmsg vector, own duplicate descriptor: Go serialises writers
//     of one descriptor, the kernel's UDP send path does not), so queue
//     pairs send at the same time. Sequence numbers stay one session's:
//     QEMU's counter is one atomic counter; RFC 4719 numbers (seq=send|both)
//     are also sent in order, the senders taking turns, because a Linux
//     peer drops out-of-order packets.
//
// Measured through the test front end (BenchmarkVhostUser: a whole port,
// its in-process guest driving every pair from a goroutine of its own,
// 0 allocs/op; go test -run XXX -bench BenchmarkVhostUser -benchtime
// 300000x -count 5 ./backend, medians, on the project's 2-vCPU machine):
//
//	Mpps          1 pair  2 pairs
//	encap   64 B    4.90     2.61
//	encap 1500 B    2.43     1.96
//	decap   64 B    2.54     2.05
//	decap 1500 B    1.90     1.50
//
// A second pair costs here rather than helps: the guest's drivers and the
// sidecar's goroutines share the same two cores. Multiqueue is for guests
// with vCPUs of their own and hosts with cores for the per-pair senders;
// what it must not do, and does not, is serialise the pairs in the process
// (a stalled pair does not hold another up: TestPumpQueuesSendInParallel).
// A guest RX ring that is full holds the shared reader, so the other
// pairs' frames wait in the socket too: lossless, at the cost of one
// pair's stall slowing the others.

// NetSender is one queue pair's way to the network: it encapsulates
// bufs[i][offset:offset+sizes[i]] in place and sends them all, blocking
// while the socket is full (the Network's WriteFrames contract).
type NetSender interface {
	WriteFrames(bufs [][]byte, sizes []int, offset int) error
}

// SenderSource is a Network that gives each queue pair a NetSender of its
// own, so that several pairs send at once.
type SenderSource interface {
	NewSender() (NetSender, error)
}

// newNetSender returns a sender of its own for one queue pair of n: from a
// SenderSource, from an l2tp.Tunnel, or else n itself behind mu, the lock
// all of n's queue pairs share then (correct, just not parallel).
func newNetSender(n Network, mu *sync.Mutex) (NetSender, error) {
	ns, err := senderOf(n)
	if !errors.Is(err, errNoSenders) {
		return ns, err
	}
	return &locked{mu: mu, n: n}, nil
}

// senderOf asks n for a sender of its own; errNoSenders if it has none.
func senderOf(n Network) (NetSender, error) {
	switch s := n.(type) {
	case SenderSource:
		return s.NewSender()
	case *l2tp.Tunnel:
		return s.NewSender()
	}
	return nil, errNoSenders
}

// errNoSenders is a SenderSource's answer when what it wraps has none.
var errNoSenders = errors.New("network has no senders of its own")

// locked serialises the queue pairs of a network without senders.
type locked struct {
	mu *sync.Mutex
	n  Network
}

// WriteFrames sends under the shared lock.
func (l *locked) WriteFrames(bufs [][]byte, sizes []int, offset int) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n.WriteFrames(bufs, sizes, offset)
}

// NewSender gives a queue pair its own sender of the captured network,
// with the capture in front, so a capture sees every queue's frames.
func (c *captureNetwork) NewSender() (NetSender, error) {
	s, err := senderOf(c.Network)
	if err != nil {
		return nil, err
	}
	return &captureSender{c: c, s: s}, nil
}

// captureSender is one queue pair's sender behind a port's capture.
type captureSender struct {
	c *captureNetwork
	s NetSender
}

// WriteFrames captures the batch, if a capture runs, then sends it.
func (cs *captureSender) WriteFrames(bufs [][]byte, sizes []int, offset int) error {
	if a := cs.c.active.Load(); a != nil {
		cs.c.capture(a.c, bufs, sizes, offset)
	}
	return cs.s.WriteFrames(bufs, sizes, offset)
}
