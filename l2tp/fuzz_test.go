package l2tp

import (
	"testing"
	"unsafe"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/internal/testhex"
)

// fuzzConfigs are the decoder setups FuzzDecap picks from: one per golden
// entry and IP version, plus the sequencing receivers.
func fuzzConfigs() []Config {
	var cs []Config
	for _, g := range goldens {
		cs = append(cs, g.config(false), g.config(true))
	}
	return append(cs, seqConfig(SeqRecv), seqConfig(SeqBoth))
}

// FuzzDecap feeds arbitrary datagrams to every decoder setup: Decap must
// never panic, and a frame it returns lies inside the datagram and holds at
// least an Ethernet header.
func FuzzDecap(f *testing.F) {
	cs := fuzzConfigs()
	for i, g := range goldens {
		pkt := append(testhex.Decode(f, g.hdr), testFrame()...)
		f.Add(uint8(2*i), pkt)
		f.Add(uint8(2*i+1), pkt)
		if !g.udp {
			f.Add(uint8(2*i), append(ipv4Header(6), pkt...))
		}
	}
	f.Add(uint8(len(cs)-1), seqPacket(seqS|5))
	f.Fuzz(func(t *testing.T, which uint8, pkt []byte) {
		d := NewDecoder(cs[int(which)%len(cs)], nil)
		for range 3 { // repeat: exercise the sequence state too
			frame, reason, ok := d.Decap(pkt)
			if !ok {
				if int(reason) >= NumDrops {
					t.Fatalf("bad reason %d", reason)
				}
				continue
			}
			if len(frame) < ethHeaderLen {
				t.Fatalf("frame of %d bytes", len(frame))
			}
			end := uintptr(unsafe.Pointer(unsafe.SliceData(pkt))) + uintptr(len(pkt))
			if uintptr(unsafe.Pointer(unsafe.SliceData(frame)))+uintptr(len(frame)) != end {
				t.Fatal("frame does not end where the datagram ends")
			}
		}
	})
}

// FuzzParseOptions feeds arbitrary option strings: ParseOptions must never
// panic, and what it accepts must validate and survive String() unchanged.
func FuzzParseOptions(f *testing.F) {
	for _, s := range []string{
		minimal, minimal + ",udp,srcport=1701,dstport=1701,counter",
		"src=::1,dst=h,ipv6,txsession=1,cookie64,txcookie=0x1,rxcookie=2,seq=both,offset=7,pinpeer=off",
		"l2tpv3,id=x," + minimal + ",pincounter=yes,l2spec=default", ",,", "src", "=,=",
		minimal + ",underlay-mtu=1280,oversize=drop", minimal + ",underlay-mtu=0x240,oversize=fragment",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseOptions(s)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("ParseOptions(%q) accepted an invalid config: %v", s, err)
		}
		back, err := ParseOptions(c.String())
		if err != nil || back != c {
			t.Fatalf("round trip of %q via %q: %+v, %v", s, c.String(), back, err)
		}
	})
}
