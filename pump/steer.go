package pump

import (
	"encoding/binary"
	"errors"
)

// rxQueue is a VM port that is one of several queue pairs the front end may
// enable and disable (a vhost-user queue pair of a multiqueue NIC). Frames
// are steered only to enabled ones.
type rxQueue interface {
	// RXEnabled reports whether the front end has the RX ring enabled.
	RXEnabled() bool
	// DeliverFrames is WriteFrames that, instead of waiting while the RX
	// ring is disabled, returns the frames delivered so far and an error
	// with a RXDisabled() method that says true (vhostuser.ErrRXDisabled);
	// any other error means the port is gone.
	DeliverFrames(frames [][]byte) (int, error)
}

// steerer spreads received batches over the attached queue pairs. It is
// owned by the RunNetToVM goroutine and allocates nothing per batch.
type steerer struct {
	sub  [MaxQueues][][]byte // one sub-batch per queue pair
	live [MaxQueues]int      // the enabled queue pairs of the current batch
}

// newSteerer makes sub-batches with room for a whole batch each.
func newSteerer(batch int) *steerer {
	s := &steerer{}
	for i := range s.sub {
		s.sub[i] = make([][]byte, 0, batch)
	}
	return s
}

// steer splits frames by flow over the enabled pairs of set and delivers
// each pair's share in order. With no pair enabled yet, everything waits
// for the first attached one (flush-on-peer-ready).
func (s *steerer) steer(p *Pump, set *portSet, frames [][]byte) {
	live := s.enabled(set)
	if len(live) <= 1 {
		q := set.live[0]
		if len(live) == 1 {
			q = live[0]
		}
		p.deliver(set.ports[q], frames)
		return
	}
	n := uint64(len(live))
	for _, f := range frames {
		q := live[uint64(flowHash(f))*n>>32]
		s.sub[q] = append(s.sub[q], f)
	}
	for _, q := range live {
		if len(s.sub[q]) == 0 {
			continue
		}
		s.deliverSteered(p, set, q, s.sub[q])
		// This pair's share is delivered: out of the ring occupancy.
		p.toVM.Add(-int64(len(s.sub[q])))
		clear(s.sub[q]) // do not keep the receive ring's frames reachable
		s.sub[q] = s.sub[q][:0]
	}
}

// enabled lists the attached pairs whose RX ring is enabled; a port that is
// not an rxQueue (a stream) always is.
func (s *steerer) enabled(set *portSet) []int {
	live := s.live[:0]
	for _, q := range set.live {
		if r, ok := set.ports[q].port.(rxQueue); !ok || r.RXEnabled() {
			live = append(live, q)
		}
	}
	return live
}

// deliverSteered delivers frames to pair q. If the guest disables that RX
// ring meanwhile (it switched to fewer queue pairs), the rest goes to
// another enabled pair; with none left it waits on q like deliver.
func (s *steerer) deliverSteered(p *Pump, set *portSet, q int, frames [][]byte) {
	for range set.live {
		r, ok := set.ports[q].port.(rxQueue)
		if !ok {
			break
		}
		n, err := r.DeliverFrames(frames)
		frames = frames[n:]
		if err == nil {
			return
		}
		// Decide on the error, not on the ring's state now: the guest may
		// have enabled the ring again since, and that does not make the
		// port dead.
		if !isRXDisabled(err) { // the VM went away
			set.ports[q].port.Close()
			p.vmDown(len(frames))
			return
		}
		next := s.other(set, q)
		if next < 0 {
			break
		}
		q = next
	}
	p.deliver(set.ports[q], frames)
}

// other returns an attached pair other than q whose RX ring is enabled, or -1.
func (s *steerer) other(set *portSet, q int) int {
	for _, i := range set.live {
		if r, ok := set.ports[i].port.(rxQueue); i != q && (!ok || r.RXEnabled()) {
			return i
		}
	}
	return -1
}

// flowHash hashes what identifies a frame's flow: the IPv4 or IPv6
// addresses and, for TCP, UDP and SCTP (not fragments), the ports; for
// other frames the MAC addresses. Frames of one flow hash alike, so a flow
// stays on one queue pair and in order; frames are not trusted, every read
// is bounds-checked.
func flowHash(f []byte) uint32 {
	if len(f) < 14 {
		return 0
	}
	off, et := 14, binary.BigEndian.Uint16(f[12:])
	if et == 0x8100 && len(f) >= 18 { // one VLAN tag
		off, et = 18, binary.BigEndian.Uint16(f[16:])
	}
	h := uint64(et)
	switch {
	case et == 0x0800 && len(f) >= off+20:
		ip := f[off:]
		h = mix(h, uint64(binary.BigEndian.Uint32(ip[12:]))<<32|uint64(binary.BigEndian.Uint32(ip[16:])))
		ihl := int(ip[0]&0x0f) * 4
		fragment := binary.BigEndian.Uint16(ip[6:])&0x3fff != 0
		if !fragment && hasPorts(ip[9]) && ihl >= 20 && len(ip) >= ihl+4 {
			h = mix(h, uint64(binary.BigEndian.Uint32(ip[ihl:]))|uint64(ip[9])<<32)
		}
	case et == 0x86dd && len(f) >= off+40:
		ip := f[off:]
		for i := 8; i < 40; i += 8 {
			h = mix(h, binary.BigEndian.Uint64(ip[i:]))
		}
		if hasPorts(ip[6]) && len(ip) >= 44 {
			h = mix(h, uint64(binary.BigEndian.Uint32(ip[40:]))|uint64(ip[6])<<32)
		}
	default:
		h = mix(h, uint64(binary.BigEndian.Uint32(f[0:]))<<16|uint64(binary.BigEndian.Uint16(f[4:])))
		h = mix(h, uint64(binary.BigEndian.Uint32(f[6:]))<<16|uint64(binary.BigEndian.Uint16(f[10:])))
	}
	return uint32(h ^ h>>32)
}

// hasPorts reports whether an IP protocol starts with 16-bit source and
// destination ports.
func hasPorts(proto byte) bool { return proto == 6 || proto == 17 || proto == 132 }

// mix folds v into h (a multiply-xorshift step; plenty for spreading flows).
func mix(h, v uint64) uint64 {
	h ^= v
	h *= 0x9e3779b97f4a7c15
	return h ^ h>>29
}

// isRXDisabled reports whether a DeliverFrames error says the ring is
// disabled rather than gone (see rxQueue).
func isRXDisabled(err error) bool {
	var d interface{ RXDisabled() bool }
	return errors.As(err, &d) && d.RXDisabled()
}
