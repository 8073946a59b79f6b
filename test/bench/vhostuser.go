package main

import (
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/vhostuser/vhosttest"
)

// pathVhost is the sidecar behind vhost-user: the harness is the front end
// (vhosttest: guest memory in a memfd, split virtqueues it fills and
// empties itself), so the VM side costs what a guest driver would, and the
// sidecar moves frames straight between the rings and its socket.
const pathVhost = "vhostuser"

// ringDevice is a device whose VM side is a vhost-user guest, not a stream.
type ringDevice interface {
	vmSource(size int) source
	vmSink(size int) sink
}

// pathVhostTSO is the vhost-user path with bulk TCP from the guest: each TX
// buffer is a 64 KiB TSO super-frame the sidecar cuts into wire frames of
// the trial's size (encap only), to compare with pathVhost's per-frame rate.
const pathVhostTSO = "vhostuser-tso"

// vhostSidecar is the sidecar with --vhost-user, listening; the harness
// connects as the front end and starts one queue pair.
type vhostSidecar struct {
	sidecar
	g   *vhosttest.Guest
	tso bool // the guest sends TSO super-frames (pathVhostTSO)
}

// vhostBufSize holds the largest test frame and its virtio-net header in
// one buffer, so no frame is spread over several.
const vhostBufSize = maxFrameSize + 64

// start launches the sidecar, waits for msg=ready, connects as the
// vhost-user front end and starts queue pair 0 with every RX buffer posted.
func (s *vhostSidecar) start(sock string, dutPort, netPort int) (net.Conn, error) {
	if err := s.launch([]string{"--vhost-user", sock + ",mtu=9000"}, dutPort, netPort); err != nil {
		return nil, err
	}
	fe, err := vhosttest.Dial(sock)
	if err != nil {
		s.p.terminate()
		return nil, fmt.Errorf("vhost-user dial: %w", err)
	}
	o := vhosttest.GuestOptions{BufSize: vhostBufSize}
	if s.tso {
		o.TXBuf = tsoBufSize
	}
	if s.g, err = vhosttest.NewGuest(fe, o); err != nil {
		fe.Close()
		s.p.terminate()
		return nil, fmt.Errorf("vhost-user front end: %w", err)
	}
	return fe.Conn, nil
}

// stop ends the sidecar (the trial has closed the control connection) and
// releases the guest's rings and memory.
func (s *vhostSidecar) stop() dutReport {
	r := s.sidecar.stop()
	if s.g != nil {
		s.g.Close()
	}
	return r
}

// vmSource puts frames on the guest's TX ring (encap): TSO super-frames
// for pathVhostTSO.
func (s *vhostSidecar) vmSource(size int) source {
	w := &ringWriter{q: s.g.Pairs[0], size: size}
	if s.tso {
		w.tso = newTSOFrames(size)
	}
	return w
}

// vmSink takes frames off the guest's RX ring (decap).
func (s *vhostSidecar) vmSink(size int) sink {
	return &ringReader{q: s.g.Pairs[0], size: size}
}

// ringWriter is the guest side of encap over vhost-user: it keeps the TX
// ring full of numbered frames and waits for the sidecar's used
// notifications when it is.
type ringWriter struct {
	q        *vhosttest.QueuePair
	size     int
	seq      uint64
	tso      *tsoFrames // non-nil: each buffer is a super-frame of tso.segs frames
	sentN    atomic.Uint64
	stopping atomic.Bool
}

// fill writes the next numbered frame into a TX buffer.
func (w *ringWriter) fill(b []byte) int {
	buildFrame(b[:w.size], w.seq)
	w.seq++
	return w.size
}

// fillTSO writes the next super-frame, its segments numbered, into a TX buffer.
func (w *ringWriter) fillTSO(b []byte) int {
	n := w.tso.build(b, w.seq)
	w.seq += uint64(w.tso.segs)
	return n
}

// send queues up to n buffers and returns the frames they hold.
func (w *ringWriter) send(n int) int {
	if w.tso == nil {
		return w.q.Send(n, w.fill)
	}
	return w.q.SendOffload(n, w.fillTSO, w.tso.hdr.Put) * w.tso.segs
}

// run queues frames until stop.
func (w *ringWriter) run() error {
	for !w.stopping.Load() {
		if n := w.send(64); n > 0 {
			w.sentN.Add(uint64(n))
			continue
		}
		w.q.WaitTX(10 * time.Millisecond)
	}
	return nil
}

// probe queues one frame (one super-frame with TSO), before run.
func (w *ringWriter) probe() error {
	if n := w.send(1); n > 0 {
		w.sentN.Add(uint64(n))
		return nil
	}
	return errors.New("vhost-user TX ring full while priming")
}

// stop makes run return after its current batch.
func (w *ringWriter) stop() { w.stopping.Store(true) }

// close does nothing: the device owns the guest.
func (w *ringWriter) close() {}

// sent returns the frames queued on the TX ring so far.
func (w *ringWriter) sent() uint64 { return w.sentN.Load() }

// ringReader is the guest side of decap over vhost-user: it takes received
// frames off the RX ring, checks and counts them, and re-posts the buffers.
type ringReader struct {
	q        *vhosttest.QueuePair
	size     int
	good     atomic.Uint64
	rep      sinkReport
	seq      seqCheck
	stopping atomic.Bool
}

// see checks one received frame.
func (r *ringReader) see(f []byte) {
	seq, ok := parseFrame(f)
	if !ok || len(f) != r.size {
		r.rep.Bad++
		return
	}
	r.seq.see(seq)
	r.good.Add(1)
}

// run receives until stop, parking on the call eventfd when the ring is empty.
func (r *ringReader) run() error {
	for !r.stopping.Load() {
		if r.q.Receive(r.see) == 0 {
			r.q.WaitRX(udpRecvTimeout)
		}
	}
	return nil
}

// stop makes run return within udpRecvTimeout.
func (r *ringReader) stop() { r.stopping.Store(true) }

// close does nothing: the device owns the guest.
func (r *ringReader) close() {}

// delivered returns how many good frames arrived so far.
func (r *ringReader) delivered() uint64 { return r.good.Load() }

// report returns the error counts; call it only after run has returned.
func (r *ringReader) report() sinkReport {
	rep := r.rep
	rep.Late, rep.Skipped = r.seq.late, r.seq.skipped
	return rep
}
