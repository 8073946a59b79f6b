package main

import (
	"encoding/binary"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/vhostuser/vhosttest"
)

// TSO super-frames for pathVhostTSO: Ethernet + IPv4 + TCP (no options) and
// segs*mss payload bytes, with the magic and a sequence number at the start
// of every MSS-sized piece, so each segment the sidecar cuts is a wire frame
// of the trial's size that parseFrame numbers like any test frame.
const (
	tsoHeaders  = 14 + 20 + 20
	tsoMaxBytes = 65535 - 20 - 20 // IPv4 total length bounds the payload
	tsoBufSize  = 12 + tsoHeaders + tsoMaxBytes + 64
	tsoPort     = 0x4c32 // TCP destination port of bench segments ("L2")
	tsoMinFrame = 576
)

// tsoFrames builds super-frames cut into frames of one size.
type tsoFrames struct {
	mss, segs int
	hdr       vhosttest.NetHdr
}

// newTSOFrames plans super-frames whose segments are size-byte frames: as
// many full segments as fit 64 KiB, like a Linux guest's bulk TCP.
func newTSOFrames(size int) *tsoFrames {
	mss := size - tsoHeaders
	t := &tsoFrames{mss: mss, segs: tsoMaxBytes / mss}
	t.hdr = vhosttest.NetHdr{NeedsCsum: true, GSOType: 1, HdrLen: tsoHeaders, GSOSize: uint16(mss),
		CsumStart: 14 + 20, CsumOffset: 16}
	return t
}

// build writes the super-frame whose first segment is frame number seq
// into b and returns its length. The checksums are left to the sidecar.
func (t *tsoFrames) build(b []byte, seq uint64) int {
	n := tsoHeaders + t.segs*t.mss
	copy(b[0:6], benchDstMAC[:])
	copy(b[6:12], benchSrcMAC[:])
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	ip := b[14:34]
	clear(ip)
	ip[0], ip[8], ip[9] = 0x45, 64, 6
	binary.BigEndian.PutUint16(ip[2:], uint16(n-14))
	copy(ip[12:], []byte{10, 0, 0, 1, 10, 0, 0, 2})
	tcp := b[34:54]
	clear(tcp)
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], tsoPort)
	binary.BigEndian.PutUint32(tcp[4:], uint32(seq)*uint32(t.mss))
	tcp[12], tcp[13] = 5<<4, 0x10 // data offset 5 words, ACK
	for i := range t.segs {
		p := b[tsoHeaders+i*t.mss:]
		binary.BigEndian.PutUint32(p[0:], frameMagic)
		binary.BigEndian.PutUint64(p[4:], seq+uint64(i))
	}
	return n
}

// parseSegment returns the sequence number of a segment cut from a bench
// super-frame.
func parseSegment(f []byte) (uint64, bool) {
	if len(f) < tsoHeaders+12 || binary.BigEndian.Uint16(f[12:]) != 0x0800 || f[23] != 6 ||
		binary.BigEndian.Uint16(f[36:]) != tsoPort || binary.BigEndian.Uint32(f[tsoHeaders:]) != frameMagic {
		return 0, false
	}
	return binary.BigEndian.Uint64(f[tsoHeaders+4:]), true
}
