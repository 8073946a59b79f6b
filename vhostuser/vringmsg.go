package vhostuser

// vring returns the vring a message names, refusing an index beyond the device's queues.
func (s *session) vring(r request, index uint32) (*vring, error) {
	if index >= uint32(len(s.vrings)) {
		return nil, protoErr(r, "vring %d, the device has %d", index, len(s.vrings))
	}
	return s.vrings[index], nil
}

// setVringNum sets a stopped ring's size, a power of two up to 32768.
func (s *session) setVringNum(m *message) ([]byte, error) {
	st := m.vringState()
	v, err := s.vring(reqSetVringNum, st.index)
	if err != nil {
		return nil, err
	}
	if st.num == 0 || st.num > maxQueueSize || st.num&(st.num-1) != 0 {
		return nil, protoErr(reqSetVringNum, "size %d is not a power of two up to %d", st.num, maxQueueSize)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.started {
		return nil, protoErr(reqSetVringNum, "vring %d is started", st.index)
	}
	v.num = st.num
	return nil, nil
}

// setVringAddr records the ring areas (front-end virtual addresses). A stopped ring takes
// used->idx from guest memory when it starts; a live one (dirty-log toggling) is re-mapped.
func (s *session) setVringAddr(m *message) ([]byte, error) {
	a := m.vringAddr()
	v, err := s.vring(reqSetVringAddr, a.index)
	if err != nil {
		return nil, err
	}
	if a.flags&^1 != 0 {
		return nil, protoErr(reqSetVringAddr, "unknown flags %#x", a.flags)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.addr, v.addrSet = a, true
	if v.started {
		v.remap()
	} else {
		v.reread = true
	}
	return nil, nil
}

// setVringBase sets the next avail index a stopped ring will process.
func (s *session) setVringBase(m *message) ([]byte, error) {
	st := m.vringState()
	v, err := s.vring(reqSetVringBase, st.index)
	if err != nil {
		return nil, err
	}
	if st.num > 0xffff {
		return nil, protoErr(reqSetVringBase, "base %d does not fit a split ring", st.num)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.started {
		return nil, protoErr(reqSetVringBase, "vring %d is started", st.index)
	}
	v.lastAvail = uint16(st.num)
	return nil, nil
}

// getVringBase stops the ring (and its queue pair, after the workers have left it) and
// answers the next avail index, which the front end hands back at the next start.
func (s *session) getVringBase(m *message) ([]byte, error) {
	st := m.vringState()
	v, err := s.vring(reqGetVringBase, st.index)
	if err != nil {
		return nil, err
	}
	s.stopPair(int(st.index) / 2)
	v.mu.Lock()
	v.stop()
	base := v.lastAvail
	v.mu.Unlock()
	return putVringState(s.scratch[:], vringState{index: st.index, num: uint32(base)}), nil
}

// vringFile decodes the u64 of SET_VRING_KICK/CALL/ERR and wraps the fd it came with (if
// any) for the netpoller; nil means polling mode / no notifications.
func (s *session) vringFile(r request, m *message) (*vring, *eventFile, error) {
	u := m.u64()
	if u&^uint64(vringIdxMask|vringNoFD) != 0 {
		return nil, nil, protoErr(r, "unknown bits in %#x", u)
	}
	v, err := s.vring(r, uint32(u&vringIdxMask))
	if err != nil {
		return nil, nil, err
	}
	if u&vringNoFD != 0 {
		return v, nil, nil
	}
	e, err := newEventFile(m.takeFD(0), r.String())
	if err != nil {
		return nil, nil, protoErr(r, "fd unusable: %v", err)
	}
	return v, e, nil
}

// setVringKick installs the kick fd and starts the ring. The spec says a kick starts a
// ring; like libvhost-user and DPDK, the arrival of the kick fd counts as that start: QEMU
// sends it last, once the ring is configured, and a guest whose RX ring was already full
// before a back-end reconnect would otherwise never kick again.
func (s *session) setVringKick(m *message) ([]byte, error) {
	v, e, err := s.vringFile(reqSetVringKick, m)
	if err != nil {
		return nil, err
	}
	if err := s.kickRing(v, e); err != nil {
		return nil, err
	}
	s.maybeStartPair(v.index / 2)
	return nil, nil
}

// kickRing installs kick fd e on v and starts v if it is stopped. Starting touches guest
// memory, so the lock is released by defer: a fault unwinds through it (fault.go).
func (s *session) kickRing(v *vring, e *eventFile) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	old := v.kick
	v.kick = e
	old.close()
	if v.started {
		return nil
	}
	if v.num == 0 || !v.addrSet || s.mem == nil {
		return protoErr(reqSetVringKick, "vring %d started before its size, addresses and memory table", v.index)
	}
	v.start(s.acked)
	if v.broken == nil {
		v.log.Debug("vhostuser: vring started", "vring", v.index, "size", v.num, "base", v.lastAvail)
	}
	return nil
}

// setVringCall installs (or, without an fd, removes) the fd used to notify the guest, and
// signals it once on a started ring (see signalStart).
func (s *session) setVringCall(m *message) ([]byte, error) {
	v, e, err := s.vringFile(reqSetVringCall, m)
	if err != nil {
		return nil, err
	}
	v.mu.Lock()
	old := v.setCall(e)
	v.mu.Unlock()
	old.close()
	return nil, nil
}

// setVringErr installs the fd signalled when the guest breaks the ring.
func (s *session) setVringErr(m *message) ([]byte, error) {
	v, e, err := s.vringFile(reqSetVringErr, m)
	if err != nil {
		return nil, err
	}
	v.mu.Lock()
	old := v.errf
	v.errf = e
	v.mu.Unlock()
	old.close()
	return nil, nil
}

// setVringEnable enables or disables a ring and wakes its worker to notice: a disabled TX
// ring is drained and discarded, a disabled RX ring is not filled.
func (s *session) setVringEnable(m *message) ([]byte, error) {
	st := m.vringState()
	v, err := s.vring(reqSetVringEnable, st.index)
	if err != nil {
		return nil, err
	}
	if st.num > 1 {
		return nil, protoErr(reqSetVringEnable, "state %d, want 0 or 1", st.num)
	}
	s.log.Debug("vhostuser: vring enable", "vring", st.index, "enable", st.num)
	v.mu.Lock()
	v.setEnabled(st.num == 1)
	if v.kick != nil {
		v.kick.interrupt()
	}
	v.mu.Unlock()
	return nil, nil
}
