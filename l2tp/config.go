// Package l2tp is the L2TPv3 data plane of l2tpv3-netdev: the session
// configuration (parsed from QEMU's -netdev l2tpv3 option string), the data
// header (RFC 3931 / RFC 4719) with its sequencing, the batched UDP and raw IP
// socket, and the per-session counters. It knows nothing of the VM side.
//
// It imports no sibling package (the gopacket layer for captures is in
// l2tp/l2tplayer, for tests and tools).
package l2tp

import (
	"fmt"
	"math"
	"net/netip"
	"strings"
	"time"
)

// Encap is the underlay that carries L2TPv3 data packets.
type Encap uint8

const (
	// EncapIP carries the session header straight over IP protocol 115.
	EncapIP Encap = iota
	// EncapUDP carries it over UDP, behind the 4-byte L2TPv3 flags word.
	EncapUDP
)

// L2SpecType is the L2-Specific Sublayer carried after the cookie, as the
// Linux kernel names it (l2spec_type).
type L2SpecType uint8

const (
	// L2SpecNone sends no sublayer (QEMU counter=off, Cisco, go-l2tp).
	L2SpecNone L2SpecType = iota
	// L2SpecDefault sends the 4-byte RFC 4719 sublayer |x|S|xxxxxx|seq24|.
	L2SpecDefault
)

// SeqMode says which directions carry RFC 4719 sequence numbers, as the
// kernel's "seq" option does. It needs L2SpecDefault.
type SeqMode uint8

const (
	// SeqNone sends S=0 and accepts packets with or without S; the
	// sublayer of received packets is not checked.
	SeqNone SeqMode = iota
	// SeqSend sends S=1 with a 24-bit sequence number.
	SeqSend
	// SeqRecv drops packets without S and checks the sequence of the rest
	// (see Decoder for the receive rules).
	SeqRecv
	// SeqBoth is SeqSend and SeqRecv.
	SeqBoth
)

// CounterMode is QEMU's non-RFC use of the 4-byte sublayer slot, kept for
// wire compatibility with QEMU peers. It needs L2SpecDefault.
type CounterMode uint8

const (
	// CounterRFC lets Seq decide what goes in the sublayer (zero or S|seq).
	CounterRFC CounterMode = iota
	// CounterQEMU writes QEMU's counter=on value: a plain 32-bit ++counter
	// starting at 1; received values are not checked (as QEMU does).
	CounterQEMU
	// CounterPinned writes QEMU's pincounter=on value: always 0.
	CounterPinned
)

// Oversize is what happens to a frame whose encapsulated datagram is larger
// than the underlay MTU (Config.UnderlayMTU). Either way it is counted
// (StatsSnapshot.AboveMTU).
type Oversize uint8

const (
	// OversizeFragment sends it and lets the outer packet fragment: IPv4
	// without DF (IP_PMTUDISC_DONT, as the kernel's L2TP with ignore_df),
	// IPv6 fragmented by this host (IPV6_PMTUDISC_WANT). QEMU's own l2tpv3
	// fragments too.
	OversizeFragment Oversize = iota
	// OversizeDrop drops it (DropOversize) and never lets the kernel
	// fragment: IP_PMTUDISC_DO / IPV6_PMTUDISC_DO, so a datagram above the
	// route's MTU is refused (DropSendError) rather than fragmented.
	OversizeDrop
)

// Bounds of Config.UnderlayMTU: the smallest datagram every IPv4 host
// takes whole, and the largest IP packet length field.
const (
	MinUnderlayMTU = 576
	MaxUnderlayMTU = 65535
)

