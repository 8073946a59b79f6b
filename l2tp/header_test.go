package l2tp

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"testing"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/internal/testhex"
)

// golden is one hand-written encapsulated header: UDP or IP, cookie length,
// sublayer kind, offset, and the bytes of the first packet's header.
type golden struct {
	udp    bool
	cookie int    // 0, 4 (0x11223344) or 8 (0x1122334455667788)
	sub    string // none, seqnone, seqsend, counter, pincounter
	offset int    // 0 or 3
	hdr    string // hex, spaces ignored
}

// goldens covers every combination; the header does not depend on the IP
// version, so each entry is checked over IPv4 and IPv6. Session 0x10.
var goldens = []golden{
	{true, 0, "none", 0, "00030000 00000010"},
	{true, 0, "none", 3, "00030000 00000010 000000"},
	{true, 0, "seqnone", 0, "00030000 00000010 00000000"},
	{true, 0, "seqnone", 3, "00030000 00000010 00000000 000000"},
	{true, 0, "seqsend", 0, "00030000 00000010 40000000"},
	{true, 0, "seqsend", 3, "00030000 00000010 40000000 000000"},
	{true, 0, "counter", 0, "00030000 00000010 00000001"},
	{true, 0, "counter", 3, "00030000 00000010 00000001 000000"},
	{true, 0, "pincounter", 0, "00030000 00000010 00000000"},
	{true, 0, "pincounter", 3, "00030000 00000010 00000000 000000"},
	{true, 4, "none", 0, "00030000 00000010 11223344"},
	{true, 4, "none", 3, "00030000 00000010 11223344 000000"},
	{true, 4, "seqnone", 0, "00030000 00000010 11223344 00000000"},
	{true, 4, "seqnone", 3, "00030000 00000010 11223344 00000000 000000"},
	{true, 4, "seqsend", 0, "00030000 00000010 11223344 40000000"},
	{true, 4, "seqsend", 3, "00030000 00000010 11223344 40000000 000000"},
	{true, 4, "counter", 0, "00030000 00000010 11223344 00000001"},
	{true, 4, "counter", 3, "00030000 00000010 11223344 00000001 000000"},
	{true, 4, "pincounter", 0, "00030000 00000010 11223344 00000000"},
	{true, 4, "pincounter", 3, "00030000 00000010 11223344 00000000 000000"},
	{true, 8, "none", 0, "00030000 00000010 11223344 55667788"},
	{true, 8, "none", 3, "00030000 00000010 11223344 55667788 000000"},
	{true, 8, "seqnone", 0, "00030000 00000010 11223344 55667788 00000000"},
	{true, 8, "seqnone", 3, "00030000 00000010 11223344 55667788 00000000 000000"},
	{true, 8, "seqsend", 0, "00030000 00000010 11223344 55667788 40000000"},
	{true, 8, "seqsend", 3, "00030000 00000010 11223344 55667788 40000000 000000"},
	{true, 8, "counter", 0, "00030000 00000010 11223344 55667788 00000001"},
	{true, 8, "counter", 3, "00030000 00000010 11223344 55667788 00000001 000000"},
	{true, 8, "pincounter", 0, "00030000 00000010 11223344 55667788 00000000"},
	{true, 8, "pincounter", 3, "00030000 00000010 11223344 55667788 00000000 000000"},
	{false, 0, "none", 0, "00000010"},
	{false, 0, "none", 3, "00000010 000000"},
	{false, 0, "seqnone", 0, "00000010 00000000"},
	{false, 0, "seqnone", 3, "00000010 00000000 000000"},
	{false, 0, "seqsend", 0, "00000010 40000000"},
	{false, 0, "seqsend", 3, "00000010 40000000 000000"},
	{false, 0, "counter", 0, "00000010 00000001"},
	{false, 0, "counter", 3, "00000010 00000001 000000"},
	{false, 0, "pincounter", 0, "00000010 00000000"},
	{false, 0, "pincounter", 3, "00000010 00000000 000000"},
	{false, 4, "none", 0, "00000010 11223344"},
	{false, 4, "none", 3, "00000010 11223344 000000"},
	{false, 4, "seqnone", 0, "00000010 11223344 00000000"},
	{false, 4, "seqnone", 3, "00000010 11223344 00000000 000000"},
	{false, 4, "seqsend", 0, "00000010 11223344 40000000"},
	{false, 4, "seqsend", 3, "00000010 11223344 40000000 000000"},
	{false, 4, "counter", 0, "00000010 11223344 00000001"},
	{false, 4, "counter", 3, "00000010 11223344 00000001 000000"},
	{false, 4, "pincounter", 0, "00000010 11223344 00000000"},
	{false, 4, "pincounter", 3, "00000010 11223344 00000000 000000"},
	{false, 8, "none", 0, "00000010 11223344 55667788"},
	{false, 8, "none", 3, "00000010 11223344 55667788 000000"},
	{false, 8, "seqnone", 0, "00000010 11223344 55667788 00000000"},
	{false, 8, "seqnone", 3, "00000010 11223344 55667788 00000000 000000"},
	{false, 8, "seqsend", 0, "00000010 11223344 55667788 40000000"},
	{false, 8, "seqsend", 3, "00000010 11223344 55667788 40000000 000000"},
	{false, 8, "counter", 0, "00000010 11223344 55667788 00000001"},
	{false, 8, "counter", 3, "00000010 11223344 55667788 00000001 000000"},
	{false, 8, "pincounter", 0, "00000010 11223344 55667788 00000000"},
	{false, 8, "pincounter", 3, "00000010 11223344 55667788 00000000 000000"},
}

