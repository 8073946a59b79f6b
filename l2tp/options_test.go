package l2tp

import (
	"errors"
	"strings"
	"testing"
)

// base is the Config most accepted-spelling cases start from:
// src=192.0.2.1,dst=198.51.100.7,txsession=0x10 over IP.
var base = Config{Src: "192.0.2.1", Dst: "198.51.100.7", SessionID: 0x10, PeerSessionID: 0x10, PinPeer: true}

// with returns base changed by f.
func with(f func(c *Config)) Config {
	c := base
	f(&c)
	return c
}

const minimal = "src=192.0.2.1,dst=198.51.100.7,txsession=0x10"

// udpOn is base over UDP port 1701 both ways.
func udpOn(c *Config) { c.Encap, c.SrcPort, c.DstPort = EncapUDP, 1701, 1701 }

// TestParseOptionsAccepts checks every accepted spelling and its meaning.
func TestParseOptionsAccepts(t *testing.T) {
	tests := []struct {
		in   string
		want Config
	}{
		{minimal, base},
		{minimal + ",", base},
		{"l2tpv3,id=n0," + minimal, base},
		{"src=192.0.2.1,dst=198.51.100.7,txsession=16", base},
		{"src=192.0.2.1,dst=198.51.100.7,txsession=0X10,rxsession=0x10", base},
		{minimal + ",rxsession=0x20", with(func(c *Config) { c.SessionID = 0x20 })},
		{minimal + ",rxsession=4294967295", with(func(c *Config) { c.SessionID = 0xffffffff })},
		// QEMU's documented example
		{"src=4.2.3.1,dst=1.2.3.4,udp,srcport=16384,dstport=16384,rxsession=0xffffffff,txsession=0xffffffff,counter",
			Config{Src: "4.2.3.1", Dst: "1.2.3.4", Encap: EncapUDP, SrcPort: 16384, DstPort: 16384,
				SessionID: 0xffffffff, PeerSessionID: 0xffffffff, L2Spec: L2SpecDefault, Counter: CounterQEMU, PinPeer: true}},
		{minimal + ",udp,srcport=1701,dstport=1701", with(udpOn)},
		{minimal + ",udp=on,srcport=1701,dstport=1701", with(udpOn)},
		{minimal + ",udp=yes,srcport=1701,dstport=01701", with(udpOn)},
		{minimal + ",udp=true,srcport=1701,dstport=1701", with(udpOn)},
		{minimal + ",udp=off", base},
		{minimal + ",udp=no,ipv6=false", base},
		{minimal + ",udp=false,ipv6=off", base},
		{"src=2001:db8::1,dst=2001:db8::2,txsession=0x10,ipv6", with(func(c *Config) {
			c.Src, c.Dst, c.IPv6 = "2001:db8::1", "2001:db8::2", true
		})},
		{minimal + ",txcookie=0x11223344,rxcookie=0x55667788", with(func(c *Config) {
			c.TxCookieLen, c.RxCookieLen, c.TxCookie, c.RxCookie = 4, 4, 0x11223344, 0x55667788
		})},
		{minimal + ",cookie64=off,txcookie=0xffffffff,rxcookie=0", with(func(c *Config) {
			c.TxCookieLen, c.RxCookieLen, c.TxCookie, c.RxCookie = 4, 4, 0xffffffff, 0
		})},
		{minimal + ",cookie64,txcookie=0x1122334455667788,rxcookie=1", with(func(c *Config) {
			c.TxCookieLen, c.RxCookieLen, c.TxCookie, c.RxCookie = 8, 8, 0x1122334455667788, 1
		})},
		{minimal + ",cookie64=on,txcookie=18446744073709551615,rxcookie=2", with(func(c *Config) {
			c.TxCookieLen, c.RxCookieLen, c.TxCookie, c.RxCookie = 8, 8, 0xffffffffffffffff, 2
		})},
		{minimal + ",cookie64=on", base}, // no cookies: nothing to size
		{minimal + ",txcookie64=on,rxcookie64=off,txcookie=0x1122334455667788,rxcookie=0x99aabbcc", with(func(c *Config) {
			c.TxCookieLen, c.RxCookieLen, c.TxCookie, c.RxCookie = 8, 4, 0x1122334455667788, 0x99aabbcc
		})},
		{minimal + ",rxcookie64,txcookie=0x99aabbcc,rxcookie=0x1122334455667788", with(func(c *Config) {
			c.TxCookieLen, c.RxCookieLen, c.TxCookie, c.RxCookie = 4, 8, 0x99aabbcc, 0x1122334455667788
		})},
		{minimal + ",txcookie64=off,rxcookie64=off,txcookie=1,rxcookie=2", with(func(c *Config) {
			c.TxCookieLen, c.RxCookieLen, c.TxCookie, c.RxCookie = 4, 4, 1, 2
		})},
		{minimal + ",counter=on", with(func(c *Config) { c.L2Spec, c.Counter = L2SpecDefault, CounterQEMU })},
		{minimal + ",counter=off", base},
		{minimal + ",counter=off,l2spec=default", with(func(c *Config) { c.L2Spec = L2SpecDefault })},
		{minimal + ",pincounter", with(func(c *Config) { c.L2Spec, c.Counter = L2SpecDefault, CounterPinned })},
		{minimal + ",counter,pincounter=on", with(func(c *Config) { c.L2Spec, c.Counter = L2SpecDefault, CounterPinned })},
		{minimal + ",counter=on,l2spec=default", with(func(c *Config) { c.L2Spec, c.Counter = L2SpecDefault, CounterQEMU })},
		{minimal + ",l2spec=default", with(func(c *Config) { c.L2Spec = L2SpecDefault })},
		{minimal + ",l2spec=none", base},
		{minimal + ",seq=none", base},
		{minimal + ",seq=send", with(func(c *Config) { c.L2Spec, c.Seq = L2SpecDefault, SeqSend })},
		{minimal + ",seq=recv", with(func(c *Config) { c.L2Spec, c.Seq = L2SpecDefault, SeqRecv })},
		{minimal + ",seq=both,l2spec=default", with(func(c *Config) { c.L2Spec, c.Seq = L2SpecDefault, SeqBoth })},
		{minimal + ",offset=256", with(func(c *Config) { c.Offset = 256 })},
		{minimal + ",offset=0x10", with(func(c *Config) { c.Offset = 16 })},
		{minimal + ",offset=0", base},
		{minimal + ",pinpeer=off", with(func(c *Config) { c.PinPeer = false })},
		{minimal + ",vlan", with(func(c *Config) { c.VLAN = true })},
		{minimal + ",vlan=off", base},
		{minimal + ",tos=0xb8,ttl=255", with(func(c *Config) { c.TOS, c.TTL = 0xb8, 255 })},
		{minimal + ",tos=0,ttl=1", with(func(c *Config) { c.TTL = 1 })},
		{minimal + ",tos=inherit", with(func(c *Config) { c.TOSInherit = true })},
		{"src=192.0.2.1,dst=peer.example,txsession=0x10", with(func(c *Config) { c.Dst, c.PinPeer = "peer.example", false })},
		{"src=192.0.2.1,dst=peer.example,txsession=0x10,pinpeer", with(func(c *Config) { c.Dst = "peer.example" })},
		{"src=192.0.2.1,dst=peer.example,txsession=0x10,udp,srcport=1,dstport=65535,pinpeer=on",
			with(func(c *Config) { c.Dst, c.Encap, c.SrcPort, c.DstPort = "peer.example", EncapUDP, 1, 65535 })},
		{minimal + ",underlay-mtu=1280", with(func(c *Config) { c.UnderlayMTU = 1280 })},
		{minimal + ",underlay-mtu=576,oversize=drop", with(func(c *Config) { c.UnderlayMTU, c.Oversize = 576, OversizeDrop })},
		{minimal + ",underlay-mtu=0x2328", with(func(c *Config) { c.UnderlayMTU = 9000 })},
		{minimal + ",underlay-mtu=65535", with(func(c *Config) { c.UnderlayMTU = 65535 })},
		{minimal + ",oversize=fragment", base},
		{minimal + ",oversize=drop", with(func(c *Config) { c.Oversize = OversizeDrop })},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseOptions(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got  %+v\nwant %+v", got, tt.want)
			}
			back, err := ParseOptions(got.String())
			if err != nil || back != got {
				t.Fatalf("round trip of %q: %+v, %v", got.String(), back, err)
			}
		})
	}
}