// Config is one static L2TPv3 Ethernet pseudowire. The zero value is not
// valid: use ParseOptions, or fill it and call Validate.
type Config struct {
	// Src is the local address to bind (literal or host name). Required.
	Src string
	// Dst is the peer's address (literal or host name). Required.
	Dst string
	// SrcPort and DstPort are the UDP ports; required with EncapUDP and
	// refused with EncapIP.
	SrcPort, DstPort uint16
	// Encap is the underlay; QEMU's default is IP (udp=off). IP needs root
	// (CAP_NET_RAW) to open the raw socket.
	Encap Encap
	// IPv6 selects IPv6 for the underlay (QEMU ipv6=on); default IPv4.
	IPv6 bool

	// SessionID is the session this end receives on (QEMU rxsession, kernel
	// session_id). ParseOptions defaults it to PeerSessionID, as QEMU does.
	// 0 is refused: RFC 3931 reserves it (over IP it marks control messages).
	SessionID uint32
	// PeerSessionID is the session written into sent packets (QEMU
	// txsession, kernel peer_session_id). Required; 0 is refused.
	PeerSessionID uint32

	// TxCookieLen and RxCookieLen are the cookie lengths sent and expected,
	// 0, 4 or 8 bytes each (QEMU: both 4 unless cookie64=on; Linux and
	// routers allow them to differ, e.g. txcookie64=on,rxcookie64=off). With
	// 0 the direction's cookie must be 0; with 4 it must fit in 32 bits.
	TxCookieLen, RxCookieLen int
	// RxCookie is the value expected in received packets (QEMU rxcookie,
	// kernel peer_cookie); TxCookie is written in sent ones (QEMU txcookie,
	// kernel cookie). Both big-endian on the wire, RxCookieLen and
	// TxCookieLen bytes.
	RxCookie, TxCookie uint64

	// L2Spec is the sublayer type (kernel l2spec_type).
	L2Spec L2SpecType
	// Counter selects QEMU's counter/pincounter sublayer content.
	Counter CounterMode
	// Seq selects RFC 4719 sequencing (kernel seq).
	Seq SeqMode
	// Reorder (reorder=N, with seq=recv|both) holds frames that arrive
	// ahead of the expected number up to this long, to deliver them in
	// order once the gap fills (the kernel's reorder_timeout); 0, the
	// default, delivers at once and counts the gap lost. At most MaxReorder.
	Reorder time.Duration
	// ReorderFrames (reorder-frames=M, 2..MaxReorderFrames) is how far
	// ahead a frame may be held; 0 means DefaultReorderFrames. Needs Reorder.
	ReorderFrames int

	// Offset is QEMU's extra padding between header and frame, 0..256 bytes,
	// zero on send and skipped (not checked) on receive.
	Offset int

	// PinPeer drops received packets whose source address (and port, with
	// UDP) is not Dst's resolved address. ParseOptions defaults it to on
	// when Dst is a literal address and off for a host name.
	PinPeer bool
	// LearnPeer (peer-learning=on) moves the peer to the source of any
	// received datagram that passes the session and cookie checks, so the
	// pseudowire follows a peer that migrated to another host or sits behind
	// NAT. Off by default and refused without a cookie: cookies travel in
	// clear, so anyone who sees one can move the peer.
	LearnPeer bool

	// UnderlayMTU is the MTU of the path to the peer, MinUnderlayMTU..
	// MaxUnderlayMTU; 0 (the default) means the MTU of the route to Dst,
	// asked of the kernel when the tunnel opens (1500 if it cannot tell).
	// The inner MTU offered to the VM is InnerMTU of it.
	UnderlayMTU int
	// Oversize is what happens to a frame above the underlay MTU; the
	// default, OversizeFragment, is QEMU's behaviour.
	Oversize Oversize
	// TOS (tos=N) is the outer header's IPv4 TOS / IPv6 traffic class byte,
	// DSCP and ECN, on every datagram; 0, the default, leaves the kernel's 0.
	TOS uint8
	// TOSInherit (tos=inherit) copies each inner IPv4 TOS / IPv6 traffic
	// class byte (DSCP and ECN) into the outer header, as Cisco's "ip tos
	// reflect": per datagram, in a control message; frames that are not IP
	// go out with 0. TOS must then be 0.
	TOSInherit bool
	// TTL (ttl=N, 1..255) is the outer IPv4 TTL / IPv6 hop limit; 0, the
	// default, leaves the system's (net.ipv4.ip_default_ttl,
	// net.ipv6.conf.*.hop_limit).
	TTL uint8

	// VLAN (vlan=on) leaves room for one 802.1Q tag in the inner MTU
	// offered to the VM: a guest that tags its frames itself still fits
	// the underlay whole. The frames are carried as they come either way.
	VLAN bool
}

