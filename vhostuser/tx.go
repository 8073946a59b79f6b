package vhostuser

// popTX moves up to len(bufs) frames from the guest's TX ring into bufs[i][offset:], skipping
// the virtio-net header, and returns every popped chain to the used ring with one publish
// and at most one notification. Frames shorter than the header or longer than their buffer
// are dropped and counted; with discard (a disabled ring) every frame is. It pops at most
// num chains so a guest that keeps refilling cannot hold the worker forever. On a violation
// it publishes what it completed and returns the frames copied so far with the error.
func (v *vring) popTX(bufs [][]byte, sizes []int, offset int, discard bool) (int, error) {
	n, popped, dropped := 0, 0, 0
	var bytes uint64
	var err error
	for n < len(bufs) && popped < int(v.num) {
		if v.lastAvail == v.availIdx {
			if err = v.refreshAvail(); err != nil || v.lastAvail == v.availIdx {
				break
			}
		}
		var head uint16
		if head, err = v.head(v.lastAvail); err != nil {
			break
		}
		var dst []byte
		if !discard && offset <= len(bufs[n]) {
			dst = bufs[n][offset:]
		}
		var size int
		var ok bool
		if size, ok, err = v.copyTXChain(head, dst); err != nil {
			break
		}
		v.putUsed(head, 0)
		v.lastAvail++
		popped++
		if !ok || discard {
			dropped++
			continue
		}
		sizes[n] = size
		bytes += uint64(size)
		n++
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

// copyTXChain walks the chain at head, checks every descriptor is device-readable and
// inside guest memory, and copies the frame after the header into dst. ok is false when the
// frame is empty or does not fit dst (then nothing useful was copied, but the whole chain
// was still validated).
func (v *vring) copyTXChain(head uint16, dst []byte) (size int, ok bool, err error) {
	w := &v.walker
	w.reset(v.mem, v.desc, v.num, head, v.indirect)
	skip := uint64(v.hdrLen)
	total := uint64(0)
	fits := true
	var d desc
	for {
		more, err := w.step(&d)
		if err != nil {
			return 0, false, err
		}
		if !more {
			break
		}
		if d.flags&descFWrite != 0 {
			return 0, false, errTXWritable
		}
		a, l := d.addr, uint64(d.len)
		if !v.mem.checkGPA(a, l) {
			return 0, false, errBufferAddr
		}
		if skip > 0 {
			k := min(skip, l)
			a, l, skip = a+k, l-k, skip-k
		}
		if l == 0 {
			continue
		}
		if fits && total+l <= uint64(len(dst)) {
			v.mem.read(dst[total:total+l], a)
		} else {
			fits = false
		}
		total += l
	}
	return int(total), fits && skip == 0 && total > 0, nil
}
