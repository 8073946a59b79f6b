package l2tp

import (
	"encoding/json"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/cpu"
)

// Drop is the reason a packet or frame was dropped, counted in Stats.
type Drop uint8

const (
	// DropSession: received session ID is not Config.SessionID.
	DropSession Drop = iota
	// DropCookie: received cookie is not Config.RxCookie.
	DropCookie
	// DropSequence: no S bit under seq=recv|both, or an old/replayed number.
	DropSequence
	// DropTruncated: the datagram was larger than the receive buffer.
	DropTruncated
	// DropSource: the source address or port is not the pinned peer.
	DropSource
	// DropMalformed: bad IPv4 header, L2TP version, or too short.
	DropMalformed
	// DropControl: an L2TP control message (T bit, or session 0 over IP).
	DropControl
	// DropOversize: a frame too big for one datagram, or (oversize=drop)
	// for the underlay MTU, not sent.
	DropOversize
	// DropSendError: sendmmsg refused the packet twice in a row (EMSGSIZE,
	// ENETUNREACH…; once may be the one-shot error an ICMP message left).
	DropSendError
	// DropVMDown: a frame arrived while no VM was attached (counted by the
	// backend through AddDrop).
	DropVMDown
	// DropKernel: the kernel dropped datagrams for this socket (SO_RXQ_OVFL,
	// receive buffer full).
	DropKernel
	// DropLinkDown: the port's link was set down in that direction
	// (counted by the backend, as the next three).
	DropLinkDown
	// DropImpairLoss: lost on purpose (impairment loss, random or
	// Gilbert–Elliott).
	DropImpairLoss
	// DropImpairRate: the queue behind an impairment rate limit was full.
	DropImpairRate
	// DropImpairLimit: the impairment delay line was full and its spec set
	// limit (drop rather than hold the sender back).
	DropImpairLimit
	// DropVMSlow: the session's VM did not take frames while other
	// sessions of its shared tunnel kept the socket busy, and its queue
	// was full.
	DropVMSlow
)

// NumDrops is the number of Drop reasons; StatsSnapshot.Drops is indexed by Drop.
const NumDrops = int(DropVMSlow) + 1

// dropNames are the counter names, as metrics and logs print them.
var dropNames = [NumDrops]string{"session", "cookie", "sequence", "truncated",
	"source", "malformed", "control", "oversize", "send_error", "vm_down", "kernel",
	"link_down", "impair_loss", "impair_rate", "impair_limit", "vm_slow"}

// String returns the reason's counter name ("session", "send_error", …).
func (d Drop) String() string {
	if int(d) < NumDrops {
		return dropNames[d]
	}
	return "drop(" + strconv.Itoa(int(d)) + ")"
}

// NetError is the kind of an error the network or this host reported for
// datagrams already sent: an ICMP error, or a local one, read from the
// socket's error queue (IP_RECVERR). Each is counted in Stats; a frame it
// names was lost past the socket.
type NetError uint8

const (
	// NetErrUnreachable: host or network unreachable, or time exceeded.
	NetErrUnreachable NetError = iota
	// NetErrRefused: port or protocol unreachable (nothing listens at the
	// peer).
	NetErrRefused
	// NetErrProhibited: communication administratively prohibited.
	NetErrProhibited
	// NetErrTooBig: fragmentation needed / packet too big, or above this
	// host's MTU with DF set.
	NetErrTooBig
	// NetErrOther: any other error.
	NetErrOther
)

// NumNetErrors is the number of NetError kinds; StatsSnapshot.NetErrors is
// indexed by NetError.
const NumNetErrors = int(NetErrOther) + 1

// netErrorNames are the kinds' names, as metrics and JSON print them.
var netErrorNames = [NumNetErrors]string{"unreachable", "refused", "prohibited", "too_big", "other"}

// String returns the kind's name ("unreachable", "too_big", …).
func (e NetError) String() string {
	if int(e) < NumNetErrors {
		return netErrorNames[e]
	}
	return "net_error(" + strconv.Itoa(int(e)) + ")"
}

// txSide reports whether the TX goroutine counts this reason, which decides
// the cache line it lives on.
func (d Drop) txSide() bool { return d == DropOversize || d == DropSendError }