// vlanTagLen is the bytes one 802.1Q tag adds to an Ethernet frame.
const vlanTagLen = 4

// MaxOffset is the largest Offset accepted (QEMU never bounded it).
const MaxOffset = 256

// ConfigError is a refused configuration. Key names the option at fault in
// option-string terms ("txcookie"), or is empty when several are involved.
type ConfigError struct {
	Key string // option key at fault, e.g. "offset"
	Msg string // message without the "l2tpv3: " prefix
}

// Error renders the message with the package's "l2tpv3: " prefix.
func (e *ConfigError) Error() string { return "l2tpv3: " + e.Msg }

// cfgErr builds a *ConfigError for key with a formatted message.
func cfgErr(key, format string, args ...any) error {
	return &ConfigError{Key: key, Msg: fmt.Sprintf(format, args...)}
}

// Validate runs the checks ParseOptions runs once the fields are filled, so a
// Config built by hand (from a config file) is refused for the same reasons
// and with the same messages. It does not resolve host names.
func (c Config) Validate() error {
	if err := c.validateAddrs(); err != nil {
		return err
	}
	if err := c.validateEncap(); err != nil {
		return err
	}
	if err := c.validateCookies(); err != nil {
		return err
	}
	if err := c.validateSublayer(); err != nil {
		return err
	}
	if c.LearnPeer && c.RxCookieLen == 0 {
		return cfgErr("peer-learning", "peer-learning=on needs txcookie and rxcookie: only a datagram with the session's cookie may move the peer")
	}
	if c.TOSInherit && c.TOS != 0 {
		return cfgErr("tos", "tos=inherit with a fixed TOS %#x: one or the other", c.TOS)
	}
	if err := c.validateReorder(); err != nil {
		return err
	}
	if c.Offset < 0 || c.Offset > MaxOffset {
		return cfgErr("offset", "offset=%d: must be 0..%d", c.Offset, MaxOffset)
	}
	return c.validateMTU()
}

// validateReorder checks the reorder window's bounds and that there are
// sequence numbers to reorder by.
func (c Config) validateReorder() error {
	switch {
	case c.Reorder < 0 || c.Reorder > MaxReorder:
		return cfgErr("reorder", "reorder=%s: must be 1ms..%s", c.Reorder, MaxReorder)
	case c.Reorder > 0 && !c.Seq.checks():
		return cfgErr("reorder", "reorder=%s needs seq=recv or seq=both: frames are put in order by their received sequence numbers", c.Reorder)
	case c.ReorderFrames != 0 && c.Reorder == 0:
		return cfgErr("reorder-frames", "reorder-frames=%d given without reorder=N", c.ReorderFrames)
	case c.ReorderFrames != 0 && (c.ReorderFrames < 2 || c.ReorderFrames > MaxReorderFrames):
		return cfgErr("reorder-frames", "reorder-frames=%d: must be 2..%d", c.ReorderFrames, MaxReorderFrames)
	}
	return nil
}

// validateMTU checks underlay-mtu's bounds and the oversize policy.
func (c Config) validateMTU() error {
	if c.UnderlayMTU != 0 && (c.UnderlayMTU < MinUnderlayMTU || c.UnderlayMTU > MaxUnderlayMTU) {
		return cfgErr("underlay-mtu", "underlay-mtu=%d: must be %d..%d", c.UnderlayMTU, MinUnderlayMTU, MaxUnderlayMTU)
	}
	if c.Oversize > OversizeDrop {
		return cfgErr("oversize", "oversize policy %d: unknown", c.Oversize)
	}
	return nil
}