// TestParseOptionsErrors checks every refusal and its exact message.
func TestParseOptionsErrors(t *testing.T) {
	const udp = minimal + ",udp,srcport=1701,dstport=1701"
	tests := []struct{ in, msg string }{
		{"", `l2tpv3: missing src`},
		{"dst=1.2.3.4,txsession=1", `l2tpv3: missing src`},
		{"src=1.2.3.4,txsession=1", `l2tpv3: missing dst`},
		{"src=1.2.3.4,dst=1.2.3.5", `l2tpv3: missing txsession`},
		{minimal + ",srcport=1701", `l2tpv3: srcport given without udp=on`},
		{minimal + ",udp=off,dstport=1701", `l2tpv3: dstport given without udp=on`},
		{minimal + ",udp", `l2tpv3: missing srcport (needed with udp=on)`},
		{minimal + ",udp,srcport=1701", `l2tpv3: missing dstport (needed with udp=on)`},
		{minimal + ",udp,srcport=0,dstport=1", `l2tpv3: srcport=0: must be 1..65535`},
		{minimal + ",udp,srcport=l2tp,dstport=1", `l2tpv3: srcport="l2tp": not a port number (decimal 1..65535)`},
		{minimal + ",udp,srcport=1,dstport=65536", `l2tpv3: dstport="65536": not a port number (decimal 1..65535)`},
		{minimal + ",udp,srcport=1,dstport=0x10", `l2tpv3: dstport="0x10": not a port number (decimal 1..65535)`},
		{minimal + ",txcookie=1", `l2tpv3: txcookie set without rxcookie`},
		{minimal + ",rxcookie=1", `l2tpv3: rxcookie set without txcookie`},
		{minimal + ",txcookie=1,rxcookie=0x1ffffffff", `l2tpv3: rxcookie=0x1ffffffff is wider than 32 bits (set cookie64=on, or rxcookie64=on for this direction only)`},
		{minimal + ",cookie64=off,txcookie=0x100000000,rxcookie=1", `l2tpv3: txcookie=0x100000000 is wider than 32 bits (set cookie64=on, or txcookie64=on for this direction only)`},
		{minimal + ",cookie64,txcookie=0x10000000000000000,rxcookie=1", `l2tpv3: txcookie="0x10000000000000000": wider than 64 bits`},
		{minimal + ",offset=300", `l2tpv3: offset=300: must be 0..256`},
		{minimal + ",offset=-1", `l2tpv3: offset="-1": not a number`},
		{minimal + ",fooo=1", `l2tpv3: unknown key "fooo"`},
		{minimal + ",Udp", `l2tpv3: unknown key "Udp"`},
		{minimal + ",src=192.0.2.3", `l2tpv3: duplicate key "src"`},
		{minimal + ",udp,udp=on", `l2tpv3: duplicate key "udp"`},
		{"src=,dst=1.2.3.4,txsession=1", `l2tpv3: empty value for key "src"`},
		{minimal + ",udp=", `l2tpv3: empty value for key "udp"`},
		{"src,dst=1.2.3.4,txsession=1", `l2tpv3: key "src" needs a value (src=…)`},
		{minimal + ",,udp", `l2tpv3: empty option between commas (QEMU's ",," escape is not supported)`},
		{"src=192.0.2.1,dst=198.51.100.7,txsession=12x", `l2tpv3: txsession="12x": not a number`},
		{"src=192.0.2.1,dst=198.51.100.7,txsession=0x", `l2tpv3: txsession="0x": not a number`},
		{"src=192.0.2.1,dst=198.51.100.7,txsession=+5", `l2tpv3: txsession="+5": not a number`},
		{"src=192.0.2.1,dst=198.51.100.7,txsession=010", `l2tpv3: txsession="010": leading zero (QEMU would read octal): write it in decimal or 0x hex`},
		{"src=192.0.2.1,dst=198.51.100.7,txsession=0x100000000", `l2tpv3: txsession=0x100000000: wider than 32 bits`},
		{"src=192.0.2.1,dst=198.51.100.7,txsession=4294967296", `l2tpv3: txsession=4294967296: wider than 32 bits`},
		{minimal + ",udp=maybe", `l2tpv3: udp="maybe": not a boolean (on/off, yes/no, true/false)`},
		{minimal + ",pinpeer=ON", `l2tpv3: pinpeer="ON": not a boolean (on/off, yes/no, true/false)`},
		{"src=192.0.2.1,dst=198.51.100.7,txsession=0", `l2tpv3: txsession=0: session ID 0 is reserved (RFC 3931: it marks control messages); use 1..4294967295`},
		{minimal + ",rxsession=0", `l2tpv3: rxsession=0: session ID 0 is reserved (RFC 3931: it marks control messages); use 1..4294967295`},
		{udp + ",rxsession=0", `l2tpv3: rxsession=0: session ID 0 is reserved (RFC 3931: it marks control messages); use 1..4294967295`},
		{"src=192.0.2.1,dst=198.51.100.7,udp,srcport=1701,dstport=1701,txsession=0,rxsession=1", `l2tpv3: txsession=0: session ID 0 is reserved (RFC 3931: it marks control messages); use 1..4294967295`},
		{minimal + ",counter,l2spec=none", `l2tpv3: counter=on conflicts with l2spec=none`},
		{minimal + ",pincounter,l2spec=none", `l2tpv3: pincounter=on conflicts with l2spec=none`},
		{minimal + ",counter,seq=send", `l2tpv3: counter=on conflicts with seq=send (QEMU's counter is not an RFC sequence number)`},
		{minimal + ",pincounter,seq=both", `l2tpv3: pincounter=on conflicts with seq=both (QEMU's counter is not an RFC sequence number)`},
		{minimal + ",seq=recv,l2spec=none", `l2tpv3: seq=recv conflicts with l2spec=none`},
		{minimal + ",l2spec=rfc", `l2tpv3: l2spec="rfc": must be default or none`},
		{minimal + ",seq=yes", `l2tpv3: seq="yes": must be none, send, recv or both`},
		{"src=::1,dst=::2,txsession=1", `l2tpv3: src=::1 is an IPv6 address (set ipv6=on)`},
		{"src=::1,dst=192.0.2.1,txsession=1,ipv6", `l2tpv3: dst=192.0.2.1 is an IPv4 address but ipv6=on`},
		{udp + ",id", `l2tpv3: key "id" needs a value (id=…)`},
		{minimal + ",underlay-mtu=575", `l2tpv3: underlay-mtu=575: must be 576..65535`},
		{minimal + ",underlay-mtu=65536", `l2tpv3: underlay-mtu=65536: must be 576..65535`},
		{minimal + ",underlay-mtu=0", `l2tpv3: underlay-mtu=0: must be 576..65535`},
		{minimal + ",underlay-mtu=1500B", `l2tpv3: underlay-mtu="1500B": not a number`},
		{minimal + ",underlay-mtu=01500", `l2tpv3: underlay-mtu="01500": leading zero (QEMU would read octal): write it in decimal or 0x hex`},
		{minimal + ",underlay-mtu", `l2tpv3: key "underlay-mtu" needs a value (underlay-mtu=…)`},
		{minimal + ",underlay-mtu=1500,underlay-mtu=1400", `l2tpv3: duplicate key "underlay-mtu"`},
		{minimal + ",oversize=cut", `l2tpv3: oversize="cut": must be fragment or drop`},
		{minimal + ",txcookie64=on", `l2tpv3: txcookie64 given without txcookie and rxcookie`},
		{minimal + ",ttl=0", `l2tpv3: ttl=0: must be 1..255 (leave it out for the system's default)`},
		{minimal + ",ttl=256", `l2tpv3: ttl=256: wider than 8 bits`},
		{minimal + ",tos=0x100", `l2tpv3: tos=0x100: wider than 8 bits`},
		{minimal + ",tos=reflect", `l2tpv3: tos="reflect": not a number`},
		{minimal + ",rxcookie64=off", `l2tpv3: rxcookie64 given without txcookie and rxcookie`},
		{minimal + ",cookie64,txcookie64,txcookie=1,rxcookie=2", `l2tpv3: txcookie64 conflicts with cookie64: give txcookie64 and rxcookie64, or cookie64 alone`},
		{minimal + ",rxcookie64=off,cookie64=off,txcookie=1,rxcookie=2", `l2tpv3: rxcookie64 conflicts with cookie64: give txcookie64 and rxcookie64, or cookie64 alone`},
		{minimal + ",txcookie64=on,txcookie=1,rxcookie=0x100000000", `l2tpv3: rxcookie=0x100000000 is wider than 32 bits (set cookie64=on, or rxcookie64=on for this direction only)`},
		{minimal + ",txcookie64=maybe,txcookie=1,rxcookie=1", `l2tpv3: txcookie64="maybe": not a boolean (on/off, yes/no, true/false)`},
		{minimal + ",oversize", `l2tpv3: key "oversize" needs a value (oversize=…)`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			_, err := ParseOptions(tt.in)
			if err == nil {
				t.Fatalf("accepted, want %s", tt.msg)
			}
			if err.Error() != tt.msg {
				t.Fatalf("error\n got %s\nwant %s", err, tt.msg)
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("error %T is not a *ConfigError", err)
			}
		})
	}
}

