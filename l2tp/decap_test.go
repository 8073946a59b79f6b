package l2tp

import (
	"encoding/binary"
	"testing"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/internal/testhex"
)

// seqConfig is UDP, session 0x10, 32-bit cookie 0x11223344, default
// sublayer with the given sequencing.
func seqConfig(seq SeqMode) Config {
	return Config{Src: "192.0.2.1", Dst: "192.0.2.2", Encap: EncapUDP, SrcPort: 1701, DstPort: 1701,
		SessionID: 0x10, PeerSessionID: 0x10, TxCookieLen: 4, RxCookieLen: 4, RxCookie: 0x11223344, TxCookie: 0x11223344,
		L2Spec: L2SpecDefault, Seq: seq}
}

// ipConfig is IP encapsulation over IPv4 or IPv6, session 0x10, no cookie,
// no sublayer.
func ipConfig(v6 bool) Config {
	c := Config{Src: "192.0.2.1", Dst: "192.0.2.2", SessionID: 0x10, PeerSessionID: 0x10}
	if v6 {
		c.Src, c.Dst, c.IPv6 = "2001:db8::1", "2001:db8::2", true
	}
	return c
}

// withFrame appends an n-byte frame to a hand-written header.
func withFrame(t *testing.T, hdr string, n int) []byte {
	return append(testhex.Decode(t, hdr), make([]byte, n)...)
}

// TestDecapDrops checks each drop reason (and the near misses that pass).
func TestDecapDrops(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		pkt  []byte
		ok   bool
		want Drop
	}{
		{"good", seqConfig(SeqRecv), withFrame(t, "00030000 00000010 11223344 40000000", 14), true, 0},
		{"reserved bits ignored", seqConfig(SeqRecv), withFrame(t, "7ff3ffff 00000010 11223344 40000000", 14), true, 0},
		{"wrong session", seqConfig(SeqRecv), withFrame(t, "00030000 00000011 11223344 40000000", 14), false, DropSession},
		{"wrong cookie", seqConfig(SeqRecv), withFrame(t, "00030000 00000010 11223345 40000000", 14), false, DropCookie},
		{"T bit", seqConfig(SeqRecv), withFrame(t, "c8030000 00000010 11223344 40000000", 14), false, DropControl},
		{"T bit short", seqConfig(SeqRecv), testhex.Decode(t, "c8030014"), false, DropControl},
		{"version 2", seqConfig(SeqRecv), withFrame(t, "00020000 00000010 11223344 40000000", 14), false, DropMalformed},
		{"empty", seqConfig(SeqRecv), nil, false, DropMalformed},
		{"flags only", seqConfig(SeqRecv), testhex.Decode(t, "00030000"), false, DropMalformed},
		{"short header", seqConfig(SeqRecv), testhex.Decode(t, "00030000 00000010 112233"), false, DropMalformed},
		{"frame 13 bytes", seqConfig(SeqRecv), withFrame(t, "00030000 00000010 11223344 40000000", 13), false, DropMalformed},
		{"no S under seq=recv", seqConfig(SeqRecv), withFrame(t, "00030000 00000010 11223344 00000000", 14), false, DropSequence},
		{"no S under seq=both", seqConfig(SeqBoth), withFrame(t, "00030000 00000010 11223344 00000007", 14), false, DropSequence},
		{"no S under seq=none", seqConfig(SeqNone), withFrame(t, "00030000 00000010 11223344 00000007", 14), true, 0},
		{"no S under seq=send", seqConfig(SeqSend), withFrame(t, "00030000 00000010 11223344 00000000", 14), true, 0},
		{"session 0 over UDP is data", func() Config { c := seqConfig(SeqNone); c.SessionID = 0; return c }(),
			withFrame(t, "00030000 00000000 11223344 00000000", 14), true, 0},
		{"IPv6 IP good", ipConfig(true), withFrame(t, "00000010", 14), true, 0},
		{"IPv6 IP session 0", ipConfig(true), withFrame(t, "00000000", 14), false, DropControl},
		{"IPv6 IP session 0 short", ipConfig(true), testhex.Decode(t, "00000000"), false, DropControl},
		{"IPv6 IP wrong session", ipConfig(true), withFrame(t, "00000011", 14), false, DropSession},
		{"IPv6 IP short", ipConfig(true), testhex.Decode(t, "000000"), false, DropMalformed},
		{"IPv4 IHL 5", ipConfig(false), append(ipv4Header(5), withFrame(t, "00000010", 14)...), true, 0},
		{"IPv4 IHL 15", ipConfig(false), append(ipv4Header(15), withFrame(t, "00000010", 14)...), true, 0},
		{"IPv4 session 0", ipConfig(false), append(ipv4Header(5), withFrame(t, "00000000", 14)...), false, DropControl},
		{"IPv4 IHL 4", ipConfig(false), append(testhex.Decode(t, "44000000 00000000 00730000 00000000 00000000"), withFrame(t, "00000010", 14)...), false, DropMalformed},
		{"IPv4 IHL past end", ipConfig(false), testhex.Decode(t, "4f000000 00000000 00730000 00000000 00000000 00000010"), false, DropMalformed},
		{"IPv4 version 6", ipConfig(false), append(testhex.Decode(t, "65000000 00000000 00730000 00000000 00000000"), withFrame(t, "00000010", 14)...), false, DropMalformed},
		{"IPv4 header cut", ipConfig(false), testhex.Decode(t, "45000000 00000000"), false, DropMalformed},
		{"IPv4 no payload", ipConfig(false), ipv4Header(5), false, DropMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			frame, reason, ok := NewDecoder(tt.cfg, nil).Decap(tt.pkt)
			if ok != tt.ok || (!ok && reason != tt.want) {
				t.Fatalf("Decap = ok %v reason %v, want ok %v reason %v", ok, reason, tt.ok, tt.want)
			}
			if ok && len(frame) < ethHeaderLen {
				t.Fatalf("frame of %d bytes delivered", len(frame))
			}
		})
	}
}

