package l2tp

import (
	"errors"
	"fmt"
)

// ErrSeqRecvLinux is LinuxPeerCommands' refusal of seq=recv: no setting of
// the kernel makes that mode work, so no commands are printed for it.
var ErrSeqRecvLinux = errors.New("l2tpv3: seq=recv has no Linux peer: " + seqRecvLinux)

// seqRecvLinux says why seq=recv cannot work with a Linux peer.
const seqRecvLinux = "the kernel stops numbering its frames as soon as it receives one without " +
	"a sequence number (ours, under seq=recv), so every frame it sends would be dropped as " +
	"sequence; and its seq recv|both drop our unnumbered frames. With Linux use seq=both " +
	"(or send, or none)"

// LinuxPeerCommands returns the `ip l2tp` and `ip link` commands that make
// a Linux host (kernel l2tp_eth) the other end of this pseudowire: its local
// address is our Dst, its session_id our PeerSessionID, its cookie our
// TxCookie, and so on. ifname names the kernel's interface; the MTU set
// on it is what the underlay carries without fragmenting (UnderlayMTU, or
// 1500 when it is left to the route: the peer's route is not ours to ask).
// seq=recv is refused with ErrSeqRecvLinux.
func (c Config) LinuxPeerCommands(ifname string, tunnelID uint32) ([]string, error) {
	if c.Seq == SeqRecv {
		return nil, ErrSeqRecvLinux
	}
	encap := "ip"
	ports := ""
	if c.Encap == EncapUDP {
		encap = "udp"
		ports = fmt.Sprintf(" udp_sport %d udp_dport %d", c.DstPort, c.SrcPort)
	}
	tunnel := fmt.Sprintf("ip l2tp add tunnel tunnel_id %d peer_tunnel_id %d encap %s local %s remote %s%s",
		tunnelID, tunnelID, encap, c.Dst, c.Src, ports)
	session := fmt.Sprintf("ip l2tp add session name %s tunnel_id %d session_id %d peer_session_id %d",
		ifname, tunnelID, c.PeerSessionID, c.SessionID)
	// The kernel sends its "cookie" and expects its "peer_cookie".
	if c.RxCookieLen > 0 {
		session += fmt.Sprintf(" cookie %0*x", 2*c.RxCookieLen, c.RxCookie)
	}
	if c.TxCookieLen > 0 {
		session += fmt.Sprintf(" peer_cookie %0*x", 2*c.TxCookieLen, c.TxCookie)
	}
	if c.L2Spec == L2SpecDefault {
		session += " l2spec_type default"
	} else {
		session += " l2spec_type none"
	}
	if seq := peerSeq(c.Seq); seq != "" {
		session += " seq " + seq
	}
	underlay := c.UnderlayMTU
	if underlay == 0 {
		underlay = 1500
	}
	link := fmt.Sprintf("ip link set %s up mtu %d", ifname, c.InnerMTU(underlay))
	return []string{tunnel, session, link}, nil
}

// Warnings lists what is valid in c but will not work with some peers,
// one sentence each, for the port to log at start: seq=recv with a Linux
// peer (see ErrSeqRecvLinux).
func (c Config) Warnings() []string {
	if c.Seq == SeqRecv {
		return []string{"seq=recv works only with a peer that numbers its frames while ours carry no " +
			"numbers (a router configured to send sequence numbers unconditionally); not with Linux: " + seqRecvLinux}
	}
	return nil
}

// peerSeq is the kernel's seq for our sequencing mode: what we send, it
// checks (seq=send: its seq recv; it then numbers its own frames too, as it
// does whenever it receives numbered ones, which we accept). seq=recv has
// no counterpart (see ErrSeqRecvLinux).
func peerSeq(m SeqMode) string {
	switch m {
	case SeqSend:
		return "recv"
	case SeqBoth:
		return "both"
	}
	return ""
}
