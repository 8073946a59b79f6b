package vhostuser

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"sync/atomic"
)

// session is the protocol state of one front-end connection: negotiated features, the
// memory table, the vrings and the started queue pairs. Only the control goroutine (run)
// touches its fields; the vrings' own locks guard what workers share with it.
type session struct {
	cfg *Config
	h   Handler
	log *slog.Logger
	t   transport
	r   msgReader

	offered    uint64 // virtio features offered
	acked      uint64 // virtio features acked by SET_FEATURES
	protoAcked uint64 // protocol features acked by SET_PROTOCOL_FEATURES
	owner      bool
	mtu        atomic.Int64 // read by Server.Stats from other goroutines
	nRegions   atomic.Int64 // regions mapped, for Server.Stats
	nSealed    atomic.Int64 // of those, sealed against shrinking
	mem        *memTable
	// retired is the table swapMem replaced, unmapped (but for what retiredKeep, its
	// successor, shares) once the request's reply is out: unmapRetired.
	retired, retiredKeep *memTable
	dlog                 *dirtyLog // the last SET_LOG_BASE; the vrings use it while LOG_ALL is acked
	vrings               []*vring
	pairs                []*QueuePair
	stats                []vringStats

	// fatal is why a worker ended the connection (a dirty log too small, a guest-memory
	// fault); run returns it.
	fatal atomic.Pointer[error]

	regions []memRegion
	scratch [16]byte
	out     [hdrSize + 64]byte
}

// newSession prepares the state for one connection over t; the rings start stopped.
func newSession(cfg *Config, h Handler, log *slog.Logger, t transport) *session {
	n := 2 * cfg.Queues
	s := &session{
		cfg: cfg, h: h, log: log, t: t,
		offered: offeredFeatures(cfg),
		vrings:  make([]*vring, n),
		pairs:   make([]*QueuePair, cfg.Queues),
		stats:   make([]vringStats, n),
		regions: make([]memRegion, 0, maxRegions),
	}
	s.r.t = t
	for i := range s.vrings {
		s.vrings[i] = &vring{index: i, log: log, stats: &s.stats[i], onFault: s.end}
	}
	return s
}

// run serves messages until the connection ends or a message is refused, then stops every
// queue pair (calling QueuePairStopped) and releases the memory; it returns the reason.
// Guest-memory faults in its handlers panic instead of killing the process (fault.go).
func (s *session) run() error {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer s.teardown()
	for {
		m, err := s.r.read()
		if err == nil {
			s.log.Debug("vhostuser: request", "request", m.hdr.req.String(), "size", m.hdr.size, "fds", len(m.fds))
			err = s.dispatch(m)
		}
		if err != nil {
			if f := s.fatal.Load(); f != nil {
				return *f
			}
			return err
		}
	}
}

// end ends the connection from a worker, once: it closes the transport, which makes run
// return err.
func (s *session) end(err error) {
	if s.fatal.CompareAndSwap(nil, &err) {
		s.t.close()
	}
}

// teardown stops everything the connection started, closes the fds it holds and unmaps
// guest memory once no worker can touch it.
func (s *session) teardown() {
	s.resetRings(false)
}

// resetRings stops every pair and ring and closes their fds; with forget it also clears the
// ring configuration (RESET_OWNER), otherwise it keeps it for the stats-only afterlife.
func (s *session) resetRings(forget bool) {
	for i := range s.pairs {
		s.stopPair(i)
	}
	for _, v := range s.vrings {
		v.mu.Lock()
		v.stop()
		v.call.close()
		v.errf.close()
		v.call, v.errf, v.mem, v.dlog = nil, nil, nil, nil
		if forget {
			v.num, v.addrSet, v.reread, v.lastAvail, v.usedIdx = 0, false, false, 0, 0
			v.setEnabled(false)
			v.broken = nil
		}
		v.mu.Unlock()
	}
	s.unmapRetired()
	s.mem.unmap()
	s.mem = nil
	s.dlog.unmap()
	s.dlog = nil
	s.nRegions.Store(0)
	s.nSealed.Store(0)
}