// Stats are one tunnel's counters. Each field is written by one direction's
// goroutine (RX or TX, on separate cache lines) and read atomically by any
// goroutine through Snapshot. Byte counts are Ethernet frame bytes, without
// the L2TPv3 header. The zero value is ready to use.
type Stats struct {
	_         cpu.CacheLinePad
	rxPackets atomic.Uint64
	rxBytes   atomic.Uint64
	seqLost   atomic.Uint64
	peerMoves atomic.Uint64 // peer-learning moves and re-resolved host names
	rxDrops   [NumDrops]atomic.Uint64
	_         cpu.CacheLinePad
	txPackets atomic.Uint64
	txBytes   atomic.Uint64
	txStalls  atomic.Uint64
	txStallNs atomic.Uint64
	txAbove   atomic.Uint64
	txDrops   [NumDrops]atomic.Uint64
	txNoBufs  atomic.Uint64 // ENOBUFS: the host's egress queue refused a datagram
	gsoFalls  atomic.Uint64 // GSO messages the kernel refused, resent one by one
	gsoPkts   atomic.Uint64 // frames sent inside GSO messages
	netErrs   [NumNetErrors]atomic.Uint64
	_         cpu.CacheLinePad
}

// AddDrop counts n drops for reason d; the backend uses it for DropVMDown.
// Safe from any goroutine.
func (s *Stats) AddDrop(d Drop, n uint64) {
	if int(d) >= NumDrops {
		return
	}
	if d.txSide() {
		s.txDrops[d].Add(n)
		return
	}
	s.rxDrops[d].Add(n)
}

// AddTxDrop is AddDrop for a reason the transmit goroutine counts (the
// backend's drops on the way to the network), on the transmit side's cache
// line.
func (s *Stats) AddTxDrop(d Drop, n uint64) {
	if int(d) < NumDrops {
		s.txDrops[d].Add(n)
	}
}

// addRx counts frames handed to the VM side.
func (s *Stats) addRx(packets, bytes uint64) {
	s.rxPackets.Add(packets)
	s.rxBytes.Add(bytes)
}

// addTx counts frames the kernel accepted for sending.
func (s *Stats) addTx(packets, bytes uint64) {
	s.txPackets.Add(packets)
	s.txBytes.Add(bytes)
}

// addStalls counts waits for socket writability and their total duration.
func (s *Stats) addStalls(n uint64, d time.Duration) {
	s.txStalls.Add(n)
	s.txStallNs.Add(uint64(d))
}

// StatsSnapshot is a plain copy of Stats at one moment.
type StatsSnapshot struct {
	RxPackets, RxBytes uint64 // frames delivered to the VM side
	TxPackets, TxBytes uint64 // frames sent
	Drops              [NumDrops]uint64
	SeqLost            uint64 // sequence numbers skipped by accepted packets
	TxStalls           uint64 // times sendmmsg said EAGAIN/ENOBUFS after progress
	TxStallNanos       uint64 // time from each such EAGAIN/ENOBUFS to the next send
	AboveMTU           uint64 // frames from the VM whose datagram exceeds the underlay MTU
	// TxQueueFull: times the host's egress queue (qdisc) refused a datagram
	// (ENOBUFS); it was kept and resent, the VM held back meanwhile.
	TxQueueFull uint64
	// GSOFallbacks: UDP GSO messages the kernel refused, sent one by one
	// instead; GSO is then off for a back-off and probed again.
	GSOFallbacks uint64
	// GSOPackets: frames sent inside UDP GSO messages (part of TxPackets).
	GSOPackets uint64
	// PeerMoves: times the peer moved (peer-learning=on, dst re-resolved).
	PeerMoves uint64
	// NetErrors: errors the network or host reported for sent datagrams
	// (ICMP, local), by kind.
	NetErrors [NumNetErrors]uint64
}

// Snapshot copies the counters (each read atomically, not all at one instant).
func (s *Stats) Snapshot() StatsSnapshot {
	v := StatsSnapshot{
		RxPackets: s.rxPackets.Load(), RxBytes: s.rxBytes.Load(),
		TxPackets: s.txPackets.Load(), TxBytes: s.txBytes.Load(),
		SeqLost: s.seqLost.Load(), TxStalls: s.txStalls.Load(),
		TxStallNanos: s.txStallNs.Load(), AboveMTU: s.txAbove.Load(),
		TxQueueFull: s.txNoBufs.Load(), GSOFallbacks: s.gsoFalls.Load(), GSOPackets: s.gsoPkts.Load(),
		PeerMoves: s.peerMoves.Load(),
	}
	for i := range v.Drops {
		v.Drops[i] = s.rxDrops[i].Load() + s.txDrops[i].Load()
	}
	for i := range v.NetErrors {
		v.NetErrors[i] = s.netErrs[i].Load()
	}
	return v
}

// Dropped is the sum of all drop counters.
func (v StatsSnapshot) Dropped() uint64 {
	var n uint64
	for _, d := range v.Drops {
		n += d
	}
	return n
}

