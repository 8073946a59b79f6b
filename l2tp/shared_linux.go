package l2tp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Shared tunnels. Tunnels of one process whose configurations have the
// same local address, encapsulation, family and (UDP) local port share one
// socket, as the sessions of one kernel or router tunnel do: each Tunnel
// is then one session of it, with its own peer, counters and send side.
//
// While a socket has one session, that session's ReadFrames reads it
// directly (as an unshared tunnel does: nothing is read while the VM is
// full, nothing lost). From the moment a second session joins, one
// demultiplexing goroutine reads the socket and copies each frame into the
// queue of the session its ID names (sessionQueue); datagrams for no
// session are counted on the socket. A full queue is waited for while the
// socket has one session and dropped (vm_slow, on the session) while it
// has several.

// sockKey identifies a shareable socket.
type sockKey struct {
	encap Encap
	local netip.AddrPort // resolved, port 0 over IP
}

// sockOpts are the socket-level options sessions of one socket must agree on.
type sockOpts struct {
	ipv6     bool
	oversize Oversize
	learn    bool
	tos, ttl uint8
}

func sockOptsOf(c Config) sockOpts {
	return sockOpts{ipv6: c.IPv6, oversize: c.Oversize, learn: c.LearnPeer, tos: c.TOS, ttl: c.TTL}
}

// registry holds the process's shareable sockets.
var registry = struct {
	sync.Mutex
	m map[sockKey]*sharedSock
}{m: map[sockKey]*sharedSock{}}

// sharedSock is one socket and the sessions on it.
type sharedSock struct {
	key    sockKey
	opts   sockOpts
	cfg    Config // the first session's (socket name, filter family)
	f      *os.File
	rc     syscall.RawConn
	local  netip.AddrPort
	batch  int
	bufLen int
	stats  *Stats // the socket's own: unknown sessions, truncation, kernel drops

	// Guarded by registry's lock.
	members  map[uint32]*Tunnel
	demuxing bool // the demultiplexer runs (sticky until the socket closes)
	closed   bool

	sessions atomic.Pointer[sessionTable] // what the demultiplexer reads
	count    atomic.Int32                 // sessions now

	logMu   sync.Mutex
	logPrev StatsSnapshot
	logAt   time.Time
}

// acquireSock returns the socket c's session goes on: the process's open
// one with the same key, or a new one. It refuses a session ID already on
// the socket and options that must be the socket's own.
func acquireSock(c Config, ep *endpoints, batch, bufLen int) (*sharedSock, error) {
	registry.Lock()
	defer registry.Unlock()
	key, shareable := keyOf(c, ep)
	if shareable {
		if s := registry.m[key]; s != nil {
			if err := s.admits(c); err != nil {
				return nil, err
			}
			return s, nil
		}
	}
	fd, local, err := openSocket(c, ep)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "l2tpv3:"+socketName(c))
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("l2tpv3: socket %s: %w", socketName(c), err)
	}
	s := &sharedSock{key: key, opts: sockOptsOf(c), cfg: c, f: f, rc: rc, local: local, batch: batch, bufLen: bufLen,
		stats: new(Stats), members: map[uint32]*Tunnel{}}
	if shareable {
		registry.m[key] = s
	}
	return s, nil
}

// keyOf is c's socket key; false when the socket cannot be shared (UDP
// with an ephemeral local port).
func keyOf(c Config, ep *endpoints) (sockKey, bool) {
	k := sockKey{encap: c.Encap, local: ep.local.ap}
	return k, c.Encap == EncapIP || c.SrcPort != 0
}