// abort ends the connection from a worker, once, with a protocol error that run returns:
// the front end's dirty log does not cover guest address gpa.
func (s *session) abort(gpa uint64) {
	s.end(protoErr(reqSetLogBase, "dirty log too small for guest address %#x", gpa))
}

// lockAll takes every vring lock, in index order, so the control goroutine can change what
// all workers see in one step.
func (s *session) lockAll() {
	for _, v := range s.vrings {
		v.mu.Lock()
	}
}

// unlockAll releases what lockAll took.
func (s *session) unlockAll() {
	for _, v := range s.vrings {
		v.mu.Unlock()
	}
}

// maybeStartPair hands pair i to the Handler once both of its rings are started.
func (s *session) maybeStartPair(i int) {
	if s.pairs[i] != nil {
		return
	}
	rx, tx := s.vrings[2*i], s.vrings[2*i+1]
	rx.mu.Lock()
	tx.mu.Lock()
	ready := rx.started && tx.started
	var q *QueuePair
	if ready {
		q = newQueuePair(i, rx, tx, s.cfg.BatchSize)
		rx.qp, tx.qp = q, q
	}
	tx.mu.Unlock()
	rx.mu.Unlock()
	if ready {
		s.pairs[i] = q
		s.log.Info("vhostuser: queue pair started", "pair", i)
		s.h.QueuePairStarted(i, q)
	}
}

// stopPair closes pair i, waits until no ReadFrames or WriteFrames call is inside it, and
// only then tells the Handler, so the Handler never races a worker still using the rings.
func (s *session) stopPair(i int) {
	q := s.pairs[i]
	if q == nil {
		return
	}
	q.shut()
	<-q.drained
	for _, v := range [2]*vring{q.rx, q.tx} {
		v.mu.Lock()
		if v.qp == q {
			v.qp = nil
		}
		v.mu.Unlock()
	}
	s.pairs[i] = nil
	s.log.Info("vhostuser: queue pair stopped", "pair", i)
	s.h.QueuePairStopped(i)
}

// u64Reply encodes a u64 reply payload in the session's scratch buffer.
func (s *session) u64Reply(v uint64) []byte {
	return binary.NativeEndian.AppendUint64(s.scratch[:0], v)
}

// getFeatures answers the virtio features offered for this configuration.
func (s *session) getFeatures(*message) ([]byte, error) {
	return s.u64Reply(s.offered), nil
}

// setFeatures records the acked features. Any subset of the offer is accepted, including
// one with only PROTOCOL_FEATURES that QEMU sends around a reconnect.
func (s *session) setFeatures(m *message) ([]byte, error) {
	f := m.u64()
	if f&^s.offered != 0 {
		return nil, protoErr(reqSetFeatures, "acks %#x, not offered", f&^s.offered)
	}
	s.acked = f
	s.log.Debug("vhostuser: features acked", "features", fmt.Sprintf("%#x", f))
	s.lockAll()
	for _, v := range s.vrings {
		v.dlog = s.activeLog()
		if v.started {
			v.configure(f)
			v.remap()
		}
	}
	s.unlockAll()
	return nil, nil
}

// getProtocolFeatures answers the protocol features this back end speaks.
func (s *session) getProtocolFeatures(*message) ([]byte, error) {
	return s.u64Reply(offeredProtocolFeatures()), nil
}

// setProtocolFeatures records the acked protocol features (REPLY_ACK takes effect for the
// next message).
func (s *session) setProtocolFeatures(m *message) ([]byte, error) {
	f := m.u64()
	if f&^offeredProtocolFeatures() != 0 {
		return nil, protoErr(reqSetProtocolFeatures, "acks %#x, not offered", f&^offeredProtocolFeatures())
	}
	s.protoAcked = f
	s.log.Debug("vhostuser: protocol features acked", "features", fmt.Sprintf("%#x", f))
	return nil, nil
}

