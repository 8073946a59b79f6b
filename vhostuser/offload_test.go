package vhostuser

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"
	"net"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/vhostuser/vhosttest"
)

// naiveSum is RFC 1071's reference loop, 16 bits at a time, to check sumBytes against.
func naiveSum(b []byte, acc uint32) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		acc += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		acc += uint32(b[len(b)-1]) << 8
	}
	for acc > 0xffff {
		acc = acc>>16 + acc&0xffff
	}
	return uint16(acc)
}

// TestChecksumGolden checks the classic IPv4 header example and sumBytes against the
// 16-bit reference for every length up to 300 and random contents.
func TestChecksumGolden(t *testing.T) {
	h, _ := hex.DecodeString("450000730000400040110000c0a80001c0a800c7")
	if got := checksumField(sumBytes(h, 0)); got != 0xb861 {
		t.Fatalf("IPv4 header checksum %#x, want 0xb861", got)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, 300)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	for n := range len(b) {
		for _, init := range []uint64{0, 6, 0xfffe, 0x1234_5678_9abc} {
			want := naiveSum(b[:n], uint32(fold16(init)))
			if got := fold16(sumBytes(b[:n], init)); got != want {
				t.Fatalf("len %d init %#x: sum %#x, want %#x", n, init, got, want)
			}
		}
	}
	if checksumField(0xffff) != 0xffff {
		t.Error("a zero checksum must be sent as 0xffff")
	}
}

// superFrame describes a TCP super-frame and builds it, or one of its segments, with
// gopacket: an implementation independent of ours, used as the reference.
type superFrame struct {
	v6      bool
	vlan    bool
	flags   uint8 // TCP flags: FIN 1, SYN 2, RST 4, PSH 8, ACK 16, URG 32, ECE 64, CWR 128
	payload []byte
	mss     int
}

// layersFor returns the frame's layers with payload p, IPv4 id and TCP seq as given.
func (s superFrame) layersFor(p []byte, id uint16, seq uint32, flags uint8, csum bool) []byte {
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2},
		EthernetType: layers.EthernetTypeIPv4}
	var ls []gopacket.SerializableLayer
	var ip gopacket.NetworkLayer
	if s.v6 {
		eth.EthernetType = layers.EthernetTypeIPv6
		ip6 := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP,
			SrcIP: net.ParseIP("fd00::1"), DstIP: net.ParseIP("fd00::2")}
		ip = ip6
		ls = append(ls, ip6)
	} else {
		ip4 := &layers.IPv4{Version: 4, TTL: 64, Id: id, Flags: layers.IPv4DontFragment, Protocol: layers.IPProtocolTCP,
			SrcIP: net.IPv4(10, 0, 0, 1), DstIP: net.IPv4(10, 0, 0, 2)}
		ip = ip4
		ls = append(ls, ip4)
	}
	tcp := &layers.TCP{SrcPort: 40000, DstPort: 5001, Seq: seq, Ack: 777, Window: 500,
		FIN: flags&1 != 0, SYN: flags&2 != 0, RST: flags&4 != 0, PSH: flags&8 != 0,
		ACK: flags&16 != 0, URG: flags&32 != 0, ECE: flags&64 != 0, CWR: flags&128 != 0,
		Options: []layers.TCPOption{{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop},
			{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: []byte{1, 2, 3, 4, 5, 6, 7, 8}}}}
	tcp.SetNetworkLayerForChecksum(ip)
	ls = append(ls, tcp, gopacket.Payload(p))
	if s.vlan {
		vlan := &layers.Dot1Q{VLANIdentifier: 42, Type: eth.EthernetType}
		eth.EthernetType = layers.EthernetTypeDot1Q
		ls = append([]gopacket.SerializableLayer{vlan}, ls...)
	}
	ls = append([]gopacket.SerializableLayer{eth}, ls...)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: csum}, ls...); err != nil {
		panic(err)
	}
	return bytes.Clone(buf.Bytes())
}

// hdr is the virtio-net header a Linux guest sends with the super-frame.
func (s superFrame) hdr() []byte {
	h := make([]byte, netHdrLen)
	l4 := 14 + 20
	if s.v6 {
		l4 = 14 + 40
	}
	if s.vlan {
		l4 += 4
	}
	h[0], h[1] = hdrFNeedsCsum, gsoTCPv4
	if s.v6 {
		h[1] = gsoTCPv6
	}
	binary.LittleEndian.PutUint16(h[2:], uint16(l4+32))
	binary.LittleEndian.PutUint16(h[4:], uint16(s.mss))
	binary.LittleEndian.PutUint16(h[6:], uint16(l4))
	binary.LittleEndian.PutUint16(h[8:], 16)
	return h
}

