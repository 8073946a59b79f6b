// Package l2tplayer is a gopacket layer for L2TPv3, to read captures of a
// tunnel in tests and tools; the data plane (package l2tp) does not use it.
//
// The data header is not self-describing: the cookie length, the sublayer and
// QEMU's offset are per-session configuration. So a LayerDecoding (from a
// Config, or filled by hand) says how to read it, and gopacket is told which
// datagrams carry it:
//
//	d := l2tplayer.DecodingOf(cfg)         // or LayerDecoding{Encap: l2tp.EncapUDP, CookieLen: 4, ...}
//	_ = l2tplayer.RegisterUDPPort(1701, d) // UDP port 1701 → L2TPv3 → layers.LayerTypeEthernet
//	_ = l2tplayer.RegisterIPProtocol(d2)   // IPv4/IPv6 protocol 115 → L2TPv3 (d2.Encap == l2tp.EncapIP)
//	pkt := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.Default)
//	if l, ok := pkt.Layer(l2tplayer.LayerTypeL2TPv3).(*l2tplayer.L2TPv3); ok { … l.SessionID, l.Cookie … }
//
// or decode an L2TPv3 packet (a UDP payload, or the IP payload over IP)
// directly with gopacket.NewPacket(b, d, gopacket.Default). Register(cfg)
// does the registration a capture of cfg's own tunnel needs.
//
// gopacket routes by layer type and a layer type has one decoder, so each
// LayerDecoding is given its own routing type (d.LayerType(), registered on
// first use); every decoded header reports LayerTypeL2TPv3 as its type. With
// a gopacket.DecodingLayerParser, the decoded list shows the routing type
// (use IsL2TPv3 to recognise it). Registration writes gopacket's global
// tables: do it at start-up, before packets are decoded concurrently.
package l2tplayer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/l2tp"
)

// The RFC 4719 default sublayer, read here independently of package l2tp's
// encoder (a capture reader that shared its constants would share its bugs).
const (
	seqS    = 0x40000000 // the S (sequenced) bit
	seqMask = 0xffffff   // the 24-bit sequence number
)

// layerTypeNum is LayerTypeL2TPv3's number, in gopacket's fast range for
// application types (1000-1999); 1931 for RFC 3931.
const layerTypeNum = 1931

// routeTypeBase numbers the per-LayerDecoding routing types: base + index,
// outside gopacket's reserved ranges and below 2^31.
const routeTypeBase = 393_100_000

// ipProtoL2TPv3 is the IP protocol number of L2TPv3 over IP (RFC 3931 §4.1.1).
const ipProtoL2TPv3 = 115

// controlHeaderLen is the control message header: flags and version (2),
// length (2), control connection ID (4), Ns (2), Nr (2).
const controlHeaderLen = 12

// LayerTypeL2TPv3 is the gopacket layer type of every decoded L2TPv3
// header. Used as a decoder on its own it fails: the header's layout is
// per-session, decode with a LayerDecoding instead.
var LayerTypeL2TPv3 = gopacket.RegisterLayerType(layerTypeNum, gopacket.LayerTypeMetadata{
	Name:    "L2TPv3",
	Decoder: gopacket.DecodeFunc(decodeUnconfigured),
})

var (
	// ErrLayerTruncated is wrapped by decode errors of a packet shorter
	// than the header its LayerDecoding describes.
	ErrLayerTruncated = errors.New("l2tp: L2TPv3 packet truncated")
	// ErrLayerVersion is wrapped by decode errors of a UDP flags word or
	// control header whose version is not 3.
	ErrLayerVersion = errors.New("l2tp: L2TP version is not 3")
	// ErrLayerDecoding is wrapped by errors about a LayerDecoding itself
	// (unknown encapsulation or sublayer, cookie length, offset).
	ErrLayerDecoding = errors.New("l2tp: invalid L2TPv3 layer decoding")
)

