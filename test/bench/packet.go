package main

import (
	"encoding/binary"
	"fmt"
)

// Frame layout of every test frame, whatever its size:
//
//	0  dst MAC (6) | 6 src MAC (6) | 12 EtherType 0x88b5 (2)
//	14 magic "L2B1" (4) | 18 sequence number (8, big-endian) | 26 zero padding
//
// 0x88b5 is the IEEE "local experimental" EtherType, so no stack on the
// path treats the frames as anything but opaque Ethernet.
const (
	etherTypeBench = 0x88b5
	frameMagic     = 0x4c324231 // "L2B1"
	magicOffset    = 14
	seqOffset      = 18
	minFrameSize   = 26
	maxFrameSize   = 9216

	// l2tpHeaderLen is the L2TPv3-over-UDP data header the harness uses:
	// 00 03 00 00 (T=0, version 3), then the 32-bit session ID, no cookie,
	// no L2-Specific Sublayer (the sidecar's and QEMU's default).
	l2tpHeaderLen = 8
	l2tpVersion   = 3

	// streamPrefixLen is QEMU -netdev stream's big-endian frame length.
	streamPrefixLen = 4
)

var (
	benchDstMAC = [6]byte{0x52, 0x54, 0x00, 0xbe, 0x00, 0x02}
	benchSrcMAC = [6]byte{0x52, 0x54, 0x00, 0xbe, 0x00, 0x01}
)

// checkFrameSize refuses a frame size the layout cannot carry.
func checkFrameSize(size int) error {
	if size < minFrameSize || size > maxFrameSize {
		return fmt.Errorf("frame size %d: want %d..%d bytes", size, minFrameSize, maxFrameSize)
	}
	return nil
}

// buildFrame writes a test Ethernet frame filling all of b, carrying seq.
func buildFrame(b []byte, seq uint64) {
	copy(b[0:6], benchDstMAC[:])
	copy(b[6:12], benchSrcMAC[:])
	binary.BigEndian.PutUint16(b[12:14], etherTypeBench)
	binary.BigEndian.PutUint32(b[magicOffset:], frameMagic)
	clear(b[minFrameSize:])
	setSeq(b, seq)
}

// setSeq overwrites the sequence number of a frame built by buildFrame.
func setSeq(frame []byte, seq uint64) {
	binary.BigEndian.PutUint64(frame[seqOffset:], seq)
}

// parseFrame returns the sequence number of a test frame (or of a TSO
// segment, see tso.go), or false when the frame is too short or is not one
// of ours.
func parseFrame(frame []byte) (uint64, bool) {
	if seq, ok := parseSegment(frame); ok {
		return seq, true
	}
	if len(frame) < minFrameSize ||
		binary.BigEndian.Uint16(frame[12:14]) != etherTypeBench ||
		binary.BigEndian.Uint32(frame[magicOffset:]) != frameMagic {
		return 0, false
	}
	return binary.BigEndian.Uint64(frame[seqOffset:]), true
}

// buildL2TP writes an L2TPv3/UDP data packet (header and a frameSize-byte
// test frame) at the start of b and returns it.
func buildL2TP(b []byte, session uint32, frameSize int, seq uint64) []byte {
	p := b[:l2tpHeaderLen+frameSize]
	binary.BigEndian.PutUint32(p[0:4], l2tpVersion<<16)
	binary.BigEndian.PutUint32(p[4:8], session)
	buildFrame(p[l2tpHeaderLen:], seq)
	return p
}

// parseL2TP returns the Ethernet frame of an L2TPv3/UDP data packet for
// the given session, or false for a control message, another version or
// another session. The 16 reserved bits are ignored, as RFC 3931 asks.
func parseL2TP(p []byte, session uint32) ([]byte, bool) {
	if len(p) < l2tpHeaderLen {
		return nil, false
	}
	flags := binary.BigEndian.Uint16(p[0:2])
	if flags&0x8000 != 0 || flags&0x000f != l2tpVersion {
		return nil, false
	}
	if binary.BigEndian.Uint32(p[4:8]) != session {
		return nil, false
	}
	return p[l2tpHeaderLen:], true
}

// buildStreamFrame writes a QEMU stream record (length prefix and a
// frameSize-byte test frame) at the start of b and returns it.
func buildStreamFrame(b []byte, frameSize int, seq uint64) []byte {
	p := b[:streamPrefixLen+frameSize]
	binary.BigEndian.PutUint32(p[0:4], uint32(frameSize))
	buildFrame(p[streamPrefixLen:], seq)
	return p
}

// seqCheck follows the sequence numbers of one flow: frames that arrive
// late (reordered or duplicated) and gaps (frames skipped over, i.e. lost
// or still to come out of order).
type seqCheck struct {
	next    uint64
	late    uint64
	skipped uint64
}

// see records one sequence number.
func (c *seqCheck) see(seq uint64) {
	switch {
	case seq < c.next:
		c.late++
	default:
		c.skipped += seq - c.next
		c.next = seq + 1
	}
}
