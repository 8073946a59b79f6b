package l2tp

import (
	"fmt"
	"net/netip"
	"os"
	"sync/atomic"
	"time"
)

const (
	// DefaultBatchSize is TunnelOptions.BatchSize when left 0.
	DefaultBatchSize = 64
	// MaxBatchSize bounds TunnelOptions.BatchSize (and the receive ring's
	// memory: one 64 KiB buffer per slot).
	MaxBatchSize = 1024
	// recvBufSize is a receive slot's size: the largest IP datagram plus
	// room, so nothing a legal peer sends is truncated.
	recvBufSize = 65536 + 128
)

// TunnelOptions tune a Tunnel; the zero value gives the defaults.
type TunnelOptions struct {
	// BatchSize is how many datagrams one recvmmsg/sendmmsg moves at most:
	// default 64, at most 1024.
	BatchSize int

	// OnPeerMove, if set, is told where the peer moved (peer-learning=on, or
	// a host name in dst that now resolves elsewhere); it is called from the
	// receiving or the resolving goroutine, at most once per 10 s for learned
	// moves (PeerMoves counts them all), and must not block.
	OnPeerMove func(to netip.AddrPort)

	// recvBuf overrides recvBufSize (tests make it small to see truncation).
	recvBuf int
}

// Tunnel is one static L2TPv3 Ethernet pseudowire (a session) on a socket
// of its own or one it shares with other sessions (shared_linux.go): the
// VM-facing code reads decapsulated frames from it and writes frames to be
// encapsulated. One goroutine may call ReadFrames while another calls
// WriteFrames; the two directions share no lock and no mutable state.
type Tunnel struct {
	cfg    Config
	batch  int
	hl     int
	local  string
	peer   string
	stats  *Stats
	ul     Underlay
	route  int      // the route's MTU when opened, 0 if unknown
	f      *os.File // this session's descriptor of the socket
	closed atomic.Bool
	sock   *sharedSock                  // the socket, perhaps shared with other sessions
	q      atomic.Pointer[sessionQueue] // set once the socket is demultiplexed
	dec    *Decoder                     // the demultiplexer's decoder for this session
	pin    sockaddr                     // the peer the demultiplexer pins to
	rx     *rxRing                      // owned by the ReadFrames goroutine (reading alone)
	win    *reorderWindow               // reorder=: owned by the ReadFrames goroutine
	tx     *txQueue                     // queue 0, owned by the WriteFrames goroutine
	multi  *senderSet                   // what its send queues share; Senders closed with it
	box    *peerBox                     // the current peer (learned, re-resolved)
	onMove func(to netip.AddrPort)
	done   chan struct{} // closed by Close: stops the re-resolver
}

// Open validates cfg, resolves Src and Dst with the family it selects, and
// opens the socket bound to Src (and SrcPort with UDP). The socket is not
// connected: datagrams from other sources are seen, and counted as source
// drops when cfg.PinPeer is on. The underlay MTU is cfg.UnderlayMTU, else
// the MTU of the route toward the peer, asked now (see Underlay).
func Open(cfg Config, opt TunnelOptions) (*Tunnel, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	batch := opt.BatchSize
	if batch == 0 {
		batch = DefaultBatchSize
	}
	if batch < 1 || batch > MaxBatchSize {
		return nil, fmt.Errorf("l2tpv3: batch size %d: must be 1..%d", opt.BatchSize, MaxBatchSize)
	}
	bufSize := recvBufSize
	if opt.recvBuf > 0 {
		bufSize = opt.recvBuf
	}
	ep, err := resolveEndpoints(cfg)
	if err != nil {
		return nil, err
	}
	sock, err := acquireSock(cfg, &ep, batch, bufSize)
	if err != nil {
		return nil, err
	}
	f, rc, err := sock.dup()
	if err != nil {
		sock.abandon()
		return nil, err
	}
	udp := cfg.Encap == EncapUDP
	t := &Tunnel{
		cfg:    cfg,
		batch:  batch,
		hl:     cfg.HeaderLen(),
		local:  addrString(sock.local, udp),
		peer:   addrString(ep.peer.ap, udp),
		stats:  new(Stats),
		f:      f,
		sock:   sock,
		pin:    ep.peer,
		multi:  new(senderSet),
		box:    &peerBox{addr: ep.peer},
		onMove: opt.OnPeerMove,
		done:   make(chan struct{}),
	}
	t.dec = NewDecoder(cfg, t.stats)
	t.ul, t.route = underlayFor(cfg, ep.peer)
	t.tx = t.newQueue(rc, f, ep.peer)
	err = sock.join(t, func() {
		t.rx = newRxRing(cfg, batch, bufSize, rc, ep.peer, t.stats)
		t.rx.box, t.rx.onMove = t.box, t.onMove
	})
	if err != nil {
		f.Close()
		sock.abandon()
		return nil, err
	}
	if cfg.Reorder > 0 {
		t.openWindow()
	}
	if _, err := netip.ParseAddr(cfg.Dst); err != nil {
		t.box.resolve = make(chan struct{}, 1)
		go t.reresolve(t.done)
	}
	return t, nil
}