// TestConfigString pins the canonical rendering.
func TestConfigString(t *testing.T) {
	c, err := ParseOptions("src=4.2.3.1,dst=1.2.3.4,udp,srcport=16384,dstport=16384,txsession=0xffffffff,counter,txcookie=1,rxcookie=2,offset=3")
	if err != nil {
		t.Fatal(err)
	}
	want := "src=4.2.3.1,dst=1.2.3.4,udp=on,srcport=16384,dstport=16384,txsession=0xffffffff,rxsession=0xffffffff," +
		"cookie64=off,txcookie=0x1,rxcookie=0x2,counter=on,offset=3,pinpeer=on"
	if got := c.String(); got != want {
		t.Fatalf("String()\n got %s\nwant %s", got, want)
	}
	c = with(func(c *Config) { c.L2Spec, c.Seq, c.IPv6, c.Src, c.Dst = L2SpecDefault, SeqBoth, true, "::1", "h" })
	want = "src=::1,dst=h,ipv6=on,txsession=0x10,rxsession=0x10,l2spec=default,seq=both,pinpeer=on"
	if got := c.String(); got != want {
		t.Fatalf("String()\n got %s\nwant %s", got, want)
	}
	c = with(func(c *Config) { c.TxCookieLen, c.RxCookieLen, c.TxCookie, c.RxCookie = 4, 8, 1, 2 })
	want = "src=192.0.2.1,dst=198.51.100.7,txsession=0x10,rxsession=0x10,txcookie64=off,rxcookie64=on,txcookie=0x1,rxcookie=0x2,l2spec=none,pinpeer=on"
	if got := c.String(); got != want {
		t.Fatalf("String()\n got %s\nwant %s", got, want)
	}
	if back, err := ParseOptions(want); err != nil || back != c {
		t.Fatalf("ParseOptions(String()) = %+v, %v; want %+v", back, err, c)
	}
	c = with(func(c *Config) { c.UnderlayMTU, c.Oversize, c.VLAN, c.TOS, c.TTL = 9000, OversizeDrop, true, 0xb8, 9 })
	want = "src=192.0.2.1,dst=198.51.100.7,txsession=0x10,rxsession=0x10,l2spec=none,pinpeer=on,underlay-mtu=9000,oversize=drop,vlan=on,tos=0xb8,ttl=9"
	if got := c.String(); got != want {
		t.Fatalf("String()\n got %s\nwant %s", got, want)
	}
}

