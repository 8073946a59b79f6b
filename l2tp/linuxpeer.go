package l2tp

import (
	"errors"
	"fmt"
	"strings"
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
// RxCookie, its peer_cookie our TxCookie, and so on. ifname names the
// kernel's interface; the MTU set on it is InnerMTU of UnderlayMTU (1500
// when it is left to the route: the peer's route is not ours to ask).
// seq=recv is refused with ErrSeqRecvLinux, an offset with the reason.
func (c Config) LinuxPeerCommands(ifname string, tunnelID uint32) ([]string, error) {
	return LinuxPeerTunnel([]Config{c}, tunnelID, []string{ifname})
}

// LinuxPeerTunnel returns the commands for a Linux host that is the far end
// of one tunnel carrying several sessions (one group of PeerTunnels): one
// `ip l2tp add tunnel`, then each session and its interface ifnames[i], as
// LinuxPeerCommands does for one.
func LinuxPeerTunnel(sessions []Config, tunnelID uint32, ifnames []string) ([]string, error) {
	if err := checkPeerTunnel(sessions, ifnames); err != nil {
		return nil, err
	}
	c := sessions[0]
	encap, ports := "ip", ""
	if c.Encap == EncapUDP {
		encap = "udp"
		ports = fmt.Sprintf(" udp_sport %d udp_dport %d", c.DstPort, c.SrcPort)
	}
	cmds := []string{fmt.Sprintf("ip l2tp add tunnel tunnel_id %d peer_tunnel_id %d encap %s local %s remote %s%s",
		tunnelID, tunnelID, encap, c.Dst, c.Src, ports)}
	for i, s := range sessions {
		session, err := s.linuxSession(ifnames[i], tunnelID)
		if err != nil {
			return nil, err
		}
		cmds = append(cmds, session, fmt.Sprintf("ip link set %s up mtu %d", ifnames[i], s.InnerMTU(s.peerUnderlay())))
	}
	return cmds, nil
}

// linuxSession is the `ip l2tp add session` command for c's far end.
func (c Config) linuxSession(ifname string, tunnelID uint32) (string, error) {
	if c.Seq == SeqRecv {
		return "", ErrSeqRecvLinux
	}
	if c.Offset != 0 {
		return "", fmt.Errorf("l2tpv3: offset=%d has no Linux peer: the kernel has had no payload offset since Linux 4.16", c.Offset)
	}
	session := fmt.Sprintf("ip l2tp add session name %s tunnel_id %d session_id %d peer_session_id %d",
		ifname, tunnelID, c.PeerSessionID, c.SessionID)
	// The kernel sends its "cookie" and expects its "peer_cookie".
	if c.RxCookieLen > 0 {
		session += fmt.Sprintf(" cookie %0*x", 2*c.RxCookieLen, c.RxCookie)
	}
	if c.TxCookieLen > 0 {
		session += fmt.Sprintf(" peer_cookie %0*x", 2*c.TxCookieLen, c.TxCookie)
	}
	session += " l2spec_type " + c.L2Spec.String()
	if seq := peerSeq(c.Seq); seq != "" {
		session += " seq " + seq
	}
	return session, nil
}

// peerUnderlay is the underlay MTU the far end's interface MTU is figured
// from: UnderlayMTU, or 1500 when it is left to our route.
func (c Config) peerUnderlay() int {
	if c.UnderlayMTU == 0 {
		return 1500
	}
	return c.UnderlayMTU
}

// checkPeerTunnel refuses a session list that is not one far-end tunnel:
// empty, names missing, sessions of different tunnels, or two sessions the
// far end would receive on the same ID.
func checkPeerTunnel(sessions []Config, ifnames []string) error {
	if len(sessions) == 0 || len(ifnames) != len(sessions) {
		return fmt.Errorf("l2tpv3: peer tunnel: %d sessions, %d interface names", len(sessions), len(ifnames))
	}
	seen := map[uint32]bool{}
	for _, s := range sessions {
		if s.peerTunnel() != sessions[0].peerTunnel() {
			return fmt.Errorf("l2tpv3: peer tunnel: session %d (%s) and session %d (%s) are not one tunnel",
				sessions[0].SessionID, sessions[0].peerTunnel(), s.SessionID, s.peerTunnel())
		}
		if seen[s.PeerSessionID] {
			return fmt.Errorf("l2tpv3: peer tunnel: two sessions send txsession=%d: the far end could not tell them apart", s.PeerSessionID)
		}
		seen[s.PeerSessionID] = true
	}
	return nil
}

// peerTunnel names what makes sessions one tunnel at the far end: the
// encapsulation, the IP version, both addresses and (UDP) both ports.
func (c Config) peerTunnel() string {
	s := fmt.Sprintf("%s %s -> %s", c.Encap, c.Src, c.Dst)
	if c.Encap == EncapUDP {
		s = fmt.Sprintf("udp %s:%d -> %s:%d", c.Src, c.SrcPort, c.Dst, c.DstPort)
	}
	if c.IPv6 {
		s += " ipv6"
	}
	return s
}

// PeerTunnels groups sessions into the tunnels their far ends need, in the
// order first seen: sessions with the same encapsulation, addresses and
// ports are one tunnel there (the kernel ties a tunnel to one peer).
func PeerTunnels(sessions []Config) [][]Config {
	var groups [][]Config
	index := map[string]int{}
	for _, s := range sessions {
		k := s.peerTunnel()
		i, ok := index[k]
		if !ok {
			i = len(groups)
			index[k] = i
			groups = append(groups, nil)
		}
		groups[i] = append(groups[i], s)
	}
	return groups
}

// VyOSPeerCommands returns the VyOS configuration commands (`set interfaces
// l2tpv3 …`, VyOS 1.3/1.4 syntax as documented; not run on VyOS) that make
// a VyOS router the far end of the tunnel's sessions, one interface each
// (ifnames must be l2tpethN). VyOS has no cookie, seq or l2spec knob and
// always uses the kernel's default sublayer, so cookies, seq other than
// none, l2spec=none and an offset are refused; so is more than one session
// over UDP, since every VyOS interface opens a tunnel of its own.
func VyOSPeerCommands(sessions []Config, tunnelID uint32, ifnames []string) ([]string, error) {
	if err := checkPeerTunnel(sessions, ifnames); err != nil {
		return nil, err
	}
	if len(sessions) > 1 && sessions[0].Encap == EncapUDP {
		return nil, errors.New("l2tpv3: VyOS makes one tunnel per l2tpv3 interface, so sessions sharing one UDP tunnel have no VyOS peer: give each its own UDP port")
	}
	var cmds []string
	for i, c := range sessions {
		if err := c.vyosCanServe(); err != nil {
			return nil, err
		}
		set := "set interfaces l2tpv3 " + ifnames[i] + " "
		cmds = append(cmds, set+"encapsulation "+c.Encap.String(),
			set+"source-address "+c.Dst, set+"remote "+c.Src)
		if c.Encap == EncapUDP {
			cmds = append(cmds, fmt.Sprintf("%ssource-port %d", set, c.DstPort), fmt.Sprintf("%sdestination-port %d", set, c.SrcPort))
		}
		id := tunnelID + uint32(i)
		cmds = append(cmds, fmt.Sprintf("%stunnel-id %d", set, id), fmt.Sprintf("%speer-tunnel-id %d", set, id),
			fmt.Sprintf("%ssession-id %d", set, c.PeerSessionID), fmt.Sprintf("%speer-session-id %d", set, c.SessionID),
			fmt.Sprintf("%smtu %d", set, c.InnerMTU(c.peerUnderlay())))
	}
	return cmds, nil
}

// vyosCanServe refuses what a VyOS l2tpv3 interface cannot express.
func (c Config) vyosCanServe() error {
	switch {
	case c.TxCookieLen != 0 || c.RxCookieLen != 0:
		return errors.New("l2tpv3: VyOS l2tpv3 interfaces have no cookie setting: drop txcookie/rxcookie for a VyOS peer")
	case c.Seq != SeqNone:
		return fmt.Errorf("l2tpv3: seq=%s: VyOS l2tpv3 interfaces have no sequencing setting", c.Seq)
	case c.L2Spec != L2SpecDefault:
		return errors.New("l2tpv3: VyOS always sends the 4-byte default sublayer: use l2spec=default (or counter=on)")
	case c.Offset != 0:
		return fmt.Errorf("l2tpv3: offset=%d: VyOS has no payload offset", c.Offset)
	}
	return nil
}

// QEMUPeerOptions returns the `-netdev l2tpv3` option string of a QEMU that
// is the far end of c, with netdev id id. Refused, with the reason: cookie
// lengths that differ per direction and seq other than none (QEMU has
// neither). l2spec=default maps to counter=on (QEMU does not check the
// sublayer it receives, and we ignore its counter under seq=none).
func (c Config) QEMUPeerOptions(id string) (string, error) {
	switch {
	case c.TxCookieLen != c.RxCookieLen:
		return "", fmt.Errorf("l2tpv3: txcookie64/rxcookie64: QEMU has one cookie length for both directions (ours: %d bytes out, %d in)",
			c.TxCookieLen, c.RxCookieLen)
	case c.Seq != SeqNone:
		return "", fmt.Errorf("l2tpv3: seq=%s: QEMU has no RFC 4719 sequencing (its counter=on is not checked)", c.Seq)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "l2tpv3,id=%s,src=%s,dst=%s", id, c.Dst, c.Src)
	if c.Encap == EncapUDP {
		fmt.Fprintf(&b, ",udp=on,srcport=%d,dstport=%d", c.DstPort, c.SrcPort)
	}
	if c.IPv6 {
		b.WriteString(",ipv6=on")
	}
	fmt.Fprintf(&b, ",txsession=%#x,rxsession=%#x", c.SessionID, c.PeerSessionID)
	if c.TxCookieLen != 0 {
		if c.TxCookieLen == 8 {
			b.WriteString(",cookie64=on") // any cookie64 key means 64 bits to QEMU
		}
		fmt.Fprintf(&b, ",txcookie=%#x,rxcookie=%#x", c.RxCookie, c.TxCookie)
	}
	switch {
	case c.Counter == CounterPinned:
		b.WriteString(",counter=on,pincounter=on") // pincounter alone sends no sublayer in QEMU
	case c.L2Spec == L2SpecDefault:
		b.WriteString(",counter=on")
	}
	if c.Offset != 0 {
		fmt.Fprintf(&b, ",offset=%d", c.Offset)
	}
	return b.String(), nil
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