// validateAddrs checks that Src and Dst are present, renderable in an option
// string, and (when literal) of the address family IPv6 selects.
func (c Config) validateAddrs() error {
	for _, a := range [...]struct{ key, val string }{{"src", c.Src}, {"dst", c.Dst}} {
		if a.val == "" {
			return cfgErr(a.key, "missing %s", a.key)
		}
		if strings.ContainsAny(a.val, ", \t\n") {
			return cfgErr(a.key, "%s=%q: contains a comma or white space", a.key, a.val)
		}
		ip, err := netip.ParseAddr(a.val)
		if err != nil {
			continue // a host name: resolved by Open with the family IPv6 selects
		}
		if c.IPv6 && ip.Is4() {
			return cfgErr(a.key, "%s=%s is an IPv4 address but ipv6=on", a.key, a.val)
		}
		if !c.IPv6 && !ip.Is4() {
			return cfgErr(a.key, "%s=%s is an IPv6 address (set ipv6=on)", a.key, a.val)
		}
	}
	return nil
}

// validateEncap checks the ports against the encapsulation and the session
// IDs.
func (c Config) validateEncap() error {
	switch c.Encap {
	case EncapUDP:
		if c.SrcPort == 0 {
			return cfgErr("srcport", "missing srcport (needed with udp=on)")
		}
		if c.DstPort == 0 {
			return cfgErr("dstport", "missing dstport (needed with udp=on)")
		}
	case EncapIP:
		if c.SrcPort != 0 {
			return cfgErr("srcport", "srcport given without udp=on")
		}
		if c.DstPort != 0 {
			return cfgErr("dstport", "dstport given without udp=on")
		}
	default:
		return cfgErr("udp", "encapsulation %d: unknown", c.Encap)
	}
	return c.validateSessions()
}

// validateSessions refuses session ID 0 with either encapsulation: RFC 3931
// reserves it (over IP it marks control messages) and `ip l2tp` refuses it.
func (c Config) validateSessions() error {
	const reserved = "session ID 0 is reserved (RFC 3931: it marks control messages); use 1..4294967295"
	if c.PeerSessionID == 0 {
		return cfgErr("txsession", "txsession=0: "+reserved)
	}
	if c.SessionID == 0 {
		return cfgErr("rxsession", "rxsession=0: "+reserved)
	}
	return nil
}

// validateCookies checks each direction's cookie length and that its cookie
// fits in it.
func (c Config) validateCookies() error {
	if err := validateCookie("txcookie", c.TxCookieLen, c.TxCookie); err != nil {
		return err
	}
	return validateCookie("rxcookie", c.RxCookieLen, c.RxCookie)
}

// validateCookie checks one direction's cookie (key txcookie or rxcookie)
// against its length.
func validateCookie(key string, n int, cookie uint64) error {
	switch n {
	case 0:
		if cookie != 0 {
			return cfgErr(key, "%s=%#x set with no cookie length", key, cookie)
		}
	case 4:
		if cookie > math.MaxUint32 {
			return cfgErr(key, "%s=%#x is wider than 32 bits (set cookie64=on, or %s64=on for this direction only)", key, cookie, key)
		}
	case 8:
	default:
		return cfgErr(key+"64", "%s length %d: must be 0, 4 or 8", key, n)
	}
	return nil
}

// validateSublayer checks that l2spec, QEMU's counter modes and RFC
// sequencing are a consistent combination.
func (c Config) validateSublayer() error {
	if c.L2Spec > L2SpecDefault {
		return cfgErr("l2spec", "l2spec type %d: unknown", c.L2Spec)
	}
	if c.Counter > CounterPinned {
		return cfgErr("counter", "counter mode %d: unknown", c.Counter)
	}
	if c.Seq > SeqBoth {
		return cfgErr("seq", "seq mode %d: unknown", c.Seq)
	}
	if c.Counter != CounterRFC {
		key := c.Counter.key()
		if c.L2Spec == L2SpecNone {
			return cfgErr(key, "%s=on conflicts with l2spec=none", key)
		}
		if c.Seq != SeqNone {
			return cfgErr(key, "%s=on conflicts with seq=%s (QEMU's counter is not an RFC sequence number)", key, c.Seq)
		}
	}
	if c.L2Spec == L2SpecNone && c.Seq != SeqNone {
		return cfgErr("seq", "seq=%s conflicts with l2spec=none", c.Seq)
	}
	return nil
}

