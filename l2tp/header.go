package l2tp

import (
	"encoding/binary"
	"sync/atomic"

	"golang.org/x/sys/cpu"
)

const (
	// maxHeaderLen bounds HeaderLen: flags word, session, 64-bit cookie,
	// sublayer and the largest offset.
	maxHeaderLen = 4 + 4 + 8 + 4 + MaxOffset
	// ethHeaderLen is the shortest frame delivered: an Ethernet header.
	ethHeaderLen = 14
	// udpDataWord is the UDP flags word of a data packet: T=0, version 3.
	udpDataWord = 0x00030000
	// seqS is the RFC 4719 default sublayer's S (sequenced) bit.
	seqS = 0x40000000
	// seqMask keeps the 24-bit sequence number of the default sublayer.
	seqMask = 0xffffff
)

// txSublayer is what the encoder writes in the sublayer slot.
type txSublayer uint8

const (
	txFixed   txSublayer = iota // no sublayer, or a constant 0 (template)
	txCounter                   // QEMU counter=on: ++counter, from 1
	txSeq                       // RFC 4719 S|ns, ns from 0
)

// Encoder writes the L2TPv3 header of one session in front of outgoing
// frames. The header is a template built once; only the sublayer is computed
// per packet. An Encoder is used by one goroutine at a time.
type Encoder struct {
	hl      int            // header length
	sub     int            // offset of the sublayer word in the header
	mode    txSublayer     // what goes in the sublayer
	counter uint32         // last QEMU counter sent
	ns      uint32         // next RFC sequence number
	shared  *atomic.Uint32 // non-nil: a Tunnel's Senders share this numbering
	tmpl    [maxHeaderLen]byte
	_       cpu.CacheLinePad // keep other goroutines' data off our lines
}

// NewEncoder precomputes the header for c (which must be valid).
func NewEncoder(c Config) *Encoder {
	e := &Encoder{hl: c.HeaderLen()}
	h := e.tmpl[:]
	if c.Encap == EncapUDP {
		binary.BigEndian.PutUint32(h, udpDataWord)
		h = h[4:]
	}
	binary.BigEndian.PutUint32(h, c.PeerSessionID)
	h = h[4:]
	switch c.TxCookieLen {
	case 4:
		binary.BigEndian.PutUint32(h, uint32(c.TxCookie))
	case 8:
		binary.BigEndian.PutUint64(h, c.TxCookie)
	}
	e.sub = len(e.tmpl) - len(h) + c.TxCookieLen
	if c.L2Spec == L2SpecDefault {
		switch {
		case c.Counter == CounterQEMU:
			e.mode = txCounter
		case c.Counter == CounterRFC && c.Seq.sends():
			e.mode = txSeq
		}
	}
	return e
}

// HeaderLen is the number of bytes Encap writes in front of a frame.
func (e *Encoder) HeaderLen() int { return e.hl }

// Encap writes the header in front of the frame buf[off:off+n], at
// buf[off-HeaderLen():off], and returns the packet buf[off-HeaderLen():off+n].
// It panics if off < HeaderLen() or off+n > len(buf).
func (e *Encoder) Encap(buf []byte, off, n int) []byte {
	pkt := buf[off-e.hl : off+n]
	copy(pkt[:e.hl], e.tmpl[:e.hl])
	switch e.mode {
	case txCounter:
		binary.BigEndian.PutUint32(pkt[e.sub:], e.nextCounter())
	case txSeq:
		binary.BigEndian.PutUint32(pkt[e.sub:], seqS|e.nextNs()&seqMask)
	}
	return pkt
}

// Decoder checks and strips the L2TPv3 header of received packets for one
// session, and keeps its receive sequence state. A Decoder is used by one
// goroutine at a time.
type Decoder struct {
	stripIPv4 bool   // raw IPv4 sockets deliver the IP header
	udp       bool   // a flags word precedes the session
	hl        int    // header length without any IPv4 header
	sess      int    // offset of the session ID
	session   uint32 // expected session ID
	cookieLen int
	cookie    uint64 // expected cookie
	sub       int    // offset of the sublayer word
	checkSeq  bool   // seq=recv|both with the RFC sublayer
	seq       seqState
	windowed  bool   // reorder=: the window decides on the number, in ns
	ns        uint32 // the number of the last frame returned (windowed)
	stats     *Stats // SeqLost is counted here
	_         cpu.CacheLinePad
}