// admits checks that c's session may join s (registry lock held).
func (s *sharedSock) admits(c Config) error {
	where := s.where()
	if _, dup := s.members[c.SessionID]; dup {
		return fmt.Errorf("l2tpv3: bind %s: session %d is already received on this socket by another port: %w",
			where, c.SessionID, unix.EADDRINUSE)
	}
	o := sockOptsOf(c)
	switch {
	case o.learn || s.opts.learn:
		return fmt.Errorf("l2tpv3: bind %s: peer-learning=on needs a socket of its own, and another port's session uses this one: %w",
			where, unix.EADDRINUSE)
	case o.oversize != s.opts.oversize:
		return fmt.Errorf("l2tpv3: bind %s: oversize=%s differs from oversize=%s of the sessions already on this socket (a socket option)",
			where, o.oversize, s.opts.oversize)
	case o.tos != s.opts.tos || o.ttl != s.opts.ttl:
		return fmt.Errorf("l2tpv3: bind %s: tos=%#x ttl=%d differ from tos=%#x ttl=%d of the sessions already on this socket (socket options)",
			where, o.tos, o.ttl, s.opts.tos, s.opts.ttl)
	}
	return nil
}

// where names the socket in errors as bind does.
func (s *sharedSock) where() string {
	w := "src=" + s.local.Addr().String()
	if s.key.encap == EncapUDP {
		w += fmt.Sprintf(" srcport=%d", s.local.Port())
	}
	return w
}

