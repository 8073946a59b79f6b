package pump

import (
	"errors"
	"sync"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/l2tp"
)

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
	ns, err := SenderOf(n)
	if !errors.Is(err, ErrNoSenders) {
		return ns, err
	}
	return &locked{mu: mu, n: n}, nil
}

// SenderOf asks n for a sender of its own; ErrNoSenders if it has none.
func SenderOf(n Network) (NetSender, error) {
	switch s := n.(type) {
	case SenderSource:
		return s.NewSender()
	case *l2tp.Tunnel:
		return s.NewSender()
	}
	return nil, ErrNoSenders
}

// ErrNoSenders is a SenderSource's answer when what it wraps has none.
var ErrNoSenders = errors.New("network has no senders of its own")

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