// frame is the super-frame as the guest hands it over (no checksums filled in).
func (s superFrame) frame() []byte { return s.layersFor(s.payload, 1000, 5000, s.flags, false) }

// segments is what the wire must carry: each segment built and checksummed by gopacket.
func (s superFrame) segments() [][]byte {
	var out [][]byte
	n := max(1, (len(s.payload)+s.mss-1)/s.mss)
	for i := range n {
		p := s.payload[min(i*s.mss, len(s.payload)):min((i+1)*s.mss, len(s.payload))]
		f := s.flags
		if i != n-1 {
			f &^= tcpFIN | tcpPSH
		}
		if i != 0 {
			f &^= tcpCWR
		}
		out = append(out, s.layersFor(p, 1000+uint16(i), 5000+uint32(i*s.mss), f, true))
	}
	return out
}

// cutWithPlan segments s through planTSO and tsoPlan.segment alone (no ring).
func cutWithPlan(t *testing.T, s superFrame) [][]byte {
	t.Helper()
	f := s.frame()
	h := parseNetHdr(s.hdr())
	p, err := planTSO(h, f[:min(len(f), tsoHeadLen)], len(f), 9000)
	if err != nil {
		t.Fatalf("planTSO: %v", err)
	}
	var out [][]byte
	for i := range p.segs {
		m := p.segLen(i)
		seg := append(bytes.Clone(f[:p.hdrLen]), f[p.hdrLen+i*p.mss:p.hdrLen+i*p.mss+m]...)
		p.segment(seg, i)
		out = append(out, seg)
	}
	return out
}

var payload = frame(5000, 9)

// superFrames are the layouts segmentation must get right.
var superFrames = map[string]superFrame{
	"tcp4":          {flags: 16 | 8 | 1 | 128, payload: payload, mss: 1448},
	"tcp6":          {v6: true, flags: 16 | 8, payload: payload[:3000], mss: 1000},
	"tcp4 vlan":     {vlan: true, flags: 16 | 8, payload: payload[:2000], mss: 1460},
	"tcp6 vlan":     {v6: true, vlan: true, flags: 16, payload: payload[:4001], mss: 1440},
	"no payload":    {flags: 16 | 1, payload: nil, mss: 1448},
	"one short seg": {flags: 16 | 8, payload: payload[:100], mss: 1448},
}

// TestSegmentAgainstGopacket checks every segment, byte for byte, against gopacket's
// serialization with computed checksums.
func TestSegmentAgainstGopacket(t *testing.T) {
	for name, s := range superFrames {
		t.Run(name, func(t *testing.T) {
			got, want := cutWithPlan(t, s), s.segments()
			if len(got) != len(want) {
				t.Fatalf("%d segments, want %d", len(got), len(want))
			}
			for i := range got {
				if !bytes.Equal(got[i], want[i]) {
					t.Errorf("segment %d:\n got %x\nwant %x", i, got[i], want[i])
				}
			}
		})
	}
}

// TestSegmentGolden pins the bytes of one small case: an IPv4 super-frame with 7 payload
// bytes, MSS 4, flags ACK|PSH|FIN, cut into two segments.
func TestSegmentGolden(t *testing.T) {
	s := superFrame{flags: 16 | 8 | 1, payload: []byte("ABCDEFG"), mss: 4}
	got := cutWithPlan(t, s)
	want := []string{
		"020000000002020000000001080045000038" + "03e8" + "4000400622d60a0000010a000002" + // IPv4, id 1000
			"9c4013890000138800000309801001f405ce0000" + "0101080a0102030405060708" + "41424344", // seq 5000, ACK
		"020000000002020000000001080045000037" + "03e9" + "4000400622d60a0000010a000002" + // IPv4, id 1001
			"9c4013890000138c00000309801901f4fe010000" + "0101080a0102030405060708" + "454647", // seq 5004, ACK|PSH|FIN
	}
	ref := s.segments()
	for i := range want {
		if i >= len(got) || hex.EncodeToString(got[i]) != want[i] || hex.EncodeToString(ref[i]) != want[i] {
			t.Errorf("segment %d:\n got %x\nwant %s\n ref %x", i, got[i], want[i], ref[i])
		}
	}
}

