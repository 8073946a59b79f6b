package l2tplayer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/internal/testhex"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/l2tp"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/pump/pumptest"
)

// layerCase is one session layout the layer must read: UDP or IP, cookie
// length, sublayer (none, default with S=0, default with sequence numbers),
// offset.
type layerCase struct {
	udp    bool
	cookie int
	sub    string // "none", "default", "seq"
	offset int
}

// layerCases is every encapsulation × cookie × sublayer × offset (0 or 3).
func layerCases() []layerCase {
	var cs []layerCase
	for _, udp := range []bool{true, false} {
		for _, cookie := range []int{0, 4, 8} {
			for _, sub := range []string{"none", "default", "seq"} {
				for _, offset := range []int{0, 3} {
					cs = append(cs, layerCase{udp, cookie, sub, offset})
				}
			}
		}
	}
	return cs
}

// config is the case's session (session 0x10, cookie 0x1122334455667788
// cut to its length).
func (lc layerCase) config() l2tp.Config {
	c := l2tp.Config{Src: "192.0.2.1", Dst: "192.0.2.2", SessionID: 0x10, PeerSessionID: 0x10,
		TxCookieLen: lc.cookie, RxCookieLen: lc.cookie, Offset: lc.offset}
	if lc.udp {
		c.Encap, c.SrcPort, c.DstPort = l2tp.EncapUDP, 1701, 1701
	}
	c.TxCookie = 0x1122334455667788 >> (64 - 8*lc.cookie) // shifted out for no cookie
	c.RxCookie = c.TxCookie
	if lc.sub != "none" {
		c.L2Spec = l2tp.L2SpecDefault
	}
	if lc.sub == "seq" {
		c.Seq = l2tp.SeqSend
	}
	return c
}

// String labels the case.
func (lc layerCase) String() string {
	return fmt.Sprintf("udp=%v/cookie%d/%s/offset%d", lc.udp, lc.cookie*8, lc.sub, lc.offset)
}

// wantHeader spells out the header of packet number i, independently of
// the Encoder.
func (lc layerCase) wantHeader(i int) []byte {
	var h []byte
	if lc.udp {
		h = append(h, 0, 3, 0, 0)
	}
	h = append(h, 0, 0, 0, 0x10)
	h = append(h, []byte{0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88}[:lc.cookie]...)
	switch lc.sub {
	case "default":
		h = append(h, 0, 0, 0, 0)
	case "seq":
		h = binary.BigEndian.AppendUint32(h, 0x40000000|uint32(i))
	}
	return append(h, make([]byte, lc.offset)...)
}

// encapFrames encapsulates frame n times with c's Encoder.
func encapFrames(t testing.TB, c l2tp.Config, frame []byte, n int) [][]byte {
	t.Helper()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	e := l2tp.NewEncoder(c)
	var pkts [][]byte
	for range n {
		buf := make([]byte, e.HeaderLen()+len(frame))
		copy(buf[e.HeaderLen():], frame)
		pkts = append(pkts, e.Encap(buf, e.HeaderLen(), len(frame)))
	}
	return pkts
}

// checkLayer compares every field of a decoded data header with the case's
// packet number i.
func checkLayer(t *testing.T, l *L2TPv3, lc layerCase, i int, frame []byte) {
	t.Helper()
	want := lc.wantHeader(i)
	if l.IsControl || l.SessionID != 0x10 || l.ControlConnectionID != 0 {
		t.Errorf("IsControl=%v SessionID=%#x ControlConnectionID=%d", l.IsControl, l.SessionID, l.ControlConnectionID)
	}
	if wantVer := map[bool]uint8{true: 3, false: 0}[lc.udp]; l.Version != wantVer {
		t.Errorf("Version = %d, want %d", l.Version, wantVer)
	}
	wantCookie := []byte{0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88}[:lc.cookie]
	if !bytes.Equal(l.Cookie, wantCookie) || (lc.cookie == 0) != (l.Cookie == nil) {
		t.Errorf("Cookie = %x, want %x", l.Cookie, wantCookie)
	}
	wantSub := map[string]uint32{"none": 0, "default": 0, "seq": 0x40000000 | uint32(i)}[lc.sub]
	if l.HasSublayer != (lc.sub != "none") || l.Sublayer != wantSub ||
		l.SBit != (lc.sub == "seq") || l.Seq != wantSub&0xffffff {
		t.Errorf("HasSublayer=%v Sublayer=%#x SBit=%v Seq=%d, want sublayer %#x",
			l.HasSublayer, l.Sublayer, l.SBit, l.Seq, wantSub)
	}
	if !bytes.Equal(l.LayerContents(), want) {
		t.Errorf("Contents = %x, want %x", l.LayerContents(), want)
	}
	if !bytes.Equal(l.LayerPayload(), frame) || l.NextLayerType() != layers.LayerTypeEthernet {
		t.Errorf("Payload = %x (next %v), want the frame", l.LayerPayload(), l.NextLayerType())
	}
}