// seqPacket is a seqConfig packet carrying sublayer word w.
func seqPacket(w uint32) []byte {
	p := make([]byte, 16+14)
	binary.BigEndian.PutUint32(p, udpDataWord)
	binary.BigEndian.PutUint32(p[4:], 0x10)
	binary.BigEndian.PutUint32(p[8:], 0x11223344)
	binary.BigEndian.PutUint32(p[12:], w)
	return p
}

// TestDecapSequence feeds sequence numbers through a seq=recv receiver and
// checks what is accepted and how many are counted lost.
func TestDecapSequence(t *testing.T) {
	tests := []struct {
		name string
		ns   []uint32
		ok   []bool
		lost uint64
	}{
		{"in order from any start", []uint32{100, 101, 102}, []bool{true, true, true}, 0},
		{"gap counted lost", []uint32{1, 2, 6, 7}, []bool{true, true, true, true}, 3},
		{"replay dropped", []uint32{5, 6, 6, 5, 7}, []bool{true, true, false, false, true}, 0},
		{"24-bit wrap", []uint32{0xfffffe, 0xffffff, 0, 1}, []bool{true, true, true, true}, 0},
		{"half behind is old", []uint32{0x800000, 1}, []bool{true, false}, 0},
		{"largest gap taken as loss", []uint32{0, 0x10000}, []bool{true, true}, 0xffff},
		{"far ahead is a discontinuity", []uint32{0, 0x10001, 1}, []bool{true, false, true}, 0},
		{"resync far ahead, jump not lost", []uint32{0, 100000, 100001, 100002, 100003, 100004, 100005, 100006},
			[]bool{true, false, false, false, false, false, true, true}, 0},
		{"restart behind a number past half", []uint32{9999998, 9999999, 0, 1, 2, 3, 4, 5, 6},
			[]bool{true, true, false, false, false, false, false, true, true}, 0},
		{"resync after restart", []uint32{1000, 1001, 0, 1, 2, 3, 4, 5, 6},
			[]bool{true, true, false, false, false, false, false, true, true}, 0},
		{"broken run does not resync", []uint32{1000, 0, 1, 2, 9, 10, 11, 12, 13},
			[]bool{true, false, false, false, false, false, false, false, false}, 0},
		{"in-order packet resets the run", []uint32{1000, 0, 1, 2, 1001, 3, 4, 5, 6},
			[]bool{true, false, false, false, true, false, false, false, false}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s Stats
			d := NewDecoder(seqConfig(SeqRecv), &s)
			for i, ns := range tt.ns {
				_, reason, ok := d.Decap(seqPacket(seqS | ns))
				if ok != tt.ok[i] || (!ok && reason != DropSequence) {
					t.Fatalf("packet %d (ns %#x): ok %v reason %v, want ok %v", i, ns, ok, reason, tt.ok[i])
				}
			}
			if got := s.Snapshot().SeqLost; got != tt.lost {
				t.Fatalf("SeqLost = %d, want %d", got, tt.lost)
			}
		})
	}
}

// TestDecapPeerRestart: wherever our expected number is, a peer that
// restarts its numbering from 0 or 1 costs at most seqResync drops, and
// SeqLost moves by less than seqMaxGap (only when the restart lands within
// that gap ahead of us, near the 24-bit wrap, does it look like loss), never
// by millions.
func TestDecapPeerRestart(t *testing.T) {
	for _, expect := range []uint32{1000, 0x7ffff0, 0x800010, 10_000_000, 0xfff000, 0xfffff0} {
		for _, start := range []uint32{0, 1} {
			var s Stats
			d := NewDecoder(seqConfig(SeqRecv), &s)
			for ns := expect - 3; ns != expect; ns++ {
				if _, r, ok := d.Decap(seqPacket(seqS | ns)); !ok {
					t.Fatalf("expect %#x: ns %#x before the restart dropped: %v", expect, ns, r)
				}
			}
			dropped := 0
			for ns := start; ns < start+20; ns++ {
				if _, _, ok := d.Decap(seqPacket(seqS | ns)); !ok {
					dropped++
				}
			}
			lost := s.Snapshot().SeqLost
			if dropped > seqResync || lost >= seqMaxGap {
				t.Errorf("expected %#x, peer restarted at %d: %d dropped, SeqLost %d", expect, start, dropped, lost)
			}
		}
	}
}

// TestDecapIgnoresQEMUCounter checks that QEMU counter values, even ones
// with bit 30 set after 2^30 packets, are not read as RFC sequence numbers.
func TestDecapIgnoresQEMUCounter(t *testing.T) {
	c := seqConfig(SeqNone)
	c.Counter = CounterQEMU
	d := NewDecoder(c, nil)
	for _, w := range []uint32{1, 2, 0x40000000, 0x40000000, 7, 0xffffffff} {
		if _, reason, ok := d.Decap(seqPacket(w)); !ok {
			t.Fatalf("counter %#x dropped: %v", w, reason)
		}
	}
}

// TestCodecAllocs proves encap and decap allocate nothing.
func TestCodecAllocs(t *testing.T) {
	c := seqConfig(SeqBoth)
	e, d := NewEncoder(c), NewDecoder(c, nil)
	buf := make([]byte, 2048)
	n := testing.AllocsPerRun(1000, func() {
		pkt := e.Encap(buf, 64, 1500)
		if _, _, ok := d.Decap(pkt); !ok {
			panic("dropped")
		}
	})
	if n != 0 {
		t.Fatalf("%v allocations per encap+decap", n)
	}
}