// TestValidateHandBuilt checks the refusals only a hand-built Config reaches.
func TestValidateHandBuilt(t *testing.T) {
	tests := []struct {
		c   Config
		msg string
	}{
		{with(func(c *Config) { c.RxCookieLen = 5 }), `l2tpv3: rxcookie length 5: must be 0, 4 or 8`},
		{with(func(c *Config) { c.RxCookie = 7 }), `l2tpv3: rxcookie=0x7 set with no cookie length`},
		{with(func(c *Config) { c.TxCookie = 7 }), `l2tpv3: txcookie=0x7 set with no cookie length`},
		{with(func(c *Config) { c.Encap = 7 }), `l2tpv3: encapsulation 7: unknown`},
		{with(func(c *Config) { c.L2Spec = 2 }), `l2tpv3: l2spec type 2: unknown`},
		{with(func(c *Config) { c.Counter = 3 }), `l2tpv3: counter mode 3: unknown`},
		{with(func(c *Config) { c.Seq = 4 }), `l2tpv3: seq mode 4: unknown`},
		{with(func(c *Config) { c.Offset = -1 }), `l2tpv3: offset=-1: must be 0..256`},
		{with(func(c *Config) { c.Dst = "a,b" }), `l2tpv3: dst="a,b": contains a comma or white space`},
		{with(func(c *Config) { c.Counter = CounterQEMU }), `l2tpv3: counter=on conflicts with l2spec=none`},
		{with(func(c *Config) { udpOn(c); c.SrcPort = 0 }), `l2tpv3: missing srcport (needed with udp=on)`},
		{with(func(c *Config) { c.UnderlayMTU = 100 }), `l2tpv3: underlay-mtu=100: must be 576..65535`},
		{with(func(c *Config) { c.UnderlayMTU = -1 }), `l2tpv3: underlay-mtu=-1: must be 576..65535`},
		{with(func(c *Config) { c.Oversize = 2 }), `l2tpv3: oversize policy 2: unknown`},
		{with(func(c *Config) { c.TOSInherit, c.TOS = true, 4 }), `l2tpv3: tos=inherit with a fixed TOS 0x4: one or the other`},
	}
	for _, tt := range tests {
		if err := tt.c.Validate(); err == nil || err.Error() != tt.msg {
			t.Errorf("Validate(%+v) = %v, want %s", tt.c, err, tt.msg)
		}
	}
}