// TestLayerGolden decodes packets built by the Encoder for every layout,
// both as a DecodingLayer and through gopacket.NewPacket.
func TestLayerGolden(t *testing.T) {
	frame := innerFrame(t)
	for _, lc := range layerCases() {
		t.Run(lc.String(), func(t *testing.T) {
			c := lc.config()
			if got := DecodingOf(c); got != (LayerDecoding{c.Encap, c.RxCookieLen, c.L2Spec, c.Offset}) {
				t.Fatalf("LayerDecoding = %+v", got)
			}
			for i, pkt := range encapFrames(t, c, frame, 3) {
				l := &L2TPv3{Decoding: DecodingOf(c)}
				if err := l.DecodeFromBytes(pkt, gopacket.NilDecodeFeedback); err != nil {
					t.Fatalf("packet %d: %v", i, err)
				}
				checkLayer(t, l, lc, i, frame)

				p := gopacket.NewPacket(pkt, DecoderOf(c), gopacket.Default)
				if el := p.ErrorLayer(); el != nil {
					t.Fatalf("packet %d: %v", i, el.Error())
				}
				pl, ok := p.Layer(LayerTypeL2TPv3).(*L2TPv3)
				if !ok || p.Layer(layers.LayerTypeEthernet) == nil {
					t.Fatalf("packet %d layers: %v", i, p.Layers())
				}
				checkLayer(t, pl, lc, i, frame)
			}
		})
	}
}

// TestLayerHandWritten decodes a few packets written out byte by byte.
func TestLayerHandWritten(t *testing.T) {
	frame := pumptest.FrameN(0, 60)
	tests := []struct {
		hdr     string
		d       LayerDecoding
		session uint32
		cookie  string
		sub     uint32
		seq     uint32
	}{
		{"0003ffff 00abcdef", LayerDecoding{Encap: l2tp.EncapUDP}, 0xabcdef, "", 0, 0},
		{"00030000 00000020 cafef00d 40123456", LayerDecoding{l2tp.EncapUDP, 4, l2tp.L2SpecDefault, 0}, 0x20, "cafef00d", 0x40123456, 0x123456},
		{"ffffffff 0102030405060708 00000007 aaaa", LayerDecoding{l2tp.EncapIP, 8, l2tp.L2SpecDefault, 2}, 0xffffffff, "0102030405060708", 7, 7},
	}
	for _, tt := range tests {
		l := &L2TPv3{Decoding: tt.d}
		pkt := append(testhex.Decode(t, tt.hdr), frame...)
		if err := l.DecodeFromBytes(pkt, nil); err != nil {
			t.Fatalf("%s: %v", tt.hdr, err)
		}
		if l.SessionID != tt.session || !bytes.Equal(l.Cookie, testhex.Decode(t, tt.cookie)) || l.Sublayer != tt.sub ||
			l.Seq != tt.seq || l.SBit != (tt.sub&0x40000000 != 0) || !bytes.Equal(l.Payload, frame) {
			t.Errorf("%s: %+v", tt.hdr, l)
		}
	}
}

// TestLayerControl decodes control messages over UDP (T bit) and over IP
// (session 0): control, no Ethernet decoded, AVPs as payload.
func TestLayerControl(t *testing.T) {
	ctl := testhex.Decode(t, "c8030014 0000abcd 0001 0002 80080000000000060001") // SCCRQ-like, one AVP
	tests := []struct {
		name string
		d    LayerDecoding
		pkt  []byte
	}{
		{"udp", LayerDecoding{Encap: l2tp.EncapUDP, CookieLen: 8, L2Spec: l2tp.L2SpecDefault}, ctl},
		{"ip", LayerDecoding{Encap: l2tp.EncapIP, CookieLen: 4}, append([]byte{0, 0, 0, 0}, ctl...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := gopacket.NewPacket(tt.pkt, tt.d, gopacket.Default)
			l, ok := p.Layer(LayerTypeL2TPv3).(*L2TPv3)
			if !ok || p.ErrorLayer() != nil || len(p.Layers()) != 1 {
				t.Fatalf("layers %v, error %v", p.Layers(), p.ErrorLayer())
			}
			if !l.IsControl || l.Version != 3 || l.ControlConnectionID != 0xabcd || l.SessionID != 0 || l.Cookie != nil {
				t.Errorf("%+v", l)
			}
			if !bytes.Equal(l.Payload, ctl[12:]) || l.NextLayerType() != gopacket.LayerTypeZero {
				t.Errorf("payload %x next %v", l.Payload, l.NextLayerType())
			}
		})
	}
}

