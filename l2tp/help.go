package l2tp

// optionHelp is the table OptionHelp returns; keep it in step with
// ParseOptions and Validate.
const optionHelp = `L2TPv3 option string (QEMU's -netdev l2tpv3 keys, comma-separated key=value):

  src=ADDR          local address to bind (literal or host name)        required
  dst=ADDR          peer address (literal or host name)                 required
  udp=on|off        UDP encapsulation; off = IP protocol 115 (needs root) default off
  srcport=PORT      local UDP port, decimal 1..65535               required with udp=on
  dstport=PORT      peer UDP port, decimal 1..65535                required with udp=on
  ipv6=on|off       IPv6 underlay (addresses resolved as IPv6)          default off
  txsession=N       session ID written in sent packets (kernel peer_session_id) required
  rxsession=N       session ID expected in received ones (kernel session_id)
                                                                 default txsession
  txcookie=N        cookie written in sent packets (kernel cookie)     
  rxcookie=N        cookie expected in received ones (kernel peer_cookie)
                    both or neither; big-endian on the wire; default none
  cookie64=on|off   64-bit cookies; off = 32-bit        default off (QEMU: any cookie64 = 64)
  txcookie64=on|off  txcookie's length alone (8 or 4 bytes), as Linux's cookie;
  rxcookie64=on|off  rxcookie's (Linux's peer_cookie): e.g. 8 bytes out, 4 in. Not
                    with cookie64; an unset one is 4 bytes             default off
  counter=on|off    QEMU sublayer: 4 bytes, plain ++counter from 1, not checked on receive
                    (Linux: l2spec=default)                           default off
  pincounter=on|off QEMU sublayer: 4 bytes, always 0, not checked on receive
                    (QEMU itself sends no sublayer with pincounter alone: pair such a
                    QEMU with l2spec=none)                            default off
  offset=N          extra zero bytes after the header, 0..256           default 0
  l2spec=default|none  RFC 4719 sublayer (kernel l2spec_type)
                    default: none, or default with counter/pincounter/seq
  seq=none|send|recv|both  RFC 4719 sequence numbers (kernel seq): send writes S|ns;
                    recv drops packets without S, old, replayed and far-ahead ones (a
                    gap under 65536 is counted lost), and resyncs on the 6th in order
                    (peer restart). recv cannot work with Linux, which stops numbering
                    once it hears unnumbered frames: use both there (warned at start)
                                                                      default none
  reorder=N         with seq=recv|both: hold a frame that arrives ahead of the expected
                    number up to N ms (50, 50ms, 1s; at most 10s) and deliver in order
                    once the gap fills; when one has waited N the gap is counted lost
                    (sequence_lost) and delivery goes on (Linux: reorder_timeout)
                                                                      default off
  reorder-frames=M  how far ahead a frame may be held, 2..1024; a frame further ahead
                    gives up the oldest gaps (counted lost)            default 64
  pinpeer=on|off    drop packets whose source address (and UDP port) is not dst
                    default on for a literal dst, off for a host name
  peer-learning=on|off  a datagram that passes the session and cookie checks from
                    another address or port moves the peer there (a peer that migrated
                    or sits behind NAT); counted (peer_moves), logged. Needs a cookie:
                    cookies travel in clear, so whoever sees one can move the peer
                                                                      default off
  underlay-mtu=N    MTU of the path to the peer, 576..65535; the inner MTU offered to the
                    VM (VIRTIO_NET_F_MTU, host_mtu) is N - overhead - 14
                    default: the route's MTU toward dst, asked of the kernel at open (else 1500)
  oversize=fragment|drop  a frame whose encapsulated datagram exceeds the underlay MTU:
                    fragment sends it, the outer packet fragmenting (as QEMU; IPv4 without
                    DF); drop drops it and sets DF (IPv6: no local fragmentation either).
                    Counted either way (above_mtu)                  default fragment
  vlan=on|off       the inner MTU leaves room for one 802.1Q tag (4 bytes) for a guest
                    that tags its own frames: 1446 instead of 1450 on UDP/IPv4 1500
                                                                      default off
  tos=N|inherit     outer IPv4 TOS / IPv6 traffic class byte (DSCP<<2 | ECN), 0..255,
                    on every datagram, e.g. tos=0xb8 (EF); inherit copies each inner
                    IPv4/IPv6 packet's (Cisco "ip tos reflect"; not IP: 0)
                                                                  default the kernel's 0
  ttl=N             outer IPv4 TTL / IPv6 hop limit, 1..255       default the system's
  id=NAME           accepted and ignored (QEMU's netdev id)

Numbers: decimal or 0x hex; a leading 0 is refused (QEMU reads octal). Booleans:
on/off, yes/no, true/false; a bare key means on. A host name in dst is resolved again
every 30 s and after a send error. Refused, unlike QEMU: offset > 256;
session ID 0 (RFC 3931 reserves it); a key given twice; counter or
pincounter with l2spec=none or with seq; seq with l2spec=none.

Overhead: UDP/IPv4 with l2spec=default and no cookie is 20+8+12 = 40 bytes plus the
14-byte Ethernet header: inner MTU 1446 on a 1500 underlay (IP encap: 1458;
minus 4 or 8 for a cookie (the longer one if they differ), minus the offset; IPv6:
minus 20 more).
`

// OptionHelp returns a table of the option-string keys, their values,
// defaults and where they differ from QEMU, for the CLI's help output.
func OptionHelp() string { return optionHelp }