// NewDecoder prepares the checks for c (which must be valid). Sequence gaps
// are counted in s.SeqLost; s may be nil.
func NewDecoder(c Config, s *Stats) *Decoder {
	if s == nil {
		s = new(Stats)
	}
	d := &Decoder{
		stripIPv4: c.Encap == EncapIP && !c.IPv6,
		udp:       c.Encap == EncapUDP,
		hl:        c.RxHeaderLen(),
		session:   c.SessionID,
		cookieLen: c.RxCookieLen,
		cookie:    c.RxCookie,
		checkSeq:  c.L2Spec == L2SpecDefault && c.Counter == CounterRFC && c.Seq.checks(),
		windowed:  c.Reorder > 0,
		stats:     s,
	}
	if d.udp {
		d.sess = 4
	}
	d.sub = d.sess + 4 + c.RxCookieLen
	return d
}

// Decap checks pkt, a datagram exactly as the socket returned it, and returns
// the Ethernet frame inside it as a sub-slice of pkt (no copy). When the
// packet must be dropped it returns ok=false and the reason.
//
// Checks, in order: raw IPv4 header (version 4, IHL >= 5, within pkt) →
// malformed; UDP flags word with T set → control, version != 3 → malformed
// (reserved bits ignored); session 0 over IP → control; header cut short →
// malformed; session → session; cookie → cookie; frame shorter than an
// Ethernet header → malformed; with seq=recv|both, the sublayer (see
// seqState.check; with reorder=, only the S bit here and the number left
// in d.ns for the window) → sequence. With seq=none|send, or QEMU's counter modes,
// the sublayer's value is ignored.
func (d *Decoder) Decap(pkt []byte) (frame []byte, reason Drop, ok bool) {
	if d.stripIPv4 {
		if len(pkt) < 20 || pkt[0]>>4 != 4 {
			return nil, DropMalformed, false
		}
		ihl := int(pkt[0]&0x0f) * 4
		if ihl < 20 || ihl > len(pkt) {
			return nil, DropMalformed, false
		}
		pkt = pkt[ihl:]
	}
	if d.udp {
		if len(pkt) < 4 {
			return nil, DropMalformed, false
		}
		if pkt[0]&0x80 != 0 {
			return nil, DropControl, false
		}
		if pkt[1]&0x0f != 3 {
			return nil, DropMalformed, false
		}
	}
	if len(pkt) < d.sess+4 {
		return nil, DropMalformed, false
	}
	session := binary.BigEndian.Uint32(pkt[d.sess:])
	if session == 0 && !d.udp {
		return nil, DropControl, false
	}
	if len(pkt) < d.hl {
		return nil, DropMalformed, false
	}
	if session != d.session {
		return nil, DropSession, false
	}
	if !d.cookieOK(pkt) {
		return nil, DropCookie, false
	}
	if len(pkt)-d.hl < ethHeaderLen {
		return nil, DropMalformed, false
	}
	if d.checkSeq {
		v := binary.BigEndian.Uint32(pkt[d.sub:])
		if v&seqS == 0 {
			return nil, DropSequence, false
		}
		if d.windowed {
			d.ns = v & seqMask
			return pkt[d.hl:len(pkt):len(pkt)], 0, true
		}
		accept, lost := d.seq.check(v & seqMask)
		if !accept {
			return nil, DropSequence, false
		}
		if lost != 0 {
			d.stats.seqLost.Add(uint64(lost))
		}
	}
	return pkt[d.hl:len(pkt):len(pkt)], 0, true
}

// cookieOK compares the received cookie (pkt holds the whole header).
func (d *Decoder) cookieOK(pkt []byte) bool {
	switch d.cookieLen {
	case 4:
		return binary.BigEndian.Uint32(pkt[d.sess+4:]) == uint32(d.cookie)
	case 8:
		return binary.BigEndian.Uint64(pkt[d.sess+4:]) == d.cookie
	}
	return true
}