// TestPlanRefuses checks super-frames whose headers disagree with the virtio-net header.
func TestPlanRefuses(t *testing.T) {
	s := superFrames["tcp4"]
	f := s.frame()
	ok := parseNetHdr(s.hdr())
	cases := map[string]struct {
		h     func(h netHdr) netHdr
		frame func(f []byte) []byte
		room  int
		want  error
	}{
		"UDP GSO":        {h: func(h netHdr) netHdr { h.gsoType = 3; return h }, want: errGSOType},
		"no NEEDS_CSUM":  {h: func(h netHdr) netHdr { h.flags = 0; return h }, want: errGSOCsum},
		"csum offset 6":  {h: func(h netHdr) netHdr { h.csumOffset = 6; return h }, want: errGSOCsum},
		"v6 type on v4":  {h: func(h netHdr) netHdr { h.gsoType = gsoTCPv6; return h }, want: errGSOHeaders},
		"csum_start off": {h: func(h netHdr) netHdr { h.csumStart = 30; return h }, want: errGSOHeaders},
		"csum_start far": {h: func(h netHdr) netHdr { h.csumStart = 250; return h }, want: errGSOHeaders},
		"UDP inside":     {frame: func(f []byte) []byte { f[14+9] = 17; return f }, want: errGSOHeaders},
		"IP version 6":   {frame: func(f []byte) []byte { f[14] = 0x65; return f }, want: errGSOHeaders},
		"ARP ethertype":  {frame: func(f []byte) []byte { f[12], f[13] = 8, 6; return f }, want: errGSOHeaders},
		"doff 2":         {frame: func(f []byte) []byte { f[34+12] = 0x20; return f }, want: errGSOHeaders},
		"short frame":    {frame: func(f []byte) []byte { return f[:40] }, want: errGSOHeaders},
		"gso_size 0":     {h: func(h netHdr) netHdr { h.gsoSize = 0; return h }, want: errGSOSize},
		"mss > buffer":   {room: 1000, want: errGSOSize},
		"too large":      {frame: func(f []byte) []byte { return append(f, make([]byte, maxTSOFrame)...) }, want: errGSOTooLarge},
	}
	for name, c := range cases {
		h, fr, room := ok, bytes.Clone(f), 9000
		if c.h != nil {
			h = c.h(h)
		}
		if c.frame != nil {
			fr = c.frame(fr)
		}
		if c.room != 0 {
			room = c.room
		}
		if _, err := planTSO(h, fr[:min(len(fr), tsoHeadLen)], len(fr), room); err != c.want {
			t.Errorf("%s: planTSO = %v, want %v", name, err, c.want)
		}
	}
}

// TestCompleteCsum fills in TCP and UDP checksums the way a guest with CSUM leaves them
// (the field holding the pseudo-header sum) and compares with gopacket's.
func TestCompleteCsum(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		for _, udp := range []bool{false, true} {
			want := csumFrame(v6, udp, true)
			f := csumFrame(v6, udp, false)
			l4 := 34
			if v6 {
				l4 = 54
			}
			off := 16
			if udp {
				off = 6
			}
			var pseudo uint64
			if v6 {
				pseudo = sumBytes(f[22:54], 0)
			} else {
				pseudo = sumBytes(f[26:34], 0)
			}
			pseudo += uint64(len(f) - l4)
			if udp {
				pseudo += 17
			} else {
				pseudo += 6
			}
			binary.BigEndian.PutUint16(f[l4+off:], fold16(pseudo))
			h := netHdr{flags: hdrFNeedsCsum, csumStart: uint16(l4), csumOffset: uint16(off)}
			if err := completeCsum(f, h); err != nil || !bytes.Equal(f, want) {
				t.Errorf("v6=%v udp=%v: %v\n got %x\nwant %x", v6, udp, err, f, want)
			}
			h.csumOffset = uint16(len(f) - l4 - 1)
			if completeCsum(f, h) != errCsumRange {
				t.Errorf("v6=%v udp=%v: field past the end accepted", v6, udp)
			}
		}
	}
}