// config builds the golden entry's Config over IPv4 or IPv6; both ends use
// session 0x10 and the same cookie, so a packet decodes with its own config.
func (g golden) config(v6 bool) Config {
	c := Config{Src: "192.0.2.1", Dst: "192.0.2.2", SessionID: 0x10, PeerSessionID: 0x10,
		TxCookieLen: g.cookie, RxCookieLen: g.cookie, Offset: g.offset, PinPeer: true}
	if v6 {
		c.Src, c.Dst, c.IPv6 = "2001:db8::1", "2001:db8::2", true
	}
	if g.udp {
		c.Encap, c.SrcPort, c.DstPort = EncapUDP, 1701, 1701
	}
	switch g.cookie {
	case 4:
		c.RxCookie, c.TxCookie = 0x11223344, 0x11223344
	case 8:
		c.RxCookie, c.TxCookie = 0x1122334455667788, 0x1122334455667788
	}
	switch g.sub {
	case "seqnone":
		c.L2Spec = L2SpecDefault
	case "seqsend":
		c.L2Spec, c.Seq = L2SpecDefault, SeqSend
	case "counter":
		c.L2Spec, c.Counter = L2SpecDefault, CounterQEMU
	case "pincounter":
		c.L2Spec, c.Counter = L2SpecDefault, CounterPinned
	}
	return c
}

// name labels a golden case.
func (g golden) name(v6 bool) string {
	return fmt.Sprintf("udp=%v/v6=%v/cookie%d/%s/offset%d", g.udp, v6, g.cookie*8, g.sub, g.offset)
}

// testFrame is a 60-byte Ethernet frame with a recognisable pattern.
func testFrame() []byte {
	f := make([]byte, 60)
	for i := range f {
		f[i] = byte(0xa0 + i)
	}
	return f
}

// ipv4Header is a raw IPv4 header of ihl 32-bit words (options zeroed), as a
// raw socket delivers it in front of the L2TPv3 packet.
func ipv4Header(ihl int) []byte {
	h := make([]byte, ihl*4)
	h[0] = 0x40 | byte(ihl)
	h[9] = 115
	return h
}

// TestGoldenHeaders encapsulates a frame for every combination, compares the
// header with the hand-written bytes, and decapsulates it back.
func TestGoldenHeaders(t *testing.T) {
	for _, g := range goldens {
		for _, v6 := range []bool{false, true} {
			t.Run(g.name(v6), func(t *testing.T) {
				c := g.config(v6)
				if err := c.Validate(); err != nil {
					t.Fatal(err)
				}
				want := testhex.Decode(t, g.hdr)
				if c.HeaderLen() != len(want) {
					t.Fatalf("HeaderLen = %d, golden header has %d bytes", c.HeaderLen(), len(want))
				}
				frame := testFrame()
				buf := make([]byte, 300+len(frame))
				copy(buf[300:], frame)
				for i := range buf[:300] {
					buf[i] = 0xee // the offset padding must be zeroed
				}
				pkt := NewEncoder(c).Encap(buf, 300, len(frame))
				if got := pkt[:len(want)]; !bytes.Equal(got, want) {
					t.Fatalf("header\n got %x\nwant %x", got, want)
				}
				if !bytes.Equal(pkt[len(want):], frame) {
					t.Fatal("frame changed by Encap")
				}
				inputs := [][]byte{pkt}
				if !g.udp && !v6 {
					inputs = [][]byte{append(ipv4Header(5), pkt...), append(ipv4Header(6), pkt...)}
				}
				for _, in := range inputs {
					got, reason, ok := NewDecoder(c, nil).Decap(in)
					if !ok || !bytes.Equal(got, frame) {
						t.Fatalf("Decap(%x) = %x, %v, %v; want the frame", in, got, reason, ok)
					}
				}
			})
		}
	}
}