// setOwner marks the session owned; there is nothing to allocate.
func (s *session) setOwner(*message) ([]byte, error) {
	s.owner = true
	return nil, nil
}

// resetOwner treats the deprecated RESET_OWNER as a device reset, as DPDK does.
func (s *session) resetOwner(*message) ([]byte, error) {
	s.resetRings(true)
	s.acked, s.owner = 0, false
	return nil, nil
}

// getQueueNum answers how many queue pairs the device has.
func (s *session) getQueueNum(*message) ([]byte, error) {
	return s.u64Reply(uint64(s.cfg.Queues)), nil
}

// setMemTable maps the new regions and installs them as the whole table.
func (s *session) setMemTable(m *message) ([]byte, error) {
	t, err := mapRegions(m.memRegions(s.regions), m.fds)
	if err != nil {
		return nil, fmt.Errorf("vhostuser: SET_MEM_TABLE: %w", err)
	}
	s.swapMem(t)
	s.log.Info("vhostuser: memory table set", "regions", len(t.regions), "sealed_against_shrinking", t.sealedRegions())
	return nil, nil
}

// swapMem installs t in every vring under all vring locks (re-translating live rings), so
// workers see the old table or the new one, never a mixture. From then on nobody touches
// the old table: workers reach guest memory only through their vring's table, under its
// lock, and the control goroutine through s.mem. Its regions that t no longer holds are
// unmapped after the reply (unmapRetired), since munmap of memory workers were touching
// (page-table teardown, TLB shootdowns) took longer than the rest of the request.
func (s *session) swapMem(t *memTable) {
	s.unmapRetired()
	s.lockAll()
	old := s.mem
	s.mem = t
	for _, v := range s.vrings {
		v.mem = t
		v.remap()
	}
	s.unlockAll()
	s.retired, s.retiredKeep = old, t
	s.nRegions.Store(int64(len(t.regions)))
	s.nSealed.Store(int64(t.sealedRegions()))
}

// unmapRetired unmaps the regions of the table swapMem replaced that its successor does not
// share: dispatch calls it once the reply is sent, resetRings before it unmaps the current
// table (whose mappings decide what is shared).
func (s *session) unmapRetired() {
	s.retired.unmapExcept(s.retiredKeep)
	s.retired, s.retiredKeep = nil, nil
}

// netSetMTU records the MTU the front end configured for the guest.
func (s *session) netSetMTU(m *message) ([]byte, error) {
	mtu := m.u64()
	if mtu < MinMTU || mtu > MaxMTU {
		return nil, protoErr(reqNetSetMTU, "MTU %d out of %d..%d", mtu, MinMTU, MaxMTU)
	}
	s.mtu.Store(int64(mtu))
	if s.cfg.MTU != 0 && int(mtu) > s.cfg.MTU {
		// Accepted: refusing would make QEMU give up the back end and the NIC.
		s.log.Warn("vhostuser: front end set an MTU above the one offered (QEMU host_mtu)", "mtu", mtu, "offered", s.cfg.MTU)
		return nil, nil
	}
	s.log.Info("vhostuser: front end set MTU", "mtu", mtu)
	return nil, nil
}

// sendRARP announces the migrated guest (QEMU sends it on the destination when the guest
// cannot announce itself): the Handler, if it is an Announcer, gets a RARP frame for the
// MAC in the first 6 bytes of the body to send toward the network, as DPDK does.
func (s *session) sendRARP(m *message) ([]byte, error) {
	mac := net.HardwareAddr(bytes.Clone(m.body[:6]))
	a, ok := s.h.(Announcer)
	if !ok {
		s.log.Info("vhostuser: SEND_RARP: the handler cannot announce", "mac", mac.String())
		return nil, nil
	}
	s.log.Info("vhostuser: announcing the guest after migration", "mac", mac.String())
	a.Announce(mac, RARPFrame(mac))
	return nil, nil
}
