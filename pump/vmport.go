// Package pump forwards frames between a port's VM side and its network
// side with flush-on-peer-ready backpressure in both directions, steering
// over queue pairs. It knows only the two interfaces below: front ends and
// tunnels implement them, and the pump imports neither.
//
// It may import l2tp (drop reasons only) and impair; nothing above it.
package pump

// VMPort is the VM side of one queue pair: a -netdev stream connection or a
// vhost-user queue pair. One goroutine calls ReadFrames while another calls
// WriteFrames; Close may be called from any goroutine and unblocks both.
type VMPort interface {
	// ReadFrames blocks until the VM has sent at least one frame, then
	// copies up to len(bufs) frames into bufs[i][offset:] and sets sizes[i].
	// It returns an error (io.EOF or one wrapping net.ErrClosed) once the
	// VM side is gone.
	ReadFrames(bufs [][]byte, sizes []int, offset int) (int, error)
	// WriteFrames hands every frame to the VM, in order, blocking while the
	// VM cannot take more (flush-on-peer-ready). It returns nil only when
	// all frames were delivered.
	WriteFrames(frames [][]byte) error
	// BatchSize is the most frames one ReadFrames call returns.
	BatchSize() int
	// Close ends the VM side; idempotent.
	Close() error
}

// Network is the L2TPv3 side of a port (an *l2tp.Tunnel). One goroutine
// calls ReadFrames while another calls WriteFrames.
type Network interface {
	// ReadFrames blocks until datagrams arrive and returns the good frames
	// among them as slices valid until the next call (n may be 0).
	ReadFrames(frames [][]byte) (int, error)
	// WriteFrames encapsulates bufs[i][offset:offset+sizes[i]] in place and
	// sends them all, blocking while the socket is full.
	WriteFrames(bufs [][]byte, sizes []int, offset int) error
	// Headroom is the room WriteFrames needs in front of each frame.
	Headroom() int
	// BatchSize is the most frames one ReadFrames call returns.
	BatchSize() int
	// NewSender gives one more queue pair a way to the network of its own
	// (an *l2tp.Sender: its own descriptor and vector), which sends while
	// WriteFrames (queue pair 0) and the other senders do.
	NewSender() (NetSender, error)
}

// NetSender is one queue pair's way to the network: it encapsulates
// bufs[i][offset:offset+sizes[i]] in place and sends them all, blocking
// while the socket is full (the Network's WriteFrames contract). An alias,
// so that doubles need not import this package to implement Network.
type NetSender = interface {
	WriteFrames(bufs [][]byte, sizes []int, offset int) error
}