// csumFrame builds a TCP or UDP frame with 333 payload bytes, checksums computed or zero.
func csumFrame(v6, udp, csum bool) []byte {
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2},
		EthernetType: layers.EthernetTypeIPv4}
	proto := layers.IPProtocolTCP
	if udp {
		proto = layers.IPProtocolUDP
	}
	var ip gopacket.NetworkLayer
	var ipl gopacket.SerializableLayer
	if v6 {
		eth.EthernetType = layers.EthernetTypeIPv6
		ip6 := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: proto, SrcIP: net.ParseIP("fd00::1"), DstIP: net.ParseIP("fd00::2")}
		ip, ipl = ip6, ip6
	} else {
		ip4 := &layers.IPv4{Version: 4, TTL: 64, Protocol: proto, SrcIP: net.IPv4(10, 0, 0, 1), DstIP: net.IPv4(10, 0, 0, 2)}
		ip, ipl = ip4, ip4
	}
	var l4 gopacket.SerializableLayer
	if udp {
		u := &layers.UDP{SrcPort: 1, DstPort: 2}
		u.SetNetworkLayerForChecksum(ip)
		l4 = u
	} else {
		tc := &layers.TCP{SrcPort: 1, DstPort: 2, Seq: 3, ACK: true, Window: 9}
		tc.SetNetworkLayerForChecksum(ip)
		l4 = tc
	}
	buf := gopacket.NewSerializeBuffer()
	gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ipl, l4, gopacket.Payload(frame(333, 5)))
	b := bytes.Clone(buf.Bytes())
	if !csum {
		off := 34
		if v6 {
			off = 54
		}
		if udp {
			off += 6
		} else {
			off += 16
		}
		b[off], b[off+1] = 0, 0
	}
	return b
}

// TestTSOThroughRing sends super-frames split over descriptors (one indirect) and reads them
// with only three buffers per call: each segment must come out whole and in order, and a
// super-frame larger than a batch is held: its chain goes back to the guest with its first
// segments.
func TestTSOThroughRing(t *testing.T) {
	r := newRig(t, rigOpts{features: allFeatures | vhosttest.FCsum | vhosttest.FHostTSO4 | vhosttest.FHostTSO6})
	s4, s6 := superFrames["tcp4"], superFrames["tcp6 vlan"]
	h1 := r.putTXHdr(s4.hdr(), s4.frame(), false, 12, 30, 700, 3000)
	h2 := r.putTXHdr(s6.hdr(), s6.frame(), true, 5, 100)
	r.tx.PublishKick()
	want := append(s4.segments(), s6.segments()...)
	bufs := [][]byte{make([]byte, 2000), make([]byte, 2000), make([]byte, 2000)}
	sizes := make([]int, 3)
	var got [][]byte
	for calls := 0; len(got) < len(want); calls++ {
		n, err := r.q.ReadFrames(bufs, sizes, 8)
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			got = append(got, bytes.Clone(bufs[i][8:8+sizes[i]]))
		}
		if calls == 0 {
			// Held: the chain is back with the guest once its first segments are out.
			if id, _, ok := r.tx.PopUsed(); !ok || id != h1 {
				t.Errorf("after the first segments: used id %d ok %v, want %d", id, ok, h1)
			}
		}
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Errorf("segment %d differs:\n got %x\nwant %x", i, got[i], want[i])
		}
	}
	if id, _, ok := r.tx.PopUsed(); !ok || id != h2 {
		t.Errorf("used id %d ok %v, want %d", id, ok, h2)
	}
	st := r.srv.Stats()
	if st.TXFrames != uint64(len(want)) || st.TXSegmented != 2 || st.TXDropped != 0 {
		t.Errorf("stats: frames %d segmented %d dropped %d", st.TXFrames, st.TXSegmented, st.TXDropped)
	}
}

