package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"time"
)

// streamWriter is the VM side of the encap scenario: it fills a buffer with
// many length-prefixed frames and writes it in big writes, so the device
// under test sees QEMU's stream framing with frames split anywhere.
type streamWriter struct {
	conn     net.Conn
	size     int
	buf      []byte
	frames   int
	bytes    atomic.Uint64
	stopping atomic.Bool
}

// newStreamWriter writes frameSize-byte frames on conn, writeBytes (rounded
// down to whole frames, at least one) per write.
func newStreamWriter(conn net.Conn, frameSize, writeBytes int) *streamWriter {
	rec := streamPrefixLen + frameSize
	frames := max(writeBytes/rec, 1)
	w := &streamWriter{conn: conn, size: frameSize, buf: make([]byte, frames*rec), frames: frames}
	for i := range frames {
		buildStreamFrame(w.buf[i*rec:], frameSize, 0)
	}
	return w
}

// run writes until stop; the writer blocks whenever the device does not read.
func (w *streamWriter) run() error {
	rec := uint64(streamPrefixLen + w.size)
	for !w.stopping.Load() {
		first := w.bytes.Load() / rec
		for i := range w.frames {
			setSeq(w.buf[i*int(rec)+streamPrefixLen:], first+uint64(i))
		}
		n, err := w.conn.Write(w.buf)
		w.bytes.Add(uint64(n))
		if err != nil {
			if w.stopping.Load() && errors.Is(err, os.ErrDeadlineExceeded) {
				return nil
			}
			return fmt.Errorf("stream write: %w", err)
		}
	}
	return nil
}

// probe writes one record carrying the next sequence number, before run.
func (w *streamWriter) probe() error {
	rec := streamPrefixLen + w.size
	setSeq(w.buf[streamPrefixLen:], w.sent())
	n, err := w.conn.Write(w.buf[:rec])
	w.bytes.Add(uint64(n))
	if err != nil {
		return fmt.Errorf("stream write: %w", err)
	}
	return nil
}

// stop makes run return, cutting short a write the device is not reading.
func (w *streamWriter) stop() {
	w.stopping.Store(true)
	w.conn.SetWriteDeadline(time.Now())
}

// close does nothing: the trial owns and closes the connection.
func (w *streamWriter) close() {}

// sent returns how many whole frames the socket has taken so far.
func (w *streamWriter) sent() uint64 {
	return w.bytes.Load() / uint64(streamPrefixLen+w.size)
}

// streamReader is the VM side of the decap scenario: it reads big chunks,
// splits them into length-prefixed frames, and counts and checks them.
type streamReader struct {
	conn     net.Conn
	size     int
	buf      []byte
	good     atomic.Uint64
	rep      sinkReport
	seq      seqCheck
	stopping atomic.Bool
}

// streamReadBytes is the size of a stream reader's reads.
const streamReadBytes = 1 << 20

// newStreamReader reads frameSize-byte frames from conn.
func newStreamReader(conn net.Conn, frameSize int) *streamReader {
	return &streamReader{conn: conn, size: frameSize, buf: make([]byte, streamReadBytes)}
}

// run reads until stop; a length prefix no Ethernet frame can have ends it
// with an error (the framing is lost), as QEMU drops such a connection.
func (r *streamReader) run() error {
	have := 0
	for {
		n, err := r.conn.Read(r.buf[have:])
		have += n
		used, good, perr := r.parse(r.buf[:have])
		r.good.Add(good)
		have = copy(r.buf, r.buf[used:have])
		if perr != nil {
			return perr
		}
		if err != nil {
			if r.stopping.Load() && errors.Is(err, os.ErrDeadlineExceeded) {
				return nil
			}
			return fmt.Errorf("stream read: %w", err)
		}
	}
}

// parse consumes the whole records at the start of b and returns the bytes
// used and the number of good frames among them.
func (r *streamReader) parse(b []byte) (used int, good uint64, err error) {
	for len(b)-used >= streamPrefixLen {
		n := int(binary.BigEndian.Uint32(b[used:]))
		if n < 14 || n > maxFrameSize {
			return used, good, fmt.Errorf("stream: impossible frame length %d", n)
		}
		if len(b)-used-streamPrefixLen < n {
			break
		}
		frame := b[used+streamPrefixLen : used+streamPrefixLen+n]
		used += streamPrefixLen + n
		seq, ok := parseFrame(frame)
		if !ok || n != r.size {
			r.rep.Bad++
			continue
		}
		r.seq.see(seq)
		good++
	}
	return used, good, nil
}

// stop makes run return, cutting short a read that waits for data.
func (r *streamReader) stop() {
	r.stopping.Store(true)
	r.conn.SetReadDeadline(time.Now())
}

// close does nothing: the trial owns and closes the connection.
func (r *streamReader) close() {}

// delivered returns how many good frames arrived so far.
func (r *streamReader) delivered() uint64 { return r.good.Load() }

// report returns the error counts; call it only after run has returned.
func (r *streamReader) report() sinkReport {
	rep := r.rep
	rep.Late, rep.Skipped = r.seq.late, r.seq.skipped
	return rep
}
