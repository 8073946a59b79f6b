package l2tp

import (
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// optKind says how an option's value is read.
type optKind uint8

const (
	kindString   optKind = iota // address or host name, taken as is
	kindBool                    // on/off, yes/no, true/false; bare key = on
	kindPort                    // decimal 1..65535
	kindTOS                     // decimal or 0x hex, 8 bits, or inherit
	kindTTL                     // decimal or 0x hex, 1..255
	kindU32                     // decimal or 0x hex, 32 bits
	kindU64                     // decimal or 0x hex, 64 bits
	kindOffset                  // decimal or 0x hex, 0..256
	kindL2Spec                  // default | none
	kindSeq                     // none | send | recv | both
	kindMTU                     // decimal or 0x hex, MinUnderlayMTU..MaxUnderlayMTU
	kindOversize                // fragment | drop
	kindMillis                  // milliseconds: decimal, or with a ms/s unit
	kindIgnored                 // accepted and ignored (QEMU's id=)
)

// optKinds lists every key ParseOptions accepts, with how its value is read.
var optKinds = map[string]optKind{
	"id": kindIgnored, "src": kindString, "dst": kindString,
	"udp": kindBool, "srcport": kindPort, "dstport": kindPort,
	"txsession": kindU32, "rxsession": kindU32, "ipv6": kindBool,
	"cookie64": kindBool, "txcookie": kindU64, "rxcookie": kindU64,
	"txcookie64": kindBool, "rxcookie64": kindBool,
	"counter": kindBool, "pincounter": kindBool, "offset": kindOffset,
	"l2spec": kindL2Spec, "seq": kindSeq, "pinpeer": kindBool, "peer-learning": kindBool,
	"underlay-mtu": kindMTU, "oversize": kindOversize, "vlan": kindBool,
	"tos": kindTOS, "ttl": kindTTL, "reorder": kindMillis, "reorder-frames": kindU32,
}

// optValue is one parsed key: its raw text and its value in the kind's type.
type optValue struct {
	raw      string
	num      uint64
	on       bool
	seq      SeqMode
	spec     L2SpecType
	oversize Oversize
}

// options is a parsed option string: the keys given and their values.
type options map[string]optValue

// has reports whether key was given.
func (o options) has(key string) bool { _, ok := o[key]; return ok }

// on reports whether a boolean key was given and true.
func (o options) on(key string) bool { return o[key].on }

// ParseOptions reads QEMU's -netdev l2tpv3 option string
// ("src=…,dst=…,udp=on,srcport=…,dstport=…,txsession=…,…") into a Config,
// validated. The keys and their meaning are listed by OptionHelp; in short:
//
//   - QEMU's keys src, dst, udp, srcport, dstport, txsession, rxsession,
//     ipv6, cookie64, txcookie, rxcookie, counter, pincounter, offset, with
//     QEMU's spellings (bare "udp" = udp=on; numbers decimal or 0x hex), and
//     id=, accepted and ignored so QEMU's own string can be pasted (as can a
//     leading "l2tpv3," type word).
//   - kernel-style keys l2spec=default|none, seq=none|send|recv|both and
//     pinpeer=on|off; peer-learning=on|off (default off; needs a cookie).
//   - underlay-mtu=N (576..65535; default: the route's MTU, probed when the
//     tunnel opens) and oversize=fragment|drop (default fragment), for
//     frames whose encapsulated datagram is larger than the underlay MTU.
//   - vlan=on|off (default off): the inner MTU leaves room for one 802.1Q
//     tag.
//   - reorder=N (milliseconds, or 50ms / 1s; needs seq=recv|both) holds
//     frames that arrive ahead of the expected number up to N to deliver
//     them in order, up to reorder-frames=M ahead (default 64).
//   - tos=N|inherit (0..255, the outer TOS / traffic class byte, or the inner
//     packet's copied per datagram) and ttl=N (1..255,
//     the outer TTL / hop limit); default the kernel's.
//
// Required: src, dst, txsession; with udp=on also srcport and dstport
// (decimal 1..65535, no service names), which are refused without it.
// rxsession defaults to txsession. txcookie and rxcookie go together; they
// are 32-bit unless cookie64=on, or per direction txcookie64=on|off and
// rxcookie64=on|off (a 4-byte cookie one way and an 8-byte one the other, as
// Linux's cookie / peer_cookie allow; not with cookie64). pinpeer defaults to on when dst is a literal
// address and off for a host name (pinpeer=on with a host name pins to the
// address it resolves to when the tunnel opens).
//
// The sublayer: with none of counter, pincounter, l2spec or seq there is
// none (QEMU's default, counter=off). counter=on selects the 4-byte sublayer
// with QEMU's plain counter (L2SpecDefault + CounterQEMU); pincounter=on,
// with or without counter, selects it with a constant 0 (L2SpecDefault +
// CounterPinned). Beware: QEMU itself, given pincounter without counter,
// sends no sublayer at all (a QEMU defect): pair such a QEMU with
// l2spec=none. l2spec=default selects the RFC 4719 sublayer (CounterRFC),
// whose content seq decides; seq=send|recv|both implies l2spec=default.
// Refused: seq other than none with l2spec=none, counter or pincounter with
// seq other than none, counter or pincounter with l2spec=none.
//
// QEMU defects are fixed, not copied: cookie64=off means 32-bit cookies,
// offset above 256 is refused, session ID 0 is refused (RFC 3931 reserves
// it; over IP it marks control messages). Numbers with a leading zero are refused, as QEMU would
// read them as octal. A key given twice is refused (QEMU silently takes the
// last one).
//
// Errors are *ConfigError values whose text starts "l2tpv3: " and names the
// key, e.g. "l2tpv3: txcookie set without rxcookie".
func ParseOptions(s string) (Config, error) {
	o, err := splitOptions(s)
	if err != nil {
		return Config{}, err
	}
	for _, key := range [...]string{"src", "dst", "txsession"} {
		if !o.has(key) {
			return Config{}, cfgErr(key, "missing %s", key)
		}
	}
	c := Config{Src: o["src"].raw, Dst: o["dst"].raw, IPv6: o.on("ipv6")}
	if o.on("udp") {
		c.Encap = EncapUDP
		c.SrcPort, c.DstPort = uint16(o["srcport"].num), uint16(o["dstport"].num)
	} else {
		for _, key := range [...]string{"srcport", "dstport"} {
			if o.has(key) {
				return Config{}, cfgErr(key, "%s given without udp=on", key)
			}
		}
	}
	c.PeerSessionID = uint32(o["txsession"].num)
	c.SessionID = c.PeerSessionID
	if o.has("rxsession") {
		c.SessionID = uint32(o["rxsession"].num)
	}
	if err := o.cookies(&c); err != nil {
		return Config{}, err
	}
	o.sublayer(&c)
	c.Offset = int(o["offset"].num)
	c.UnderlayMTU, c.Oversize = int(o["underlay-mtu"].num), o["oversize"].oversize
	if o.has("pinpeer") {
		c.PinPeer = o.on("pinpeer")
	} else {
		_, err := netip.ParseAddr(c.Dst)
		c.PinPeer = err == nil
	}
	c.LearnPeer = o.on("peer-learning")
	c.VLAN = o.on("vlan")
	c.TOS, c.TOSInherit, c.TTL = uint8(o["tos"].num), o.on("tos"), uint8(o["ttl"].num)
	c.Reorder, c.ReorderFrames = time.Duration(o["reorder"].num), int(min(o["reorder-frames"].num, MaxReorderFrames+1))
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// cookies fills the cookie fields: both cookies or neither, 4 bytes unless
// cookie64=on (QEMU made any cookie64 key, even =off, mean 8 bytes), or per
// direction with txcookie64 / rxcookie64, which do not mix with cookie64.
func (o options) cookies(c *Config) error {
	tx, rx := o.has("txcookie"), o.has("rxcookie")
	switch {
	case tx && !rx:
		return cfgErr("rxcookie", "txcookie set without rxcookie")
	case rx && !tx:
		return cfgErr("txcookie", "rxcookie set without txcookie")
	}
	for _, key := range [...]string{"txcookie64", "rxcookie64"} {
		switch {
		case o.has(key) && !tx:
			return cfgErr(key, "%s given without txcookie and rxcookie", key)
		case o.has(key) && o.has("cookie64"):
			return cfgErr(key, "%s conflicts with cookie64: give txcookie64 and rxcookie64, or cookie64 alone", key)
		}
	}
	if !tx {
		return nil
	}
	c.TxCookieLen, c.RxCookieLen = cookieLen(o.on("cookie64")), cookieLen(o.on("cookie64"))
	if o.has("txcookie64") {
		c.TxCookieLen = cookieLen(o.on("txcookie64"))
	}
	if o.has("rxcookie64") {
		c.RxCookieLen = cookieLen(o.on("rxcookie64"))
	}
	c.TxCookie, c.RxCookie = o["txcookie"].num, o["rxcookie"].num
	return nil
}

// cookieLen is the cookie length a cookie64-style switch selects.
func cookieLen(is64 bool) int {
	if is64 {
		return 8
	}
	return 4
}

// sublayer fills L2Spec, Counter and Seq. counter=on and pincounter=on select
// the 4-byte sublayer with QEMU's content; seq=send|recv|both implies
// l2spec=default; otherwise no sublayer (QEMU's counter=off default).
// Conflicting combinations are left for Validate to refuse.
func (o options) sublayer(c *Config) {
	c.Seq = o["seq"].seq
	switch {
	case o.on("pincounter"):
		c.L2Spec, c.Counter = L2SpecDefault, CounterPinned
	case o.on("counter"):
		c.L2Spec, c.Counter = L2SpecDefault, CounterQEMU
	case c.Seq != SeqNone:
		c.L2Spec = L2SpecDefault
	}
	if o.has("l2spec") {
		c.L2Spec = o["l2spec"].spec
	}
}

// splitOptions splits s at commas into keys and values, reading each value
// by its key's kind. A trailing comma and a leading "l2tpv3" word are allowed.
func splitOptions(s string) (options, error) {
	s = strings.TrimSuffix(strings.TrimSpace(s), ",")
	o := make(options)
	if s == "" {
		return o, nil
	}
	for i, item := range strings.Split(s, ",") {
		if item == "" {
			return nil, cfgErr("", "empty option between commas (QEMU's \",,\" escape is not supported)")
		}
		if i == 0 && item == "l2tpv3" {
			continue
		}
		key, val, hasVal := strings.Cut(item, "=")
		kind, known := optKinds[key]
		if !known {
			return nil, cfgErr(key, "unknown key %q", key)
		}
		if o.has(key) {
			return nil, cfgErr(key, "duplicate key %q", key)
		}
		if !hasVal && kind == kindBool {
			val, hasVal = "on", true
		}
		if !hasVal {
			return nil, cfgErr(key, "key %q needs a value (%s=…)", key, key)
		}
		if val == "" {
			return nil, cfgErr(key, "empty value for key %q", key)
		}
		v, err := parseValue(key, val, kind)
		if err != nil {
			return nil, err
		}
		o[key] = v
	}
	return o, nil
}

// String renders c as a canonical option string that ParseOptions reads back
// to the same Config: every setting spelled out, numbers in hex, pinpeer
// explicit; underlay-mtu, oversize, vlan, tos and ttl only when not the
// defaults. QEMU
// reads the QEMU keys in it (not l2spec, seq, pinpeer, underlay-mtu,
// oversize).
func (c Config) String() string {
	var b strings.Builder
	b.WriteString("src=" + c.Src + ",dst=" + c.Dst)
	if c.Encap == EncapUDP {
		b.WriteString(",udp=on,srcport=" + strconv.Itoa(int(c.SrcPort)) +
			",dstport=" + strconv.Itoa(int(c.DstPort)))
	}
	if c.IPv6 {
		b.WriteString(",ipv6=on")
	}
	b.WriteString(",txsession=" + hexNum(uint64(c.PeerSessionID)) +
		",rxsession=" + hexNum(uint64(c.SessionID)))
	switch {
	case c.TxCookieLen == c.RxCookieLen && c.TxCookieLen != 0:
		b.WriteString(",cookie64=" + onOff(c.TxCookieLen == 8))
	case c.TxCookieLen != c.RxCookieLen:
		b.WriteString(",txcookie64=" + onOff(c.TxCookieLen == 8) + ",rxcookie64=" + onOff(c.RxCookieLen == 8))
	}
	if c.TxCookieLen != 0 || c.RxCookieLen != 0 {
		b.WriteString(",txcookie=" + hexNum(c.TxCookie) + ",rxcookie=" + hexNum(c.RxCookie))
	}
	switch c.Counter {
	case CounterQEMU:
		b.WriteString(",counter=on")
	case CounterPinned:
		b.WriteString(",pincounter=on")
	}
	if c.Counter == CounterRFC || c.L2Spec != L2SpecDefault {
		b.WriteString(",l2spec=" + c.L2Spec.String())
	}
	if c.Seq != SeqNone {
		b.WriteString(",seq=" + c.Seq.String())
	}
	if c.Offset != 0 {
		b.WriteString(",offset=" + strconv.Itoa(c.Offset))
	}
	b.WriteString(",pinpeer=" + onOff(c.PinPeer))
	if c.LearnPeer {
		b.WriteString(",peer-learning=on")
	}
	if c.UnderlayMTU != 0 {
		b.WriteString(",underlay-mtu=" + strconv.Itoa(c.UnderlayMTU))
	}
	if c.Oversize != OversizeFragment {
		b.WriteString(",oversize=" + c.Oversize.String())
	}
	if c.VLAN {
		b.WriteString(",vlan=on")
	}
	switch {
	case c.TOSInherit:
		b.WriteString(",tos=inherit")
	case c.TOS != 0:
		b.WriteString(",tos=" + hexNum(uint64(c.TOS)))
	}
	if c.TTL != 0 {
		b.WriteString(",ttl=" + strconv.Itoa(int(c.TTL)))
	}
	if c.Reorder != 0 {
		b.WriteString(",reorder=" + c.Reorder.String())
	}
	if c.ReorderFrames != 0 {
		b.WriteString(",reorder-frames=" + strconv.Itoa(c.ReorderFrames))
	}
	return b.String()
}

// hexNum renders n as 0x-prefixed lower-case hex.
func hexNum(n uint64) string { return "0x" + strconv.FormatUint(n, 16) }

// onOff renders a bool as QEMU's on/off.
func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}