// MaxFrameLen is the largest frame WriteFrames sends; longer ones are
// dropped and counted as oversize. It is the largest datagram payload of
// the socket minus Headroom (e.g. 65507-12 for UDP/IPv4 with the sublayer).
func (t *Tunnel) MaxFrameLen() int { return t.tx.maxPkt - t.hl }

// Underlay is the underlay MTU the tunnel measures its datagrams against
// and where it came from (underlay-mtu=, the route, or the default).
func (t *Tunnel) Underlay() Underlay { return t.ul }

// InnerMTU is the largest MTU whose frames fit the underlay MTU whole once
// encapsulated: what to offer the VM (VIRTIO_NET_F_MTU, host_mtu).
func (t *Tunnel) InnerMTU() int { return t.cfg.InnerMTU(t.ul.MTU) }

// Headroom is the number of bytes WriteFrames needs in front of each frame:
// Config().HeaderLen().
func (t *Tunnel) Headroom() int { return t.hl }

// BatchSize is the most datagrams one ReadFrames returns or one sendmmsg
// sends; WriteFrames accepts more and sends them in several calls.
func (t *Tunnel) BatchSize() int { return t.batch }

// Stats are the tunnel's counters, readable from any goroutine.
func (t *Tunnel) Stats() *Stats { return t.stats }

// Config is the configuration the tunnel was opened with.
func (t *Tunnel) Config() Config { return t.cfg }

// LocalAddr is the bound address ("192.0.2.1:1701" with UDP, "192.0.2.1"
// over IP).
func (t *Tunnel) LocalAddr() string { return t.local }

// PeerAddr is the resolved peer address packets are sent to, in the same
// form as LocalAddr: where it moved to, with peer learning or a host name.
func (t *Tunnel) PeerAddr() string {
	return addrString(t.box.load().ap, t.cfg.Encap == EncapUDP)
}

// Close closes the socket; blocked ReadFrames and WriteFrames calls return
// net.ErrClosed, as do later ones. Calling it again does nothing.
func (t *Tunnel) Close() error {
	if !t.closed.CompareAndSwap(false, true) {
		return nil
	}
	t.closeSenders()
	close(t.done)
	err := t.f.Close()
	t.sock.leave(t)
	return err
}

// openWindow preallocates the reorder window: slots for frames of the inner
// MTU with a VLAN tag (a longer one out of order is dropped, sequence).
func (t *Tunnel) openWindow() {
	width := t.cfg.ReorderFrames
	if width == 0 {
		width = DefaultReorderFrames
	}
	slotLen := (t.cfg.InnerMTU(t.ul.MTU) + ethHeaderLen + vlanTagLen + 63) &^ 63
	t.win = newReorderWindow(t.readWindowed, t.stats, t.cfg.Reorder, width, t.batch, slotLen)
	if t.rx != nil {
		t.rx.seqs = t.win.ns
	}
}

// readWindowed is the reorder window's source: readFrames, its socket
// wait bounded by a read deadline (a queue wait by the window's timer).
func (t *Tunnel) readWindowed(in [][]byte, _ []uint32, wait time.Duration) (int, error) {
	w := t.win
	switch {
	case wait > 0:
		_ = t.f.SetReadDeadline(time.Now().Add(wait))
		w.deadline = true
	case w.deadline:
		_ = t.f.SetReadDeadline(time.Time{})
		w.deadline = false
	}
	return t.readFrames(in)
}
