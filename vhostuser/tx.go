package vhostuser

// span is where some of a TX frame's bytes lie in guest memory (bounds already checked).
type span struct {
	addr uint64
	len  uint64
}

// txScratch is a TX ring's per-frame state: the frame's header and where its bytes are,
// and a super-frame with more segments than a batch holds, being cut over several calls.
type txScratch struct {
	hdr   [netHdrLen]byte
	spans []span
	head  [tsoHeadLen]byte // a super-frame's first bytes: its Ethernet/IP/TCP headers

	// The held super-frame: copied out of guest memory (its headers as checked) so that its
	// chain goes back to the guest with the first segments. A chain kept until its last
	// segment was out would be read again from the start after a stop or a back-end
	// restart, and its first segments sent twice.
	held     []byte // maxTSOFrame bytes once a frame was held; held[:heldLen] is the frame
	heldLen  int
	heldPlan tsoPlan
	heldNext int  // the next segment to cut
	holding  bool // a held frame has segments left; it survives a stop of the ring
}

// popTX moves up to len(bufs) frames from the guest's TX ring into bufs[i][offset:], skipping
// the virtio-net header, and returns every popped chain to the used ring with one publish
// and at most one notification. A checksum the guest left to the device is completed and a
// TSO super-frame becomes one frame per segment. A super-frame that does not fit what is
// left of bufs starts the next call's batch; one that no batch holds is held (copied) and
// cut over this call and the next ones, which begin with it. Every chain is returned in the
// call that reads it, so nothing is read twice. Frames shorter than the header, longer than
// their buffer or with a bad offload request are dropped and counted; with discard (a
// disabled ring) every frame is. It stops once it has read maxWalk descriptors, so a guest
// that keeps refilling or posts long chains cannot hold the ring lock for long. On a
// violation it publishes what it completed and returns the frames copied so far with the
// error.
func (v *vring) popTX(bufs [][]byte, sizes []int, offset int, discard bool) (int, error) {
	n, popped, dropped := 0, 0, 0
	var err error
	v.walker.walked = 0
	if v.tx.holding && len(bufs) > 0 {
		ok := false
		if discard || offset > len(bufs[0]) {
			v.tx.holding = false
		} else {
			n, ok = v.cutHeld(bufs, sizes, offset)
		}
		if !ok {
			dropped++
		}
	}
	for n < len(bufs) && v.walker.walked < maxWalk {
		if v.lastAvail == v.availIdx {
			if err = v.refreshAvail(); err != nil || v.lastAvail == v.availIdx {
				break
			}
		}
		var head uint16
		if head, err = v.head(v.lastAvail); err != nil {
			break
		}
		var total int
		if total, err = v.gatherTX(head); err != nil {
			break
		}
		k, fits, ok := 0, true, false
		if !discard && offset <= len(bufs[n]) && total > 0 {
			k, fits, ok = v.emitTX(bufs[n:], sizes[n:], offset, total, n == 0)
		}
		if !fits {
			break
		}
		n += k
		v.putUsed(head, 0)
		v.lastAvail++
		popped++
		if !ok {
			dropped++
		}
	}
	if popped > 0 {
		v.publishUsed()
		v.notify()
	}
	var bytes uint64
	for _, s := range sizes[:n] {
		bytes += uint64(s)
	}
	v.stats.frames.Add(uint64(n))
	v.stats.bytes.Add(bytes)
	if dropped > 0 {
		v.stats.dropped.Add(uint64(dropped))
	}
	return n, err
}

// gatherTX walks the chain at head, checks every descriptor is device-readable and inside
// guest memory, copies the virtio-net header into v.tx.hdr and records where the frame's
// bytes lie in v.tx.spans. It returns the frame's length, 0 when the chain is shorter than
// the header.
func (v *vring) gatherTX(head uint16) (int, error) {
	w := &v.walker
	w.reset(v.mem, v.desc, v.num, head, v.indirect)
	t := &v.tx
	t.spans = t.spans[:0]
	got, total := 0, uint64(0)
	var d desc
	for {
		more, err := w.step(&d)
		if err != nil {
			return 0, err
		}
		if !more {
			break
		}
		if d.flags&descFWrite != 0 {
			return 0, errTXWritable
		}
		a, l := d.addr, uint64(d.len)
		if !v.mem.checkGPA(a, l) {
			return 0, errBufferAddr
		}
		if got < v.hdrLen {
			k := min(uint64(v.hdrLen-got), l)
			v.mem.read(t.hdr[got:got+int(k)], a)
			got, a, l = got+int(k), a+k, l-k
		}
		if l > 0 {
			t.spans = append(t.spans, span{a, l})
			total += l
		}
	}
	if got < v.hdrLen || total > 1<<40 {
		return 0, nil
	}
	return int(total), nil
}