// TestEncapSequence checks the per-packet sublayer values beyond the first
// packet, including the counter's 32-bit and the sequence's 24-bit wrap.
func TestEncapSequence(t *testing.T) {
	base := Config{Src: "192.0.2.1", Dst: "192.0.2.2", Encap: EncapUDP, SrcPort: 1, DstPort: 1,
		SessionID: 1, PeerSessionID: 1, L2Spec: L2SpecDefault}
	tests := []struct {
		name  string
		mod   func(*Config, *Encoder)
		words []string
	}{
		{"counter", func(c *Config, e *Encoder) { c.Counter = CounterQEMU }, []string{"00000001", "00000002", "00000003"}},
		{"counter wrap", func(c *Config, e *Encoder) { c.Counter = CounterQEMU; e.counter = 0xfffffffe },
			[]string{"ffffffff", "00000000", "00000001"}},
		{"pincounter", func(c *Config, e *Encoder) { c.Counter = CounterPinned }, []string{"00000000", "00000000"}},
		{"seq send", func(c *Config, e *Encoder) { c.Seq = SeqSend }, []string{"40000000", "40000001", "40000002"}},
		{"seq both wrap", func(c *Config, e *Encoder) { c.Seq = SeqBoth; e.ns = 0xfffffe },
			[]string{"40fffffe", "40ffffff", "40000000"}},
		{"seq recv sends zero", func(c *Config, e *Encoder) { c.Seq = SeqRecv }, []string{"00000000", "00000000"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base
			tt.mod(&c, &Encoder{})
			e := NewEncoder(c)
			tt.mod(&c, e)
			buf := make([]byte, 64)
			for i, w := range tt.words {
				pkt := e.Encap(buf, 12, 20)
				if got := hex.EncodeToString(pkt[8:12]); got != w {
					t.Fatalf("packet %d sublayer %s, want %s", i, got, w)
				}
			}
		})
	}
}

// TestGoldenPerDirectionCookies encodes and decodes with cookies of
// different lengths each way (txcookie64 / rxcookie64, Linux cookie /
// peer_cookie): the 8-byte cookie goes out, the 4-byte one is expected in,
// and the mirrored config at the far end reads what we sent. A packet with
// the sent layout is refused on our receive side (its cookie is compared
// over 4 bytes at the same place and differs; a packet of the right layout
// but a wrong cookie too).
func TestGoldenPerDirectionCookies(t *testing.T) {
	near, err := ParseOptions("src=192.0.2.1,dst=192.0.2.2,udp,srcport=1701,dstport=1701,txsession=0x10,rxsession=0x20," +
		"txcookie64=on,rxcookie64=off,txcookie=0x1122334455667788,rxcookie=0x99aabbcc,l2spec=default")
	if err != nil {
		t.Fatal(err)
	}
	far, err := ParseOptions("src=192.0.2.2,dst=192.0.2.1,udp,srcport=1701,dstport=1701,txsession=0x20,rxsession=0x10," +
		"txcookie64=off,rxcookie64=on,txcookie=0x99aabbcc,rxcookie=0x1122334455667788,l2spec=default")
	if err != nil {
		t.Fatal(err)
	}
	frame := testFrame()
	encap := func(c Config) []byte {
		buf := make([]byte, 64+len(frame))
		copy(buf[64:], frame)
		return NewEncoder(c).Encap(buf, 64, len(frame))
	}
	for _, tt := range []struct {
		name     string
		from, to Config
		hdr      string
	}{
		{"near to far (8-byte cookie)", near, far, "00030000 00000010 11223344 55667788 00000000"},
		{"far to near (4-byte cookie)", far, near, "00030000 00000020 99aabbcc 00000000"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			want := testhex.Decode(t, tt.hdr)
			pkt := encap(tt.from)
			if got := pkt[:len(pkt)-len(frame)]; !bytes.Equal(got, want) {
				t.Fatalf("header\n got %x\nwant %x", got, want)
			}
			if got, reason, ok := NewDecoder(tt.to, nil).Decap(pkt); !ok || !bytes.Equal(got, frame) {
				t.Fatalf("Decap at the far end = %x, %v, %v; want the frame", got, reason, ok)
			}
		})
	}
	// Our own 8-byte layout with session 0x20 must not pass our 4-byte check.
	wrong := testhex.Decode(t, "00030000 00000020 11223344 55667788 00000000")
	if _, reason, ok := NewDecoder(near, nil).Decap(append(wrong, frame...)); ok || reason != DropCookie {
		t.Fatalf("8-byte cookie where 4 are expected: ok=%v reason=%v, want a cookie drop", ok, reason)
	}
	if near.RxHeaderLen() != 16 || near.HeaderLen() != 20 || far.HeaderLen() != 16 || far.RxHeaderLen() != 20 {
		t.Fatalf("header lengths near %d/%d far %d/%d, want tx 20 rx 16 / tx 16 rx 20",
			near.HeaderLen(), near.RxHeaderLen(), far.HeaderLen(), far.RxHeaderLen())
	}
}
