package vhostuser

// span is where some of a TX frame's bytes lie in guest memory (bounds already checked).
type span struct {
	addr uint64
	len  uint64
}

// txScratch is a TX ring's per-frame state: the frame's header and where its bytes are,
// and how far a super-frame that did not fit one batch has been cut.
type txScratch struct {
	hdr     [netHdrLen]byte
	spans   []span
	head    [tsoHeadLen]byte // a super-frame's first bytes: its Ethernet/IP/TCP headers
	tsoNext int              // segments of the chain at lastAvail already returned; 0 if none
}

// popTX moves up to len(bufs) frames from the guest's TX ring into bufs[i][offset:], skipping
// the virtio-net header, and returns every popped chain to the used ring with one publish
// and at most one notification. A checksum the guest left to the device is completed and a
// TSO super-frame becomes one frame per segment; a super-frame that does not fit what is
// left of bufs is cut up to there and finished on the next call, its chain kept until then.
// Frames shorter than the header, longer than their buffer or with a bad offload request
// are dropped and counted; with discard (a disabled ring) every frame is. It stops once it
// has read maxWalk descriptors, so a guest that keeps refilling or posts long chains cannot
// hold the ring lock for long. On a violation it publishes what it completed and returns
// the frames copied so far with the error.
func (v *vring) popTX(bufs [][]byte, sizes []int, offset int, discard bool) (int, error) {
	n, popped, dropped := 0, 0, 0
	var bytes uint64
	var err error
	v.walker.walked = 0
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
		k, done, ok := 0, true, false
		if !discard && offset <= len(bufs[n]) && total > 0 {
			k, done, ok = v.emitTX(bufs[n:], sizes[n:], offset, total)
		} else {
			v.tx.tsoNext = 0
		}
		for _, s := range sizes[n : n+k] {
			bytes += uint64(s)
		}
		n += k
		if !done {
			break
		}
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

// copyFrame copies the frame bytes [off, off+len(dst)) out of the gathered spans.
func (v *vring) copyFrame(dst []byte, off int) {
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
// (its checksum completed when the guest asked) or, for a TSO super-frame, its segments
// from v.tx.tsoNext on. done is false when bufs filled before the last segment; ok is false
// when the frame was dropped.
func (v *vring) emitTX(bufs [][]byte, sizes []int, offset, total int) (k int, done, ok bool) {
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
	if err != nil {
		return 0, true, false
	}
	return v.cutTSO(&p, bufs, sizes, offset)
}

// cutTSO writes the super-frame's segments from v.tx.tsoNext on into bufs, one each, and
// remembers where it stopped when bufs run out.
func (v *vring) cutTSO(p *tsoPlan, bufs [][]byte, sizes []int, offset int) (k int, done, ok bool) {
	i := v.tx.tsoNext
	for ; i < p.segs && k < len(bufs); i, k = i+1, k+1 {
		m := p.segLen(i)
		if len(bufs[k]) < offset+p.hdrLen+m {
			break
		}
		dst := bufs[k][offset:]
		copy(dst, v.tx.head[:p.hdrLen])
		v.copyFrame(dst[p.hdrLen:p.hdrLen+m], p.hdrLen+i*p.mss)
		p.segment(dst[:p.hdrLen+m], i)
		sizes[k] = p.hdrLen + m
	}
	if i < p.segs && k < len(bufs) {
		// A buffer smaller than the first one: drop the rest of the frame.
		v.tx.tsoNext = 0
		return k, true, false
	}
	if i < p.segs {
		v.tx.tsoNext = i
		return k, false, true
	}
	v.tx.tsoNext = 0
	v.stats.tso.Add(1)
	return k, true, true
}
