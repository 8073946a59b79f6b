package l2tp

// The receive rule differs from the Linux kernel's on purpose. The kernel
// (l2tp_recv_data_seq without reorder_timeout) discards every packet that is
// not the expected one: packets behind it are discarded for good, and only
// after more than nr_oos_count_max (4) consecutive in-order packets ahead of
// it does it skip forward, so one lost packet costs five more. Here a packet
// a little ahead is accepted at once and the gap counted lost; a packet
// behind, or implausibly far ahead, is a discontinuity: dropped, unless it is
// the last of seqResync+1 consecutive in-order ones, which resyncs to it
// without counting the jump as lost. A peer that restarts its numbering thus
// costs seqResync drops and no bogus loss, wherever its old numbers were.

// seqResync is how many consecutive in-order discontinuous packets are
// dropped before the receiver resyncs: the next one in order is accepted
// (the kernel's five-packet count, applied to both sides of the window).
const seqResync = 5

// seqMaxGap bounds the gap ahead of the expected number that is taken as
// loss: 65,536 packets, 65 ms at a million packets a second. A larger jump
// is far more likely a peer that restarted (or a stale replay) than loss,
// so it has to be confirmed by seqResync in-order packets like one behind,
// and the jump is not counted in SeqLost.
const seqMaxGap = 1 << 16

// seqState is the receive side of RFC 4719 sequencing for one session:
// the next expected number and the run of discontinuous packets since.
type seqState struct {
	synced  bool   // a first sequenced packet has been accepted
	next    uint32 // expected ns
	oosLast uint32 // ns of the last packet dropped as discontinuous
	oosRun  int    // consecutive in-order discontinuous packets ending at oosLast
}

// check decides on a received 24-bit ns: the first packet, the expected one
// and one less than seqMaxGap ahead are accepted, the gap ahead returned as
// lost; any other (old, duplicate, replay, far ahead) is refused, unless
// seqResync in-order ones were refused just before it: then the receiver
// resyncs to it (a restarted peer) and accepts it, with nothing lost.
func (s *seqState) check(ns uint32) (accept bool, lost uint32) {
	if !s.synced {
		s.synced = true
		s.next = (ns + 1) & seqMask
		s.oosRun = 0
		return true, 0
	}
	ahead := (ns - s.next) & seqMask
	if ahead < seqMaxGap {
		s.next = (ns + 1) & seqMask
		s.oosRun = 0
		return true, ahead
	}
	if s.resyncs(ns) {
		s.next = (ns + 1) & seqMask
		return true, 0
	}
	return false, 0
}

// resyncs counts ns, a discontinuous packet, in the run of in-order ones
// and reports whether the run is long enough to resync to it (the run then
// starts over; the caller moves next).
func (s *seqState) resyncs(ns uint32) bool {
	if s.oosRun > 0 && ns == (s.oosLast+1)&seqMask {
		s.oosRun++
	} else {
		s.oosRun = 1
	}
	s.oosLast = ns
	if s.oosRun > seqResync {
		s.oosRun = 0
		return true
	}
	return false
}
