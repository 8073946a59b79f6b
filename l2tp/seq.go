package l2tp

// seqResync is how many consecutive in-order packets behind the expected
// number are dropped before the receiver resyncs: the next in-order one is
// accepted. This is the Linux kernel's rule (nr_oos_count_max = 4: the
// out-of-order packet and 4 in order after it are dropped, the 5th after
// it resyncs).
const seqResync = 5

// seqState is the receive side of RFC 4719 sequencing for one session:
// the next expected number and the run of old packets seen since.
type seqState struct {
	synced  bool   // a first sequenced packet has been accepted
	next    uint32 // expected ns
	oosLast uint32 // ns of the last packet dropped as old
	oosRun  int    // consecutive in-order old packets ending at oosLast
}

// check decides on a received 24-bit ns like an RFC 4719 receiver without
// reordering: the first packet, the expected one and one ahead (within half
// the number space) are accepted, the gap ahead returned as lost; a packet
// behind (old, duplicate, replay) is refused, unless seqResync in-order old
// packets were refused just before it: then the receiver resyncs to it (a
// restarted peer) and accepts it.
func (s *seqState) check(ns uint32) (accept bool, lost uint32) {
	if !s.synced {
		s.synced = true
		s.next = (ns + 1) & seqMask
		s.oosRun = 0
		return true, 0
	}
	ahead := (ns - s.next) & seqMask
	if ahead < 1<<23 {
		s.next = (ns + 1) & seqMask
		s.oosRun = 0
		return true, ahead
	}
	if s.oosRun > 0 && ns == (s.oosLast+1)&seqMask {
		s.oosRun++
	} else {
		s.oosRun = 1
	}
	s.oosLast = ns
	if s.oosRun > seqResync {
		s.next = (ns + 1) & seqMask
		s.oosRun = 0
		return true, 0
	}
	return false, 0
}