// copyFrame copies the frame bytes [off, off+len(dst)) out of the held frame, or else out
// of the gathered spans.
func (v *vring) copyFrame(dst []byte, off int) {
	if v.tx.holding {
		copy(dst, v.tx.held[off:v.tx.heldLen])
		return
	}
	o := uint64(off)
	for _, s := range v.tx.spans {
		if len(dst) == 0 {
			return
		}
		if o >= s.len {
			o -= s.len
			continue
		}
		k := min(s.len-o, uint64(len(dst)))
		v.mem.read(dst[:k], s.addr+o)
		dst, o = dst[k:], 0
	}
}

// emitTX turns the gathered frame of total bytes into frames in bufs[i][offset:]: itself
// (its checksum completed when the guest asked) or, for a TSO super-frame, its segments.
// fits is false, and nothing is written, for a super-frame with more segments than bufs
// holds unless first says bufs is a whole batch; then it is held. ok is false when the
// frame was dropped.
func (v *vring) emitTX(bufs [][]byte, sizes []int, offset, total int, first bool) (k int, fits, ok bool) {
	h := parseNetHdr(v.tx.hdr[:])
	dst := bufs[0][offset:]
	if h.gsoType == gsoNone {
		if total > len(dst) {
			return 0, true, false
		}
		v.copyFrame(dst[:total], 0)
		if h.flags&hdrFNeedsCsum != 0 {
			if completeCsum(dst[:total], h) != nil {
				return 0, true, false
			}
			v.stats.csum.Add(1)
		}
		sizes[0] = total
		return 1, true, true
	}
	head := v.tx.head[:min(total, tsoHeadLen)]
	v.copyFrame(head, 0)
	p, err := planTSO(h, head, total, len(dst))
	switch {
	case err != nil:
		return 0, true, false
	case p.segs > len(bufs) && !first:
		return 0, false, true
	case p.segs > len(bufs):
		v.hold(&p, total)
		k, ok = v.cutHeld(bufs, sizes, offset)
		return k, true, ok
	}
	k, next := v.cutTSO(&p, v.tx.head[:p.hdrLen], bufs, sizes, offset, 0)
	if next < p.segs {
		return k, true, false // a buffer smaller than the first: the rest is dropped
	}
	v.stats.tso.Add(1)
	return k, true, true
}

// hold copies the gathered super-frame of total bytes, its headers as planTSO checked them,
// out of guest memory, to be cut from there.
func (v *vring) hold(p *tsoPlan, total int) {
	t := &v.tx
	if t.held == nil {
		t.held = make([]byte, maxTSOFrame)
	}
	v.copyFrame(t.held[:total], 0)
	copy(t.held, t.head[:p.hdrLen])
	t.heldLen, t.heldPlan, t.heldNext, t.holding = total, *p, 0, true
}

// cutHeld cuts the held super-frame's next segments into bufs; ok is false when a buffer
// too small for its segment made it drop the rest.
func (v *vring) cutHeld(bufs [][]byte, sizes []int, offset int) (k int, ok bool) {
	t := &v.tx
	p := &t.heldPlan
	k, t.heldNext = v.cutTSO(p, t.held[:p.hdrLen], bufs, sizes, offset, t.heldNext)
	switch {
	case t.heldNext == p.segs:
		t.holding = false
		v.stats.tso.Add(1)
		return k, true
	case k < len(bufs):
		t.holding = false
		return k, false
	}
	return k, true
}

// cutTSO writes the super-frame's segments from segment from on into bufs, one each, each
// behind a copy of hdr (its checked headers), until bufs run out or one is too small for
// its segment; it returns how many it wrote and the next segment.
func (v *vring) cutTSO(p *tsoPlan, hdr []byte, bufs [][]byte, sizes []int, offset, from int) (k, next int) {
	i := from
	for ; i < p.segs && k < len(bufs); i, k = i+1, k+1 {
		m := p.segLen(i)
		if len(bufs[k]) < offset+p.hdrLen+m {
			break
		}
		dst := bufs[k][offset:]
		copy(dst, hdr)
		v.copyFrame(dst[p.hdrLen:p.hdrLen+m], p.hdrLen+i*p.mss)
		p.segment(dst[:p.hdrLen+m], i)
		sizes[k] = p.hdrLen + m
	}
	return k, i
}