// dup returns a descriptor of the socket for one session's send side and
// (while it reads alone) its receive side.
func (s *sharedSock) dup() (*os.File, syscall.RawConn, error) {
	var fd int
	var derr error
	if err := s.rc.Control(func(orig uintptr) { fd, derr = unix.FcntlInt(orig, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, nil, err
	}
	if derr != nil {
		return nil, nil, fmt.Errorf("l2tpv3: dup socket %s: %w", s.where(), derr)
	}
	f := os.NewFile(uintptr(fd), "l2tpv3:"+socketName(s.cfg))
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("l2tpv3: socket %s: %w", s.where(), err)
	}
	return f, rc, nil
}

// join adds t's session. The first session reads the socket itself
// (alone makes its receive ring); the second starts the demultiplexer and
// moves the first to a queue.
func (s *sharedSock) join(t *Tunnel, alone func()) error {
	registry.Lock()
	defer registry.Unlock()
	if s.closed {
		return fmt.Errorf("l2tpv3: bind %s: %w", s.where(), net.ErrClosed)
	}
	if len(s.members) > 0 && s.key.encap == EncapIP {
		if err := s.setFilter(append(s.ids(), t.cfg.SessionID)); err != nil {
			return err
		}
	}
	s.members[t.cfg.SessionID] = t
	start := false
	switch {
	case len(s.members) == 1 && !s.demuxing:
		alone()
	case !s.demuxing:
		s.demuxing, start = true, true
		for _, m := range s.members {
			m.toQueue()
		}
	default:
		t.toQueue()
	}
	s.publish()
	if start {
		r := newRxRing(s.cfg, s.batch, s.bufLen, s.rc, sockaddr{}, s.stats)
		for _, m := range s.members {
			if m.rx != nil { // the kernel's drop count goes on from what the first session saw
				r.kernelSeen.Store(m.rx.kernelSeen.Load())
			}
		}
		go s.demux(r)
	}
	return nil
}

// abandon closes a socket no session joined (Open failed after acquireSock).
func (s *sharedSock) abandon() {
	registry.Lock()
	defer registry.Unlock()
	if len(s.members) > 0 || s.closed {
		return
	}
	s.closed = true
	if registry.m[s.key] == s {
		delete(registry.m, s.key)
	}
	s.f.Close()
}

// leave removes t's session; the last one closes the socket.
func (s *sharedSock) leave(t *Tunnel) {
	registry.Lock()
	defer registry.Unlock()
	if s.members[t.cfg.SessionID] != t {
		return
	}
	delete(s.members, t.cfg.SessionID)
	if q := t.q.Load(); q != nil {
		q.close(nil)
	}
	if len(s.members) == 0 {
		s.closed = true
		if registry.m[s.key] == s {
			delete(registry.m, s.key)
		}
		s.publish()
		s.f.Close()
		return
	}
	if s.key.encap == EncapIP {
		_ = s.setFilter(s.ids()) // narrowing: a failure leaves the old, wider filter
	}
	s.publish()
}

// ids lists the session IDs on the socket (registry lock held).
func (s *sharedSock) ids() []uint32 {
	ids := make([]uint32, 0, len(s.members))
	for id := range s.members {
		ids = append(ids, id)
	}
	return ids
}

// publish hands the demultiplexer the current sessions and wakes a
// producer waiting on a full queue, so that it sees the new count.
func (s *sharedSock) publish() {
	ids := s.ids()
	sortIDs(ids)
	tab := &sessionTable{ids: ids, tuns: make([]*Tunnel, len(ids))}
	for i, id := range ids {
		t := s.members[id]
		tab.tuns[i] = t
		if q := t.q.Load(); q != nil {
			q.signalSpace()
		}
	}
	s.sessions.Store(tab)
	s.count.Store(int32(len(s.members)))
}

// sessionTable is the sessions of a socket by ID, immutable once
// published: sorted IDs, searched in O(log n) without hashing.
type sessionTable struct {
	ids  []uint32
	tuns []*Tunnel
}

// find returns the session with ID id, nil if none.
func (tab *sessionTable) find(id uint32) *Tunnel {
	lo, hi := 0, len(tab.ids)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if tab.ids[m] < id {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < len(tab.ids) && tab.ids[lo] == id {
		return tab.tuns[lo]
	}
	return nil
}

// toQueue moves t's receive side to a session queue and wakes its reader
// out of the socket (registry lock held).
func (t *Tunnel) toQueue() {
	if t.q.Load() != nil {
		return
	}
	t.q.Store(newSessionQueue())
	_ = t.f.SetReadDeadline(time.Unix(1, 0))
}

// setFilter replaces the IP-encapsulation socket's filter by one passing
// the sessions ids.
func (s *sharedSock) setFilter(ids []uint32) error {
	var err error
	if cerr := s.rc.Control(func(fd uintptr) { err = attachFilter(int(fd), sessionsFilter(ids, s.cfg.IPv6), ids) }); cerr != nil {
		return cerr
	}
	return err
}

// sessionsFilter is sessionFilter for a set of sessions: two instructions
// per session (no jump is longer than one), then drop.
func sessionsFilter(ids []uint32, ipv6 bool) []bpf.Instruction {
	prog := sessionFilter(0, ipv6)
	prog = prog[:len(prog)-3] // the loads
	for _, id := range ids {
		prog = append(prog, bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: id, SkipTrue: 1}, bpf.RetConstant{Val: 1<<32 - 1})
	}
	return append(prog, bpf.RetConstant{Val: 0})
}

// demux reads the socket for all its sessions until it is closed or fails;
// a failure ends every session's ReadFrames with it.
func (s *sharedSock) demux(r *rxRing) {
	d := newDemuxer(s, r)
	for {
		if err := d.read(); err != nil {
			s.fail(err)
			return
		}
		d.dispatch()
	}
}

// fail hands a receive error to every session: their ReadFrames return it
// (net.ErrClosed: the socket closed with its last session, nothing to say).
func (s *sharedSock) fail(err error) {
	if errors.Is(err, net.ErrClosed) {
		return
	}
	registry.Lock()
	defer registry.Unlock()
	for _, t := range s.members {
		if q := t.q.Load(); q != nil {
			q.err.Store(&err)
			q.signalReady()
		}
	}
}

// demuxer is the demultiplexing goroutine's state.
type demuxer struct {
	s       *sharedSock
	r       *rxRing
	udp     bool
	strip4  bool
	touched []*sessionQueue // queues pushed to in this batch (cap bounded)
	lastID  uint32          // the session of the previous datagram in this batch
	last    *Tunnel
}

func newDemuxer(s *sharedSock, r *rxRing) *demuxer {
	return &demuxer{s: s, r: r, udp: s.key.encap == EncapUDP, strip4: s.key.encap == EncapIP && !s.cfg.IPv6,
		touched: make([]*sessionQueue, 0, 256)}
}

// read fills the ring with one recvmmsg, reading on through transient
// errors; net.ErrClosed once the socket is closed.
func (d *demuxer) read() error {
	r := d.r
	for {
		for i := range r.msgs {
			h := &r.msgs[i].Hdr
			h.Namelen = unix.SizeofSockaddrInet6
			h.SetControllen(ctlSpace)
			h.Flags = 0
		}
		r.want = len(r.msgs)
		if err := r.rc.Read(r.readFn); err != nil {
			if errors.Is(err, os.ErrClosed) || errors.Is(err, net.ErrClosed) {
				return net.ErrClosed
			}
			return fmt.Errorf("l2tpv3: recvmmsg %s: %w", d.s.where(), err)
		}
		switch r.errno {
		case 0:
			return nil
		case unix.ECONNREFUSED, unix.EHOSTUNREACH, unix.ENETUNREACH, unix.EHOSTDOWN,
			unix.ENETDOWN, unix.EPROTO, unix.ENOMEM, unix.ENOBUFS:
			continue
		}
		return fmt.Errorf("l2tpv3: recvmmsg %s: %w", d.s.where(), r.errno)
	}
}

// dispatch hands each received datagram (each segment of a coalesced one)
// to its session's queue, then wakes the sessions it pushed to.
func (d *demuxer) dispatch() {
	r := d.r
	tab := d.s.sessions.Load()
	d.lastID, d.last = 0, nil
	for i := range r.got {
		if !r.admitWhole(i) {
			continue
		}
		pkt := r.buf[i*r.slot : i*r.slot+int(r.msgs[i].Len)]
		for at := 0; at < len(pkt); at += r.seg {
			d.one(tab, i, pkt[at:min(at+r.seg, len(pkt))])
		}
	}
	for _, q := range d.touched {
		q.hot = false
		q.signalReady()
	}
	d.touched = d.touched[:0]
}

// one demultiplexes one datagram of message i.
func (d *demuxer) one(tab *sessionTable, i int, pkt []byte) {
	id, reason, ok := peekSession(pkt, d.udp, d.strip4)
	if !ok {
		d.s.stats.rxDrops[reason].Add(1)
		return
	}
	t := d.last
	if id != d.lastID || t == nil { // runs of one session are the rule (GRO)
		t = tab.find(id)
		d.lastID, d.last = id, t
	}
	if t == nil {
		d.s.stats.rxDrops[DropSession].Add(1)
		return
	}
	if t.cfg.PinPeer && !t.pin.matches(&d.r.names[i], d.r.msgs[i].Hdr.Namelen, d.udp) {
		t.stats.rxDrops[DropSource].Add(1)
		return
	}
	frame, reason, ok := t.dec.Decap(pkt)
	if !ok {
		t.stats.rxDrops[reason].Add(1)
		return
	}
	d.enqueue(t, frame)
}

// enqueue copies frame into t's queue. A full queue is waited for while t
// is the socket's only session, and drops the frame (vm_slow) otherwise.
func (d *demuxer) enqueue(t *Tunnel, frame []byte) {
	q := t.q.Load()
	for !q.push(frame, t.dec.ns) {
		if d.s.count.Load() > 1 {
			t.stats.rxDrops[DropVMSlow].Add(1)
			return
		}
		q.signalReady()
		select {
		case <-q.space:
		case <-q.done:
			return
		}
	}
	if !q.hot {
		if len(d.touched) == cap(d.touched) {
			q.signalReady()
			return
		}
		q.hot = true
		d.touched = append(d.touched, q)
	}
}

// admitWhole checks message i as a whole (kernel drop count, truncation,
// empty) and sets its segment size; false: dropped and counted on the
// ring's counters (the socket's, when demultiplexed: they belong to no
// session).
func (r *rxRing) admitWhole(i int) bool {
	m := &r.msgs[i]
	seg := r.control(i)
	if m.Hdr.Flags&unix.MSG_TRUNC != 0 {
		r.stats.rxDrops[DropTruncated].Add(1)
		return false
	}
	if m.Len == 0 {
		r.stats.rxDrops[DropMalformed].Add(1)
		return false
	}
	r.seg = int(m.Len)
	if seg > 0 && seg < r.seg {
		r.seg = seg
	}
	return true
}

// peekSession reads the session ID of a data packet as the socket returned
// it; false with the reason for a control or malformed one.
func peekSession(pkt []byte, udp, strip4 bool) (uint32, Drop, bool) {
	if strip4 {
		if len(pkt) < 20 || pkt[0]>>4 != 4 {
			return 0, DropMalformed, false
		}
		ihl := int(pkt[0]&0x0f) * 4
		if ihl < 20 || ihl > len(pkt) {
			return 0, DropMalformed, false
		}
		pkt = pkt[ihl:]
	}
	at := 0
	if udp {
		if len(pkt) < 4 {
			return 0, DropMalformed, false
		}
		if pkt[0]&0x80 != 0 {
			return 0, DropControl, false
		}
		at = 4
	}
	if len(pkt) < at+4 {
		return 0, DropMalformed, false
	}
	id := uint32(pkt[at])<<24 | uint32(pkt[at+1])<<16 | uint32(pkt[at+2])<<8 | uint32(pkt[at+3])
	if id == 0 && !udp {
		return 0, DropControl, false
	}
	return id, 0, true
}

// readQueued is ReadFrames for a session that receives through its queue.
func (t *Tunnel) readQueued(q *sessionQueue, frames [][]byte) (int, error) {
	if t.win != nil {
		return t.win.popQueued(q, frames)
	}
	n, err := q.pop(frames, nil, nil)
	if err != nil {
		return 0, err
	}
	bytes := 0
	for _, f := range frames[:n] {
		bytes += len(f)
	}
	t.stats.addRx(uint64(n), uint64(bytes))
	return n, nil
}

// SocketStatus describes the socket a tunnel's session is on.
type SocketStatus struct {
	Local    string        `json:"local"`
	Sessions []uint32      `json:"sessions"` // the session IDs on it, ascending
	Stats    StatsSnapshot `json:"stats"`    // what belongs to no session: unknown session, truncated, kernel
	// Queued is the frames waiting in this session's queue (its VM has
	// not taken them yet); at the queue's bound, more are dropped vm_slow.
	Queued int `json:"queued"`
}

// Socket reports the socket t's session is on and the sessions sharing it.
func (t *Tunnel) Socket() SocketStatus {
	registry.Lock()
	ids := t.sock.ids()
	registry.Unlock()
	sortIDs(ids)
	st := SocketStatus{Local: t.local, Sessions: ids, Stats: t.sock.stats.Snapshot()}
	if q := t.q.Load(); q != nil {
		st.Queued = q.queued()
	}
	return st
}

// Sessions is the number of sessions on t's socket (1 when unshared).
func (t *Tunnel) Sessions() int { return int(t.sock.count.Load()) }

// SocketDropsDue returns the socket's counters now and at the last call
// that returned ok, at most once per every across all the socket's
// sessions: the one that gets ok logs the socket's drops for them all.
func (t *Tunnel) SocketDropsDue(every time.Duration) (prev, cur StatsSnapshot, ok bool) {
	s := t.sock
	s.logMu.Lock()
	defer s.logMu.Unlock()
	now := time.Now()
	if now.Sub(s.logAt) < every*9/10 {
		return prev, cur, false
	}
	s.logAt = now
	prev, cur = s.logPrev, s.stats.Snapshot()
	s.logPrev = cur
	return prev, cur, true
}

// sortIDs sorts session IDs ascending (few: insertion sort).
func sortIDs(ids []uint32) {
	for i := 1; i < len(ids); i++ {
		for j := i; j > 0 && ids[j] < ids[j-1]; j-- {
			ids[j], ids[j-1] = ids[j-1], ids[j]
		}
	}
}