// HeaderLen is the number of L2TPv3 bytes written in front of each frame:
// [4 UDP flags word] + 4 session + cookie + [4 sublayer] + offset. It is the
// headroom WriteFrames needs.
func (c Config) HeaderLen() int { return c.headerLen(c.TxCookieLen) }

// RxHeaderLen is the number of L2TPv3 bytes expected in front of each
// received frame: HeaderLen with the received cookie's length.
func (c Config) RxHeaderLen() int { return c.headerLen(c.RxCookieLen) }

// headerLen is the L2TPv3 header length with a cookie of cookieLen bytes.
func (c Config) headerLen(cookieLen int) int {
	n := 4 + cookieLen + c.Offset
	if c.Encap == EncapUDP {
		n += 4
	}
	if c.L2Spec == L2SpecDefault {
		n += 4
	}
	return n
}

// Overhead is the underlay bytes added to each frame: the longer of
// HeaderLen and RxHeaderLen (frames of the inner MTU must fit both ways)
// plus outerHeaders. The largest inner MTU on an underlay of MTU m is
// m - Overhead() - 14 (Ethernet header).
func (c Config) Overhead() int {
	return max(c.HeaderLen(), c.RxHeaderLen()) + c.outerHeaders()
}

// InnerMTU is the largest Ethernet MTU (frame without its 14-byte header)
// whose frames, encapsulated, fit an underlay of MTU underlay whole:
// underlay - Overhead() - 14, e.g. 1450 for UDP/IPv4 on 1500; with VLAN, 4
// less for the 802.1Q tag the guest may add (1446).
func (c Config) InnerMTU(underlay int) int {
	n := underlay - c.Overhead() - ethHeaderLen
	if c.VLAN {
		n -= vlanTagLen
	}
	return n
}

// outerHeaders is the IP and UDP header bytes in front of the L2TPv3 header:
// the IP header (20 or 40) and the UDP header (8, with udp).
func (c Config) outerHeaders() int {
	n := 20
	if c.IPv6 {
		n = 40
	}
	if c.Encap == EncapUDP {
		n += 8
	}
	return n
}

// String names the oversize policy as oversize= spells it.
func (o Oversize) String() string {
	switch o {
	case OversizeFragment:
		return "fragment"
	case OversizeDrop:
		return "drop"
	}
	return fmt.Sprintf("oversize(%d)", uint8(o))
}

// String names the encapsulation as the option string does.
func (e Encap) String() string {
	switch e {
	case EncapIP:
		return "ip"
	case EncapUDP:
		return "udp"
	}
	return fmt.Sprintf("encap(%d)", uint8(e))
}

// String names the sublayer type as l2spec= spells it.
func (t L2SpecType) String() string {
	switch t {
	case L2SpecNone:
		return "none"
	case L2SpecDefault:
		return "default"
	}
	return fmt.Sprintf("l2spec(%d)", uint8(t))
}

// String names the sequencing mode as seq= spells it.
func (m SeqMode) String() string {
	switch m {
	case SeqNone:
		return "none"
	case SeqSend:
		return "send"
	case SeqRecv:
		return "recv"
	case SeqBoth:
		return "both"
	}
	return fmt.Sprintf("seq(%d)", uint8(m))
}

// String names the counter mode ("rfc", "counter", "pincounter").
func (m CounterMode) String() string {
	switch m {
	case CounterRFC:
		return "rfc"
	case CounterQEMU:
		return "counter"
	case CounterPinned:
		return "pincounter"
	}
	return fmt.Sprintf("counter(%d)", uint8(m))
}

// key is the QEMU option that selects m, for error messages.
func (m CounterMode) key() string {
	if m == CounterPinned {
		return "pincounter"
	}
	return "counter"
}

// sends reports whether this mode writes sequence numbers.
func (m SeqMode) sends() bool { return m == SeqSend || m == SeqBoth }

// checks reports whether this mode checks received sequence numbers.
func (m SeqMode) checks() bool { return m == SeqRecv || m == SeqBoth }