// TestHeaderLenOverhead checks the sizes that feed MTU advice.
func TestHeaderLenOverhead(t *testing.T) {
	tests := []struct {
		in            string
		hdr, overhead int
		innerMTU      int
	}{
		{minimal + ",udp,srcport=1,dstport=1,l2spec=default", 12, 40, 1446},
		{minimal + ",l2spec=default", 8, 28, 1458},
		{minimal, 4, 24, 1462},
		{minimal + ",udp,srcport=1,dstport=1,counter,txcookie=1,rxcookie=1", 16, 44, 1442},
		{"src=::1,dst=::1,ipv6,txsession=1,udp,srcport=1,dstport=1,cookie64,txcookie=1,rxcookie=1,l2spec=default,offset=2", 22, 70, 1416},
		// per-direction cookies: the overhead is the longer header's
		{minimal + ",udp,srcport=1,dstport=1,txcookie64=on,rxcookie64=off,txcookie=1,rxcookie=1", 16, 44, 1442},
		{minimal + ",udp,srcport=1,dstport=1,txcookie64=off,rxcookie64=on,txcookie=1,rxcookie=1", 12, 44, 1442},
		// vlan=on: room for one 802.1Q tag, the overhead unchanged
		{minimal + ",udp,srcport=1,dstport=1,vlan=on", 8, 36, 1446},
		{minimal + ",udp,srcport=1,dstport=1,l2spec=default,vlan=on", 12, 40, 1442},
		{"src=::1,dst=::2,ipv6=on,txsession=1,vlan", 4, 44, 1438},
	}
	for _, tt := range tests {
		c, err := ParseOptions(tt.in)
		if err != nil {
			t.Fatal(err)
		}
		if c.HeaderLen() != tt.hdr || c.Overhead() != tt.overhead || c.InnerMTU(1500) != tt.innerMTU {
			t.Errorf("%s: HeaderLen %d Overhead %d InnerMTU %d, want %d %d %d", tt.in, c.HeaderLen(), c.Overhead(), c.InnerMTU(1500),
				tt.hdr, tt.overhead, tt.innerMTU)
		}
	}
}

// TestOptionHelpNamesEveryKey keeps the help table in step with the parser.
func TestOptionHelpNamesEveryKey(t *testing.T) {
	h := OptionHelp()
	for key := range optKinds {
		if !strings.Contains(h, "\n  "+key+"=") {
			t.Errorf("OptionHelp does not list %s", key)
		}
	}
}
