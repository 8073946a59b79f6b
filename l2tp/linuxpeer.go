package l2tp

import "fmt"

// LinuxPeerCommands returns the `ip l2tp` and `ip link` commands that make
// a Linux host (kernel l2tp_eth) the other end of this pseudowire: its local
// address is our Dst, its session_id our PeerSessionID, its cookie our
// TxCookie, and so on. ifname names the kernel's interface; the MTU set
// on it is what the underlay carries without fragmenting (UnderlayMTU, or
// 1500 when it is left to the route: the peer's route is not ours to ask).
func (c Config) LinuxPeerCommands(ifname string, tunnelID uint32) []string {
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
	if c.CookieLen > 0 {
		// The kernel sends its "cookie" and expects its "peer_cookie".
		session += fmt.Sprintf(" cookie %0*x peer_cookie %0*x", 2*c.CookieLen, c.RxCookie, 2*c.CookieLen, c.TxCookie)
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
	return []string{tunnel, session, link}
}

// peerSeq mirrors our sequencing mode for the peer: what we send, it
// receives, and the other way round.
func peerSeq(m SeqMode) string {
	switch m {
	case SeqSend:
		return "recv"
	case SeqRecv:
		return "send"
	case SeqBoth:
		return "both"
	}
	return ""
}