// TestLayerErrors checks that short packets, wrong versions and invalid
// decodings are errors (never panics), with the right sentinel.
func TestLayerErrors(t *testing.T) {
	udp := LayerDecoding{Encap: l2tp.EncapUDP, CookieLen: 8, L2Spec: l2tp.L2SpecDefault, Offset: 3}
	tests := []struct {
		name string
		d    LayerDecoding
		pkt  string
		want error
	}{
		{"udp empty", udp, "", ErrLayerTruncated},
		{"udp flags only", udp, "00030000", ErrLayerTruncated},
		{"udp no offset", udp, "00030000 00000010 1122334455667788 00000000", ErrLayerTruncated},
		{"udp version 2", udp, "00020000 00000010 1122334455667788 00000000 000000", ErrLayerVersion},
		{"udp control short", udp, "c8030014 0000abcd 0001", ErrLayerTruncated},
		{"udp control version 2", udp, "c8020014 0000abcd 00010002", ErrLayerVersion},
		{"ip short session", LayerDecoding{}, "000000", ErrLayerTruncated},
		{"ip short cookie", LayerDecoding{CookieLen: 4}, "00000010 112233", ErrLayerTruncated},
		{"ip control short", LayerDecoding{}, "00000000 c8030014", ErrLayerTruncated},
		{"cookie 5", LayerDecoding{CookieLen: 5}, "00000010 1122334455", ErrLayerDecoding},
		{"offset 257", LayerDecoding{Offset: 257}, "00000010", ErrLayerDecoding},
		{"encap 2", LayerDecoding{Encap: 2}, "00000010", ErrLayerDecoding},
		{"l2spec 2", LayerDecoding{L2Spec: 2}, "00000010", ErrLayerDecoding},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := &L2TPv3{Decoding: tt.d}
			if err := l.DecodeFromBytes(testhex.Decode(t, tt.pkt), gopacket.NilDecodeFeedback); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			p := gopacket.NewPacket(testhex.Decode(t, tt.pkt), tt.d, gopacket.Default)
			if len(tt.pkt) > 0 && p.ErrorLayer() == nil {
				t.Fatalf("NewPacket: no error layer in %v", p.Layers())
			}
		})
	}
}

// TestLayerTruncated cuts a packet of every layout at every length: below
// the header it is an error and the packet is marked truncated.
func TestLayerTruncated(t *testing.T) {
	for _, lc := range layerCases() {
		c := lc.config()
		pkt := encapFrames(t, c, pumptest.FrameN(0, 60), 1)[0]
		for n := range c.HeaderLen() {
			p := gopacket.NewPacket(pkt[:n], DecoderOf(c), gopacket.Default)
			l := &L2TPv3{Decoding: DecodingOf(c)}
			err := l.DecodeFromBytes(pkt[:n], gopacket.NilDecodeFeedback)
			if !errors.Is(err, ErrLayerTruncated) || (n > 0 && !p.Metadata().Truncated) {
				t.Fatalf("%v cut to %d: err %v, truncated %v", lc, n, err, p.Metadata().Truncated)
			}
		}
	}
}

// innerFrame is an Ethernet/IPv4/ICMP echo request, as a VM would send it.
func innerFrame(t testing.TB) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2},
		EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolICMPv4,
		SrcIP: net.IP{169, 254, 0, 1}, DstIP: net.IP{169, 254, 0, 2}}
	icmp := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: 7, Seq: 1}
	return serialize(t, eth, ip, icmp, gopacket.Payload("ping payload"))
}

// serialize builds a packet with lengths and checksums filled in.
func serialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return bytes.Clone(buf.Bytes())
}

// outerPacket wraps an L2TPv3 packet in IPv4/UDP (udp) or IPv6/115.
func outerPacket(t testing.TB, udp bool, l2 []byte) []byte {
	t.Helper()
	if udp {
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP,
			SrcIP: net.IP{192, 0, 2, 1}, DstIP: net.IP{192, 0, 2, 2}}
		u := &layers.UDP{SrcPort: 1701, DstPort: 1701}
		if err := u.SetNetworkLayerForChecksum(ip); err != nil {
			t.Fatal(err)
		}
		return serialize(t, ip, u, gopacket.Payload(l2))
	}
	ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: ipProtoL2TPv3,
		SrcIP: net.ParseIP("2001:db8::1"), DstIP: net.ParseIP("2001:db8::2")}
	return serialize(t, ip, gopacket.Payload(l2))
}