// TestOffloadDrops sends offload requests that cannot be honoured between good frames: each
// is dropped and counted, the frames around it pass, a checksum request is completed.
func TestOffloadDrops(t *testing.T) {
	r := newRig(t, rigOpts{features: allFeatures | vhosttest.FCsum | vhosttest.FHostTSO4})
	s := superFrames["tcp4"]
	udp := superFrame{flags: 16, payload: payload[:3000], mss: 1000}
	badType := udp.hdr()
	badType[1] = 3 // UDP fragmentation offload, never offered
	r.putTXHdr(badType, udp.frame(), false)
	bigMSS := s.hdr()
	binary.LittleEndian.PutUint16(bigMSS[4:], 4000) // segments larger than the 2000-byte buffers
	r.putTXHdr(bigMSS, s.frame(), false)
	csumHdr := make([]byte, netHdrLen)
	csumHdr[0] = hdrFNeedsCsum
	binary.LittleEndian.PutUint16(csumHdr[6:], 34)
	binary.LittleEndian.PutUint16(csumHdr[8:], 3000) // past the end
	r.putTXHdr(csumHdr, csumFrame(false, true, false), false)
	good := csumFrame(false, false, false)
	binary.BigEndian.PutUint16(good[34+16:], fold16(sumBytes(good[26:34], 6+uint64(len(good)-34))))
	binary.LittleEndian.PutUint16(csumHdr[8:], 16)
	r.putTXHdr(csumHdr, good, true, 20, 40)
	r.tx.PublishKick()
	bufs := [][]byte{make([]byte, 2000), make([]byte, 2000)}
	sizes := make([]int, 2)
	n, err := r.q.ReadFrames(bufs, sizes, 0)
	if err != nil || n != 1 || !bytes.Equal(bufs[0][:sizes[0]], csumFrame(false, false, true)) {
		t.Fatalf("ReadFrames = %d, %v; frame %x", n, err, bufs[0][:sizes[0]])
	}
	if st := r.srv.Stats(); st.TXDropped != 3 || st.TXChecksummed != 1 || st.RingViolations != 0 {
		t.Errorf("stats: dropped %d checksummed %d violations %d", st.TXDropped, st.TXChecksummed, st.RingViolations)
	}
}

// TestNoOffloadOffer checks NoOffload withholds exactly the offload bits.
func TestNoOffloadOffer(t *testing.T) {
	on, off := offeredFeatures(&Config{}), offeredFeatures(&Config{NoOffload: true})
	if on^off != featNetCsum|featNetHostTSO4|featNetHostTSO6|featNetHostECN {
		t.Errorf("offload bits %#x", on^off)
	}
}

// FuzzTSO feeds planTSO and segment arbitrary virtio-net headers and frames: nothing may
// panic, every segment must fit the room given, and the segments' payloads, joined, must
// be the super-frame's payload.
func FuzzTSO(f *testing.F) {
	for _, s := range superFrames {
		f.Add(append(s.hdr(), s.frame()...))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < netHdrLen {
			return
		}
		h, fr := parseNetHdr(data), data[netHdrLen:]
		if h.gsoType == gsoNone {
			if h.flags&hdrFNeedsCsum != 0 {
				completeCsum(bytes.Clone(fr), h)
			}
			return
		}
		const room = 2000
		p, err := planTSO(h, fr[:min(len(fr), tsoHeadLen)], len(fr), room)
		if err != nil {
			return
		}
		var joined []byte
		for i := range p.segs {
			m := p.segLen(i)
			seg := append(bytes.Clone(fr[:p.hdrLen]), fr[p.hdrLen+i*p.mss:p.hdrLen+i*p.mss+m]...)
			if len(seg) > room {
				t.Fatalf("segment %d is %d bytes, room %d", i, len(seg), room)
			}
			p.segment(seg, i)
			joined = append(joined, seg[p.hdrLen:]...)
		}
		if !bytes.Equal(joined, fr[p.hdrLen:]) {
			t.Fatal("segments do not add up to the payload")
		}
	})
}

// TestTSOShortBuffer hands a smaller second buffer than the first: the segments that fit
// are returned, the rest of the super-frame is dropped and counted, and nothing panics.
func TestTSOShortBuffer(t *testing.T) {
	r := newRig(t, rigOpts{features: allFeatures | vhosttest.FCsum | vhosttest.FHostTSO4})
	s := superFrames["tcp4"]
	r.putTXHdr(s.hdr(), s.frame(), false)
	r.tx.PublishKick()
	bufs := [][]byte{make([]byte, 2000), make([]byte, 4)}
	sizes := make([]int, 2)
	n, err := r.q.ReadFrames(bufs, sizes, 8)
	if err != nil || n != 1 || !bytes.Equal(bufs[0][8:8+sizes[0]], s.segments()[0]) {
		t.Fatalf("ReadFrames = %d, %v", n, err)
	}
	if st := r.srv.Stats(); st.TXDropped != 1 || st.TXSegmented != 0 {
		t.Errorf("stats: dropped %d segmented %d", st.TXDropped, st.TXSegmented)
	}
}
