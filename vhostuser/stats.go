package vhostuser

// Stats are a server's counters since it was created, over every front end it served.
// TX is the guest's transmit direction (frames read by ReadFrames), RX its receive direction
// (frames written by WriteFrames).
type Stats struct {
	Connections    uint64       // front ends served, the current one included
	ProtocolErrors uint64       // connections ended because of a malformed, unknown or failed message
	RingViolations uint64       // rings stopped because the guest broke the virtqueue rules
	MemoryFaults   uint64       // connections ended because touching guest memory faulted (SIGBUS: the front end shrank a region's file, or the host could not back a page)
	TXFrames       uint64       // frames handed to ReadFrames callers
	TXBytes        uint64       // their bytes, virtio-net header excluded
	TXDropped      uint64       // guest frames discarded: empty, larger than the buffer, a bad offload request, or on a disabled ring
	TXChecksummed  uint64       // guest frames whose TCP/UDP checksum the back end completed (NEEDS_CSUM)
	TXSegmented    uint64       // guest TSO super-frames cut into segments (each segment counts in TXFrames)
	RXFrames       uint64       // frames delivered into the guest
	RXBytes        uint64       // their bytes, virtio-net header excluded
	RXDropped      uint64       // frames no RX buffer layout of the ring could ever hold
	Kicks          uint64       // guest kicks that woke a parked worker
	Notifies       uint64       // used-buffer notifications sent to the guest
	Waits          uint64       // times a worker parked waiting for the guest
	MTU            int          // MTU set by the current front end (NET_SET_MTU), 0 if none
	Regions        int          // guest memory regions the current front end shared
	SealedRegions  int          // of those, how many it sealed against shrinking (F_SEAL_SHRINK), so they cannot fault
	Queues         []QueueStats // per queue pair, indexed by pair
}

// QueueStats are one queue pair's frame counts, to see how a multiqueue guest spreads its
// traffic.
type QueueStats struct {
	TXFrames uint64 // frames the guest sent on the pair's TX ring
	RXFrames uint64 // frames delivered into the pair's RX ring
}

// addVrings folds the per-vring counters of one session into st.
func (st *Stats) addVrings(vs []vringStats) {
	for i := range vs {
		v := &vs[i]
		st.RingViolations += v.violations.Load()
		st.Kicks += v.kicks.Load()
		st.Notifies += v.notifies.Load()
		st.Waits += v.waits.Load()
		if i/2 >= len(st.Queues) {
			st.Queues = append(st.Queues, QueueStats{})
		}
		q := &st.Queues[i/2]
		if i%2 == 0 {
			q.RXFrames += v.frames.Load()
			st.RXFrames += v.frames.Load()
			st.RXBytes += v.bytes.Load()
			st.RXDropped += v.dropped.Load()
		} else {
			q.TXFrames += v.frames.Load()
			st.TXFrames += v.frames.Load()
			st.TXBytes += v.bytes.Load()
			st.TXDropped += v.dropped.Load()
			st.TXChecksummed += v.csum.Load()
			st.TXSegmented += v.tso.Load()
		}
	}
}