// tunnelCases are the two full-stack captures: IPv4/UDP port 1701 and
// IPv6/protocol 115, with cookies and sequence numbers.
func tunnelCases() []layerCase {
	return []layerCase{{udp: true, cookie: 4, sub: "seq"}, {udp: false, cookie: 8, sub: "seq", offset: 2}}
}

// TestLayerFullPacket decodes whole captured datagrams, outer IP to ICMP,
// after registering the tunnel's UDP port or IP protocol.
func TestLayerFullPacket(t *testing.T) {
	for _, lc := range tunnelCases() {
		t.Run(lc.String(), func(t *testing.T) {
			c := lc.config()
			if err := Register(c); err != nil {
				t.Fatal(err)
			}
			frame := innerFrame(t)
			first := layers.LayerTypeIPv4
			outer := []gopacket.LayerType{layers.LayerTypeIPv4, layers.LayerTypeUDP}
			if !lc.udp {
				first, outer = layers.LayerTypeIPv6, []gopacket.LayerType{layers.LayerTypeIPv6}
			}
			want := append(outer, LayerTypeL2TPv3, layers.LayerTypeEthernet, layers.LayerTypeIPv4,
				layers.LayerTypeICMPv4, gopacket.LayerTypePayload)
			pkt := outerPacket(t, lc.udp, encapFrames(t, c, frame, 1)[0])
			p := gopacket.NewPacket(pkt, first, gopacket.Default)
			if p.ErrorLayer() != nil {
				t.Fatal(p.ErrorLayer().Error())
			}
			var got []gopacket.LayerType
			for _, l := range p.Layers() {
				got = append(got, l.LayerType())
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("layers %v, want %v", got, want)
			}
			checkLayer(t, p.Layer(LayerTypeL2TPv3).(*L2TPv3), lc, 0, frame)
			icmp := p.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
			if icmp.Id != 7 || string(p.ApplicationLayer().Payload()) != "ping payload" {
				t.Errorf("inner ICMP %+v / %q", icmp, p.ApplicationLayer().Payload())
			}
		})
	}
}

// tunnelParser is a DecodingLayerParser for a whole captured datagram of
// c's tunnel, and the L2TPv3 layer it fills.
func tunnelParser(c l2tp.Config) (*gopacket.DecodingLayerParser, *L2TPv3, *layers.ICMPv4) {
	var (
		ip4  layers.IPv4
		ip6  layers.IPv6
		udp  layers.UDP
		eth  layers.Ethernet
		icmp layers.ICMPv4
		pay  gopacket.Payload
	)
	l2 := &L2TPv3{Decoding: DecodingOf(c)}
	first := layers.LayerTypeIPv4
	if c.Encap == l2tp.EncapIP {
		first = layers.LayerTypeIPv6
	}
	return gopacket.NewDecodingLayerParser(first, &ip4, &ip6, &udp, l2, &eth, &icmp, &pay), l2, &icmp
}

// TestLayerParser decodes the same captures with a DecodingLayerParser and
// checks that it allocates nothing per packet.
func TestLayerParser(t *testing.T) {
	for _, lc := range tunnelCases() {
		t.Run(lc.String(), func(t *testing.T) {
			c := lc.config()
			if err := Register(c); err != nil {
				t.Fatal(err)
			}
			frame := innerFrame(t)
			pkt := outerPacket(t, lc.udp, encapFrames(t, c, frame, 1)[0])
			parser, l2, icmp := tunnelParser(c)
			decoded := make([]gopacket.LayerType, 0, 8)
			if err := parser.DecodeLayers(pkt, &decoded); err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, typ := range decoded {
				if IsL2TPv3(typ) {
					n++
				}
			}
			if want := map[bool]int{true: 7, false: 6}[lc.udp]; n != 1 || len(decoded) != want {
				t.Fatalf("decoded %v", decoded)
			}
			checkLayer(t, l2, lc, 0, frame)
			if icmp.Id != 7 {
				t.Errorf("ICMP %+v", icmp)
			}
			allocs := testing.AllocsPerRun(100, func() { _ = parser.DecodeLayers(pkt, &decoded) })
			if allocs != 0 {
				t.Errorf("DecodeLayers: %v allocations per packet", allocs)
			}
		})
	}
}