// LayerDecoding is what a receiver must know to read an L2TPv3 data header:
// the encapsulation, the cookie length and the sublayer, plus QEMU's offset
// padding (skipped). It is a gopacket.Decoder. The zero value reads L2TPv3
// over IP without cookie or sublayer (QEMU's defaults).
type LayerDecoding struct {
	// Encap: over UDP a 4-byte flags word (T bit: control) precedes the
	// session ID; over IP session 0 marks a control message.
	Encap l2tp.Encap
	// CookieLen is 0, 4 or 8 bytes.
	CookieLen int
	// L2Spec is l2tp.L2SpecDefault for the 4-byte RFC 4719 sublayer.
	L2Spec l2tp.L2SpecType
	// Offset is QEMU's padding after the header, 0..256 bytes.
	Offset int
}

// DecodingOf is how packets c's session receives are read. Sent packets have
// the same layout unless the cookie lengths differ per direction
// (txcookie64/rxcookie64): then set CookieLen to c.TxCookieLen for them.
func DecodingOf(c l2tp.Config) LayerDecoding {
	return LayerDecoding{Encap: c.Encap, CookieLen: c.RxCookieLen, L2Spec: c.L2Spec, Offset: c.Offset}
}

// DecoderOf is DecodingOf(c) as a gopacket.Decoder, to decode one L2TPv3
// packet (a UDP payload, or an IP payload over IP) with NewPacket.
func DecoderOf(c l2tp.Config) gopacket.Decoder { return DecodingOf(c) }

// Register makes gopacket decode the datagrams of c's tunnel found in
// a capture: UDP SrcPort and DstPort, or IP protocol 115. Not safe to call
// while packets are being decoded (it writes gopacket's global tables).
func Register(c l2tp.Config) error {
	d := DecodingOf(c)
	if c.Encap == l2tp.EncapIP {
		return RegisterIPProtocol(d)
	}
	if err := RegisterUDPPort(c.SrcPort, d); err != nil {
		return err
	}
	return RegisterUDPPort(c.DstPort, d)
}

// Validate refuses a decoding no valid Config has, so a decoder never reads
// outside its idea of the header.
func (d LayerDecoding) Validate() error {
	switch {
	case d.Encap > l2tp.EncapUDP:
		return fmt.Errorf("%w: encapsulation %d", ErrLayerDecoding, d.Encap)
	case d.CookieLen != 0 && d.CookieLen != 4 && d.CookieLen != 8:
		return fmt.Errorf("%w: cookie length %d (0, 4 or 8)", ErrLayerDecoding, d.CookieLen)
	case d.L2Spec > l2tp.L2SpecDefault:
		return fmt.Errorf("%w: l2spec type %d", ErrLayerDecoding, d.L2Spec)
	case d.Offset < 0 || d.Offset > l2tp.MaxOffset:
		return fmt.Errorf("%w: offset %d (0..%d)", ErrLayerDecoding, d.Offset, l2tp.MaxOffset)
	}
	return nil
}

// String names the decoding in option-string terms, e.g.
// "L2TPv3(udp,cookie=4,l2spec=default,offset=0)".
func (d LayerDecoding) String() string {
	return fmt.Sprintf("L2TPv3(%s,cookie=%d,l2spec=%s,offset=%d)", d.Encap, d.CookieLen, d.L2Spec, d.Offset)
}

// Decode implements gopacket.Decoder: it adds an *L2TPv3 layer and hands a
// data message's payload to layers.LayerTypeEthernet. A control message's
// AVPs are left undecoded.
func (d LayerDecoding) Decode(data []byte, p gopacket.PacketBuilder) error {
	l := &L2TPv3{Decoding: d}
	if err := l.DecodeFromBytes(data, p); err != nil {
		return err
	}
	p.AddLayer(l)
	if l.IsControl {
		return nil
	}
	return p.NextDecoder(layers.LayerTypeEthernet)
}

// routeTypes holds the routing type registered for each decoding.
var routeTypes struct {
	sync.Mutex
	m map[LayerDecoding]gopacket.LayerType
}

// LayerType is the routing type that decodes with d, registered with
// gopacket on first use (d must be valid: an invalid d gets
// LayerTypeL2TPv3, which fails to decode). Map UDP ports or an IP protocol
// to it; RegisterUDPPort and RegisterIPProtocol do.
func (d LayerDecoding) LayerType() gopacket.LayerType {
	if d.Validate() != nil {
		return LayerTypeL2TPv3
	}
	routeTypes.Lock()
	defer routeTypes.Unlock()
	if t, ok := routeTypes.m[d]; ok {
		return t
	}
	if routeTypes.m == nil {
		routeTypes.m = make(map[LayerDecoding]gopacket.LayerType)
	}
	t := gopacket.RegisterLayerType(routeTypeBase+d.index(), gopacket.LayerTypeMetadata{Name: d.String(), Decoder: d})
	routeTypes.m[d] = t
	return t
}

