package vhostuser

// seg is one device-writable piece of a receive buffer, already checked against guest memory.
type seg struct {
	addr uint64
	len  uint32
}

// rxBuf is one receive buffer (descriptor chain) gathered for the current frame.
type rxBuf struct {
	head uint16
	cap  uint64 // bytes the chain can hold
	end  int    // index in segs one past its last segment
}

// gatherResult says whether a frame can be placed now.
type gatherResult uint8

const (
	gatherOK     gatherResult = iota // enough buffers gathered
	gatherShort                      // the ring has too few buffers now: wait for a kick
	gatherTooBig                     // the frame can never fit: drop it
)

// fillRX writes frames, in order, into the guest's RX buffers: header with num_buffers,
// then the frame, spread over several buffers with MRG_RXBUF. It stops at the first frame
// that lacks buffers, or with more=true once it has read maxWalk descriptors, and returns
// how many frames it consumed (delivered, or dropped because no ring could ever hold them),
// having published the used entries and notified at most once.
func (v *vring) fillRX(frames [][]byte) (n int, more bool, err error) {
	usedBufs, dropped := 0, 0
	var bytes uint64
	v.walker.walked = 0
	for n < len(frames) {
		if v.walker.walked >= maxWalk {
			more = true
			break
		}
		f := frames[n]
		var nb int
		var res gatherResult
		if nb, res, err = v.gather(uint64(v.hdrLen) + uint64(len(f))); err != nil || res == gatherShort {
			break
		}
		n++
		if res == gatherTooBig {
			dropped++
			continue
		}
		v.scatter(f, nb)
		usedBufs += nb
		bytes += uint64(len(f))
	}
	if usedBufs > 0 {
		v.publishUsed()
		v.notify()
	}
	if err == nil && v.broken != nil {
		err = v.broken // the dirty log could not record a write
	}
	v.stats.frames.Add(uint64(n - dropped))
	v.stats.bytes.Add(bytes)
	if dropped > 0 {
		v.stats.dropped.Add(uint64(dropped))
	}
	return n, more, err
}

// gather collects, without consuming them, the buffers that will hold need bytes: one chain
// without MRG_RXBUF, as many as necessary with it. Every descriptor is validated here, so
// scatter cannot fail. Buffers of more than maxChainDescs descriptors in all cannot hold a
// frame: it is dropped.
func (v *vring) gather(need uint64) (int, gatherResult, error) {
	idx := v.lastAvail
	have := uint64(0)
	nb, nseg := 0, 0
	start := v.walker.walked
	for have < need {
		if idx == v.availIdx {
			if err := v.refreshAvail(); err != nil {
				return 0, gatherShort, err
			}
			if idx == v.availIdx {
				if uint32(idx-v.lastAvail) >= v.num {
					return 0, gatherTooBig, nil // every buffer of the ring is too little
				}
				return 0, gatherShort, nil
			}
		}
		head, err := v.head(idx)
		if err != nil {
			return 0, gatherShort, err
		}
		w := &v.walker
		w.reset(v.mem, v.desc, v.num, head, v.indirect)
		bufCap := uint64(0)
		tooMany := false
		var d desc
		for {
			more, err := w.step(&d)
			if err != nil {
				return 0, gatherShort, err
			}
			if !more {
				break
			}
			if d.flags&descFWrite == 0 {
				return 0, gatherShort, errRXReadable
			}
			if !v.mem.checkGPA(d.addr, uint64(d.len)) {
				return 0, gatherShort, errBufferAddr
			}
			if v.walker.walked-start > maxChainDescs {
				tooMany = true
				break
			}
			if d.len == 0 {
				continue
			}
			v.segs[nseg] = seg{addr: d.addr, len: d.len}
			nseg++
			bufCap += uint64(d.len)
		}
		if bufCap < uint64(v.hdrLen) && !tooMany {
			return 0, gatherShort, errRXBufferTooTiny
		}
		if tooMany {
			return 0, gatherTooBig, nil
		}
		v.bufs[nb] = rxBuf{head: head, cap: bufCap, end: nseg}
		nb++
		idx++
		have += bufCap
		if !v.mrg && have < need {
			return 0, gatherTooBig, nil
		}
	}
	return nb, gatherOK, nil
}

// scatter writes the header and frame into the nb gathered buffers, fills their used
// elements with the bytes each received, and consumes them from the avail ring.
func (v *vring) scatter(frame []byte, nb int) {
	hdr := v.hdr[:v.hdrLen]
	putNetHdr(hdr, uint16(nb))
	si, soff := 0, uint64(0)
	for _, src := range [2][]byte{hdr, frame} {
		for len(src) > 0 {
			s := v.segs[si]
			k := min(uint64(len(src)), uint64(s.len)-soff)
			v.mem.write(s.addr+soff, src[:k])
			if v.dlog != nil {
				v.logWrite(s.addr+soff, k)
			}
			src = src[k:]
			if soff += k; soff == uint64(s.len) {
				si, soff = si+1, 0
			}
		}
	}
	left := uint64(v.hdrLen) + uint64(len(frame))
	for i := range nb {
		k := min(left, v.bufs[i].cap)
		v.putUsed(v.bufs[i].head, uint32(k))
		left -= k
	}
	v.lastAvail += uint16(nb)
}