// TestLayerRegistration checks the refusals, the routing types and the
// unconfigured LayerTypeL2TPv3.
func TestLayerRegistration(t *testing.T) {
	udp, ip := LayerDecoding{Encap: l2tp.EncapUDP, CookieLen: 4}, LayerDecoding{CookieLen: 4}
	if err := RegisterUDPPort(1, ip); !errors.Is(err, ErrLayerDecoding) {
		t.Errorf("RegisterUDPPort(IP decoding) = %v", err)
	}
	if err := RegisterIPProtocol(udp); !errors.Is(err, ErrLayerDecoding) {
		t.Errorf("RegisterIPProtocol(UDP decoding) = %v", err)
	}
	if err := RegisterUDPPort(1, LayerDecoding{Encap: l2tp.EncapUDP, CookieLen: 2}); !errors.Is(err, ErrLayerDecoding) {
		t.Errorf("RegisterUDPPort(cookie 2) = %v", err)
	}
	if udp.LayerType() != udp.LayerType() || udp.LayerType() == ip.LayerType() || !IsL2TPv3(udp.LayerType()) ||
		IsL2TPv3(layers.LayerTypeEthernet) || (LayerDecoding{Offset: -1}).LayerType() != LayerTypeL2TPv3 {
		t.Error("routing types are not one per decoding")
	}
	if s := udp.LayerType().String(); s != "L2TPv3(udp,cookie=4,l2spec=none,offset=0)" {
		t.Errorf("routing type name %q", s)
	}
	p := gopacket.NewPacket(testhex.Decode(t, "00000010 00000000"), LayerTypeL2TPv3, gopacket.Default)
	if p.ErrorLayer() == nil || !errors.Is(p.ErrorLayer().Error(), ErrLayerDecoding) {
		t.Errorf("LayerTypeL2TPv3 alone decoded: %v", p.Layers())
	}
}

// layerFuzzDecodings are the layouts FuzzLayer picks from, plus one invalid.
func layerFuzzDecodings() []LayerDecoding {
	var ds []LayerDecoding
	for _, lc := range layerCases() {
		ds = append(ds, DecodingOf(lc.config()))
	}
	return append(ds, LayerDecoding{Encap: l2tp.EncapUDP, CookieLen: 8, L2Spec: l2tp.L2SpecDefault, Offset: l2tp.MaxOffset},
		LayerDecoding{CookieLen: 3})
}

// FuzzLayer feeds arbitrary packets to every layout: decoding never panics,
// and a decoded header plus payload is exactly the packet.
func FuzzLayer(f *testing.F) {
	ds := layerFuzzDecodings()
	for i, lc := range layerCases() {
		pkt := encapFrames(f, lc.config(), innerFrame(f), 1)[0]
		f.Add(uint8(i), pkt)
		f.Add(uint8(i), pkt[:len(pkt)/3])
	}
	f.Add(uint8(0), testhex.Decode(f, "c8030014 0000abcd 0001 0002"))
	f.Add(uint8(1), testhex.Decode(f, "00000000 c8030014 0000abcd 0001 0002"))
	f.Fuzz(func(t *testing.T, which uint8, pkt []byte) {
		d := ds[int(which)%len(ds)]
		l := &L2TPv3{Decoding: d}
		if err := l.DecodeFromBytes(pkt, gopacket.NilDecodeFeedback); err == nil {
			n := len(l.Contents)
			if n+len(l.Payload) != len(pkt) || !bytes.Equal(l.Contents, pkt[:n]) || len(l.Cookie) != d.CookieLen && !l.IsControl {
				t.Fatalf("%v: contents %x payload %x cookie %x of %x", d, l.Contents, l.Payload, l.Cookie, pkt)
			}
		}
		// The whole stack behind the header too, with panics let through.
		gopacket.NewPacket(pkt, d, gopacket.DecodeOptions{SkipDecodeRecovery: true})
	})
}

// BenchmarkLayerParser decodes a whole IPv4/UDP/L2TPv3/Ethernet/IPv4/ICMP
// datagram with a DecodingLayerParser.
func BenchmarkLayerParser(b *testing.B) {
	c := tunnelCases()[0].config()
	if err := Register(c); err != nil {
		b.Fatal(err)
	}
	pkt := outerPacket(b, true, encapFrames(b, c, innerFrame(b), 1)[0])
	parser, _, _ := tunnelParser(c)
	decoded := make([]gopacket.LayerType, 0, 8)
	b.ReportAllocs()
	b.SetBytes(int64(len(pkt)))
	for b.Loop() {
		if err := parser.DecodeLayers(pkt, &decoded); err != nil {
			b.Fatal(err)
		}
	}
}