// index numbers a valid decoding densely, so its routing type is the same
// in every process.
func (d LayerDecoding) index() int {
	return ((int(d.Encap)*3+d.CookieLen/4)*2+int(d.L2Spec))*(l2tp.MaxOffset+1) + d.Offset
}

// IsL2TPv3 reports whether t is LayerTypeL2TPv3 or a LayerDecoding's
// routing type, as a DecodingLayerParser's decoded list may hold either.
func IsL2TPv3(t gopacket.LayerType) bool {
	if t == LayerTypeL2TPv3 {
		return true
	}
	n := int64(t) - routeTypeBase
	return n >= 0 && n < 2*3*2*(l2tp.MaxOffset+1)
}

// RegisterUDPPort makes gopacket's UDP layer hand datagrams from or to port
// to d (which must be valid and over UDP). Not safe to call while packets
// are being decoded.
func RegisterUDPPort(port uint16, d LayerDecoding) error {
	if err := d.Validate(); err != nil {
		return err
	}
	if d.Encap != l2tp.EncapUDP {
		return fmt.Errorf("%w: UDP port %d registered with encapsulation %s", ErrLayerDecoding, port, d.Encap)
	}
	layers.RegisterUDPPortLayerType(layers.UDPPort(port), d.LayerType())
	return nil
}

// RegisterIPProtocol makes gopacket's IPv4 and IPv6 layers hand protocol 115
// to d (which must be valid and over IP). There is one such slot per
// process. Not safe to call while packets are being decoded.
func RegisterIPProtocol(d LayerDecoding) error {
	if err := d.Validate(); err != nil {
		return err
	}
	if d.Encap != l2tp.EncapIP {
		return fmt.Errorf("%w: IP protocol 115 registered with encapsulation %s", ErrLayerDecoding, d.Encap)
	}
	layers.IPProtocolMetadata[ipProtoL2TPv3] = layers.EnumMetadata{DecodeWith: d, Name: "L2TPv3", LayerType: d.LayerType()}
	return nil
}

// decodeUnconfigured is LayerTypeL2TPv3's own decoder, which cannot know
// the session's header layout.
func decodeUnconfigured([]byte, gopacket.PacketBuilder) error {
	return fmt.Errorf("%w: LayerTypeL2TPv3 has no header layout; decode with a LayerDecoding", ErrLayerDecoding)
}

// L2TPv3 is one decoded L2TPv3 header (RFC 3931 §4.1.1.2 over IP, §4.1.2.2
// over UDP, sublayer RFC 4719). Set Decoding before DecodeFromBytes; the
// other fields are overwritten by each decode. Contents is the header
// (with any offset padding), Payload the Ethernet frame, or a control
// message's undecoded AVPs. Slices point into the decoded data.
type L2TPv3 struct {
	layers.BaseLayer
	// Decoding says how the header is laid out; kept by DecodeFromBytes.
	Decoding LayerDecoding

	// IsControl: the T bit (UDP) or session 0 (IP). Only Version and
	// ControlConnectionID are decoded for control messages.
	IsControl bool
	// Version is the L2TP version of the UDP flags word or the control
	// header (3); 0 for data over IP, which has no flags word.
	Version uint8
	// ControlConnectionID is a control message's destination connection.
	ControlConnectionID uint32

	// SessionID is the receiver's session ID (the sender's txsession).
	SessionID uint32
	// Cookie is the cookie as sent (big-endian), nil without one.
	Cookie []byte
	// HasSublayer: the decoding has the 4-byte RFC 4719 sublayer.
	HasSublayer bool
	// Sublayer is the raw sublayer word (QEMU's counter=on puts a plain
	// counter here, so SBit and Seq are meaningless with it).
	Sublayer uint32
	// SBit is the sublayer's S (sequenced) bit.
	SBit bool
	// Seq is the sublayer's 24-bit sequence number.
	Seq uint32
}