// String is a one-line summary for logs and SIGUSR1, listing only non-zero
// drops, e.g. "rx 10 pkts 1480 B, tx 9 pkts 1332 B, drops cookie=1 kernel=3".
func (v StatsSnapshot) String() string {
	var b strings.Builder
	b.WriteString("rx " + strconv.FormatUint(v.RxPackets, 10) + " pkts " +
		strconv.FormatUint(v.RxBytes, 10) + " B, tx " +
		strconv.FormatUint(v.TxPackets, 10) + " pkts " +
		strconv.FormatUint(v.TxBytes, 10) + " B")
	sep := ", drops "
	for i, n := range v.Drops {
		if n != 0 {
			b.WriteString(sep + Drop(i).String() + "=" + strconv.FormatUint(n, 10))
			sep = " "
		}
	}
	if v.SeqLost != 0 {
		b.WriteString(", seq_lost " + strconv.FormatUint(v.SeqLost, 10))
	}
	if v.TxStalls != 0 {
		b.WriteString(", tx_stalls " + strconv.FormatUint(v.TxStalls, 10) +
			" (" + time.Duration(v.TxStallNanos).String() + ")")
	}
	if v.AboveMTU != 0 {
		b.WriteString(", above_mtu " + strconv.FormatUint(v.AboveMTU, 10))
	}
	if v.TxQueueFull != 0 {
		b.WriteString(", tx_queue_full " + strconv.FormatUint(v.TxQueueFull, 10))
	}
	if v.GSOFallbacks != 0 {
		b.WriteString(", gso_fallbacks " + strconv.FormatUint(v.GSOFallbacks, 10))
	}
	if v.PeerMoves != 0 {
		b.WriteString(", peer_moves " + strconv.FormatUint(v.PeerMoves, 10))
	}
	sep = ", net_errors "
	for i, n := range v.NetErrors {
		if n != 0 {
			b.WriteString(sep + NetError(i).String() + "=" + strconv.FormatUint(n, 10))
			sep = " "
		}
	}
	return b.String()
}

// statsJSON is StatsSnapshot as the admin API writes it.
type statsJSON struct {
	RxPackets    uint64            `json:"rx_packets"`
	RxBytes      uint64            `json:"rx_bytes"`
	TxPackets    uint64            `json:"tx_packets"`
	TxBytes      uint64            `json:"tx_bytes"`
	SeqLost      uint64            `json:"seq_lost"`
	TxStalls     uint64            `json:"tx_stalls"`
	TxStallNanos uint64            `json:"tx_stall_nanos"`
	AboveMTU     uint64            `json:"above_mtu"`
	TxQueueFull  uint64            `json:"tx_queue_full"`
	GSOFallbacks uint64            `json:"gso_fallbacks"`
	GSOPackets   uint64            `json:"gso_packets"`
	PeerMoves    uint64            `json:"peer_moves"`
	Drops        map[string]uint64 `json:"drops"`
	NetErrors    map[string]uint64 `json:"net_errors"`
}

// MarshalJSON writes the snapshot with drops keyed by reason name, as the
// admin API reports it.
func (v StatsSnapshot) MarshalJSON() ([]byte, error) {
	j := statsJSON{v.RxPackets, v.RxBytes, v.TxPackets, v.TxBytes, v.SeqLost, v.TxStalls, v.TxStallNanos,
		v.AboveMTU, v.TxQueueFull, v.GSOFallbacks, v.GSOPackets, v.PeerMoves, make(map[string]uint64, NumDrops), make(map[string]uint64, NumNetErrors)}
	for d := range Drop(NumDrops) {
		j.Drops[d.String()] = v.Drops[d]
	}
	for e := range NetError(NumNetErrors) {
		j.NetErrors[e.String()] = v.NetErrors[e]
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads what MarshalJSON wrote; unknown reasons are ignored.
func (v *StatsSnapshot) UnmarshalJSON(b []byte) error {
	var j statsJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*v = StatsSnapshot{RxPackets: j.RxPackets, RxBytes: j.RxBytes, TxPackets: j.TxPackets, TxBytes: j.TxBytes,
		SeqLost: j.SeqLost, TxStalls: j.TxStalls, TxStallNanos: j.TxStallNanos, AboveMTU: j.AboveMTU,
		TxQueueFull: j.TxQueueFull, GSOFallbacks: j.GSOFallbacks, GSOPackets: j.GSOPackets,
		PeerMoves: j.PeerMoves}
	for d := range Drop(NumDrops) {
		v.Drops[d] = j.Drops[d.String()]
	}
	for e := range NetError(NumNetErrors) {
		v.NetErrors[e] = j.NetErrors[e.String()]
	}
	return nil
}
