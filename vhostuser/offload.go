package vhostuser

import (
	"encoding/binary"
	"errors"
)

// The guest's transmit offloads (virtio 1.2 §5.1.6.2): with CSUM acked a frame may arrive
// with its TCP/UDP checksum left for the device to finish (NEEDS_CSUM); with HOST_TSO4/6 a
// TCP "super-frame" of up to 64 KiB may arrive with gso_size set, for the device to cut into
// MSS-sized segments. The back end does both in software before the frames reach the
// tunnel, so every frame on the wire is complete, and a super-frame's segments leave as one
// UDP GSO send. GUEST_CSUM/GUEST_TSO are not offered: frames from the network carry
// complete checksums nobody verified, so telling the guest DATA_VALID would be a lie and
// checking them here costs what the guest's own check costs.

// virtio_net_hdr flags and gso_type values.
const (
	hdrFNeedsCsum = 1 // csum_start/csum_offset name a checksum to complete

	gsoNone  = 0
	gsoTCPv4 = 1
	gsoTCPv6 = 4
	gsoECN   = 0x80 // the flow uses ECN: CWR stays on the first segment only (we always do that)
)

// netHdr is the part of a TX frame's virtio-net header the back end acts on.
type netHdr struct {
	flags      uint8
	gsoType    uint8
	gsoSize    uint16
	csumStart  uint16
	csumOffset uint16
}

// parseNetHdr decodes the little-endian virtio-net header fields (the layout is the same for
// the 10- and 12-byte headers; hdr_len is a hint we do not trust, so it is not read).
func parseNetHdr(b []byte) netHdr {
	return netHdr{
		flags:      b[0],
		gsoType:    b[1],
		gsoSize:    binary.LittleEndian.Uint16(b[4:]),
		csumStart:  binary.LittleEndian.Uint16(b[6:]),
		csumOffset: binary.LittleEndian.Uint16(b[8:]),
	}
}

// Offload faults: the frame is dropped and counted, the ring goes on.
var (
	errCsumRange   = errors.New("checksum start/offset outside the frame")
	errGSOType     = errors.New("GSO type not offered (only TCPv4/TCPv6)")
	errGSOCsum     = errors.New("GSO frame without NEEDS_CSUM at a TCP checksum")
	errGSOHeaders  = errors.New("GSO frame whose Ethernet/IP/TCP headers do not match its GSO type")
	errGSOSize     = errors.New("GSO frame with gso_size 0 or a segment larger than the buffer")
	errGSOTooLarge = errors.New("GSO frame larger than 128 KiB")
)

// Limits of a super-frame: its headers must fit tsoHeadLen bytes, its length maxTSOFrame
// (a Linux guest sends at most 64 KiB: virtio_net's tso_max_size).
const (
	tsoHeadLen  = 256
	maxTSOFrame = 128 << 10
)

// completeCsum finishes the checksum a guest left for the device: the ones'-complement sum
// from csumStart to the end (the field holds the pseudo-header sum) stored at
// csumStart+csumOffset, as virtio 1.2 §5.1.6.2 item 3 describes.
func completeCsum(frame []byte, h netHdr) error {
	start, field := int(h.csumStart), int(h.csumStart)+int(h.csumOffset)
	if start >= len(frame) || field+2 > len(frame) {
		return errCsumRange
	}
	binary.BigEndian.PutUint16(frame[field:], checksumField(sumBytes(frame[start:], 0)))
	return nil
}

// tsoPlan is a checked super-frame layout: where its headers are and how it is cut.
type tsoPlan struct {
	l3, l4, hdrLen int // offsets of the IP header, the TCP header, and the first payload byte
	v6             bool
	mss            int
	payload        int // bytes after the headers
	segs           int
	id0            uint16 // IPv4 identification of the first segment
	seq0           uint32 // TCP sequence number of the first segment
	tcpFlags       uint8
	pseudo         uint64 // pseudo-header sum without the TCP length
}

// TCP flags the segmentation rewrites (RFC 9293 §3.1, RFC 3168 §6.1.2).
const (
	tcpFIN = 0x01
	tcpPSH = 0x08
	tcpCWR = 0x80
)