// LayerType implements gopacket.Layer.
func (l *L2TPv3) LayerType() gopacket.LayerType { return LayerTypeL2TPv3 }

// CanDecode implements gopacket.DecodingLayer: LayerTypeL2TPv3 and
// l.Decoding's routing type, so a parser follows registered ports.
func (l *L2TPv3) CanDecode() gopacket.LayerClass {
	return gopacket.NewLayerClassMap([]gopacket.LayerType{LayerTypeL2TPv3, l.Decoding.LayerType()})
}

// NextLayerType implements gopacket.DecodingLayer: Ethernet for data,
// nothing for control messages.
func (l *L2TPv3) NextLayerType() gopacket.LayerType {
	if l.IsControl {
		return gopacket.LayerTypeZero
	}
	return layers.LayerTypeEthernet
}

// DecodeFromBytes implements gopacket.DecodingLayer: it reads data with
// l.Decoding, without allocating. A packet shorter than its header is an
// error wrapping ErrLayerTruncated (and sets df's Truncated); an empty
// frame after a complete header is not an error.
func (l *L2TPv3) DecodeFromBytes(data []byte, df gopacket.DecodeFeedback) error {
	d := l.Decoding
	if err := d.Validate(); err != nil {
		return err
	}
	*l = L2TPv3{Decoding: d}
	rest := data
	if d.Encap == l2tp.EncapUDP {
		if len(rest) < 4 {
			return truncated(df, "UDP flags word", 4, len(data))
		}
		if rest[0]&0x80 != 0 {
			return l.decodeControl(data, 0, df)
		}
		if l.Version = rest[1] & 0x0f; l.Version != 3 {
			return fmt.Errorf("%w: data message version %d", ErrLayerVersion, l.Version)
		}
		rest = rest[4:]
	}
	if len(rest) < 4 {
		return truncated(df, "session ID", len(data)-len(rest)+4, len(data))
	}
	l.SessionID = binary.BigEndian.Uint32(rest)
	if d.Encap == l2tp.EncapIP && l.SessionID == 0 {
		return l.decodeControl(data, 4, df)
	}
	return l.decodeData(data, len(data)-len(rest)+4, df)
}

// decodeData reads the cookie, sublayer and offset of a data message whose
// session ID ends at data[at:].
func (l *L2TPv3) decodeData(data []byte, at int, df gopacket.DecodeFeedback) error {
	d := l.Decoding
	hl := at + d.CookieLen + d.Offset
	if d.L2Spec == l2tp.L2SpecDefault {
		hl += 4
	}
	if len(data) < hl {
		return truncated(df, "data header", hl, len(data))
	}
	if d.CookieLen > 0 {
		l.Cookie = data[at : at+d.CookieLen : at+d.CookieLen]
	}
	if d.L2Spec == l2tp.L2SpecDefault {
		l.HasSublayer = true
		l.Sublayer = binary.BigEndian.Uint32(data[at+d.CookieLen:])
		l.SBit = l.Sublayer&seqS != 0
		l.Seq = l.Sublayer & seqMask
	}
	l.BaseLayer = layers.BaseLayer{Contents: data[:hl:hl], Payload: data[hl:]}
	return nil
}

// decodeControl reads the control header at data[at:] (after the zero
// session ID over IP); the AVPs become the payload.
func (l *L2TPv3) decodeControl(data []byte, at int, df gopacket.DecodeFeedback) error {
	l.IsControl = true
	hl := at + controlHeaderLen
	if len(data) < hl {
		return truncated(df, "control header", hl, len(data))
	}
	if l.Version = data[at+1] & 0x0f; l.Version != 3 {
		return fmt.Errorf("%w: control message version %d", ErrLayerVersion, l.Version)
	}
	l.ControlConnectionID = binary.BigEndian.Uint32(data[at+4:])
	l.BaseLayer = layers.BaseLayer{Contents: data[:hl:hl], Payload: data[hl:]}
	return nil
}

// truncated marks the packet truncated and builds the error naming what
// was cut short.
func truncated(df gopacket.DecodeFeedback, what string, need, have int) error {
	if df != nil {
		df.SetTruncated()
	}
	return fmt.Errorf("%w: %s needs %d bytes, have %d", ErrLayerTruncated, what, need, have)
}