// planTSO checks the headers of a super-frame of total bytes, whose first bytes are head,
// against its virtio-net header and returns how to cut it. Nothing in the frame is trusted:
// the Ethernet type (after up to two VLAN tags), the IP version, header lengths and
// protocol must all agree with the GSO type and checksum offsets.
func planTSO(h netHdr, head []byte, total, room int) (tsoPlan, error) {
	var p tsoPlan
	gso := h.gsoType &^ gsoECN
	if gso != gsoTCPv4 && gso != gsoTCPv6 {
		return p, errGSOType
	}
	if total > maxTSOFrame {
		return p, errGSOTooLarge
	}
	if h.flags&hdrFNeedsCsum == 0 || h.csumOffset != 16 {
		return p, errGSOCsum
	}
	p.v6 = gso == gsoTCPv6
	p.l3, p.l4 = l3Offset(head), int(h.csumStart)
	if p.l3 < 0 || !p.ipHeaderOK(head) || p.l4+20 > len(head) {
		return p, errGSOHeaders
	}
	doff := int(head[p.l4+12]>>4) * 4
	p.hdrLen = p.l4 + doff
	if doff < 20 || p.hdrLen > len(head) || p.hdrLen > total {
		return p, errGSOHeaders
	}
	p.mss = int(h.gsoSize)
	if p.mss == 0 || p.hdrLen+p.mss > room {
		return p, errGSOSize
	}
	p.payload = total - p.hdrLen
	p.segs = max(1, (p.payload+p.mss-1)/p.mss)
	p.seq0 = binary.BigEndian.Uint32(head[p.l4+4:])
	p.tcpFlags = head[p.l4+13]
	p.pseudo = p.pseudoSum(head)
	if !p.v6 {
		p.id0 = binary.BigEndian.Uint16(head[p.l3+4:])
	}
	return p, nil
}

// l3Offset returns where the IP header starts after the Ethernet header and up to two VLAN
// tags (802.1Q, 802.1ad), or -1 for a frame too short to say.
func l3Offset(head []byte) int {
	off := 12
	for range 3 {
		if off+2 > len(head) {
			return -1
		}
		switch binary.BigEndian.Uint16(head[off:]) {
		case 0x8100, 0x88a8:
			off += 4
		default:
			return off + 2
		}
	}
	return -1
}

// ipHeaderOK checks the IP header at p.l3 is of the GSO type's version, carries TCP (IPv4)
// and ends where the TCP header starts (IPv6 extension headers are allowed before it).
func (p *tsoPlan) ipHeaderOK(head []byte) bool {
	ethType := binary.BigEndian.Uint16(head[p.l3-2:])
	if p.v6 {
		return ethType == 0x86dd && p.l3+40 <= p.l4 && p.l4 <= len(head) && head[p.l3]>>4 == 6
	}
	if ethType != 0x0800 || p.l3+20 > len(head) {
		return false
	}
	ihl := int(head[p.l3]&0x0f) * 4
	return head[p.l3]>>4 == 4 && ihl >= 20 && p.l3+ihl == p.l4 && head[p.l3+9] == 6
}

// pseudoSum is the ones'-complement sum of the pseudo-header's addresses and protocol
// (RFC 9293 §3.1, RFC 8200 §8.1); each segment adds its own TCP length.
func (p *tsoPlan) pseudoSum(head []byte) uint64 {
	if p.v6 {
		return sumBytes(head[p.l3+8:p.l3+40], 6)
	}
	return sumBytes(head[p.l3+12:p.l3+20], 6)
}

// segment turns seg, which holds the super-frame's headers followed by the payload of
// segment i (payload bytes [i*mss, i*mss+len) of the super-frame), into a complete frame:
// IP length and IPv4 id and header checksum, TCP sequence number, flags (FIN and PSH on
// the last segment only, CWR on the first only, as Linux's tcp_gso_segment) and checksum.
func (p *tsoPlan) segment(seg []byte, i int) {
	l3, l4 := seg[p.l3:], seg[p.l4:]
	if p.v6 {
		binary.BigEndian.PutUint16(l3[4:], uint16(len(seg)-p.l3-40))
	} else {
		binary.BigEndian.PutUint16(l3[2:], uint16(len(seg)-p.l3))
		binary.BigEndian.PutUint16(l3[4:], p.id0+uint16(i))
		binary.BigEndian.PutUint16(l3[10:], 0)
		binary.BigEndian.PutUint16(l3[10:], checksumField(sumBytes(seg[p.l3:p.l4], 0)))
	}
	binary.BigEndian.PutUint32(l4[4:], p.seq0+uint32(i*p.mss))
	f := p.tcpFlags
	if i != p.segs-1 {
		f &^= tcpFIN | tcpPSH
	}
	if i != 0 {
		f &^= tcpCWR
	}
	l4[13] = f
	binary.BigEndian.PutUint16(l4[16:], 0)
	binary.BigEndian.PutUint16(l4[16:], checksumField(sumBytes(l4, p.pseudo+uint64(len(l4)))))
}

// segLen is the payload length of segment i.
func (p *tsoPlan) segLen(i int) int {
	return min(p.mss, p.payload-i*p.mss)
}
