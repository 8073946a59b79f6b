package frontend

import (
	"context"
	"fmt"
	"strings"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/pump"
)

// FrontEnd is where QEMU meets one port: a -netdev stream socket or a
// vhost-user socket. Both are wired the same way: the port learns how many
// queue pairs the front end serves before it starts, hands it the pump
// when it runs, and the front end attaches each VM-side queue pair it gets
// to that pump.
type FrontEnd interface {
	// Queues is the number of queue pairs the front end serves; the pump
	// is given as many before Run.
	Queues() int
	// Run serves QEMU through p until ctx ends or Close is called (nil),
	// or the network side fails (that error, pump.IsNetworkError): a
	// network failure ends the front end, whichever it is.
	Run(ctx context.Context, p *pump.Pump) error
	// Close stops serving and removes the socket file; idempotent.
	Close() error
	// Status reports the front end's state and counters.
	Status() Status
}

// Status is the QEMU side of a port: what it is, whether a VM is
// attached, and its counters (those that do not apply stay 0).
type Status struct {
	Kind           string `json:"kind"` // "stream" or "vhost-user"
	Address        string `json:"address"`
	Connected      bool   `json:"connected"`
	Connections    uint64 `json:"connections"`
	ProtocolErrors uint64 `json:"protocol_errors"` // stream: bad length prefix; vhost-user: bad message
	RingViolations uint64 `json:"ring_violations"`
	FromVMDropped  uint64 `json:"from_vm_dropped"`
	ToVMDropped    uint64 `json:"to_vm_dropped"`
	Waits          uint64 `json:"waits"`      // times the VM could not take frames
	WaitNanos      uint64 `json:"wait_nanos"` // time spent waiting for it (stream)
	MTU            int    `json:"mtu,omitempty"`
	OfferedMTU     int    `json:"offered_mtu,omitempty"` // vhost-user: VIRTIO_NET_F_MTU offered
	// vhost-user: connections ended by a fault in guest memory (the front end shrank the
	// file behind it), and the current guest's memory regions, of which how many are
	// sealed against shrinking (F_SEAL_SHRINK: QEMU's memory-backend-memfd by default).
	MemoryFaults  uint64 `json:"memory_faults"`
	GuestRegions  int    `json:"guest_regions"`
	SealedRegions int    `json:"sealed_regions"`
	// vhost-user guest offloads: whether CSUM/TSO are offered, frames whose
	// checksum was completed, TSO super-frames cut into segments.
	Offload           bool          `json:"offload,omitempty"`
	ChecksummedFrames uint64        `json:"csum_frames,omitempty"`
	SegmentedFrames   uint64        `json:"tso_frames,omitempty"`
	Queues            []QueueStatus `json:"queues,omitempty"` // vhost-user: per queue pair
	RefusedPeers      uint64        `json:"refused_peers"`    // connections refused by allow-uid=
}

// String names the front end as logs print it (vhost-user: with its queue
// pairs and offered MTU).
func (f Status) String() string { return f.Kind + " " + f.Address + f.vhostDetails() }

// QueueStatus is one vhost-user queue pair's frame counts.
type QueueStatus struct {
	FromVM uint64 `json:"from_vm_frames"` // frames the guest sent on the pair
	ToVM   uint64 `json:"to_vm_frames"`   // frames delivered into the pair
}

// vhostDetails is what String adds for vhost-user: " queues=N mtu=M".
func (f Status) vhostDetails() string {
	if f.OfferedMTU == 0 {
		return ""
	}
	return fmt.Sprintf(" queues=%d mtu=%d", len(f.Queues), f.OfferedMTU)
}

// QueueCounts prints the per-queue-pair frame counts, "" without any:
// "q0 from_vm=12 to_vm=10, q1 from_vm=3 to_vm=5".
func (f Status) QueueCounts() string {
	var b strings.Builder
	for i, q := range f.Queues {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "q%d from_vm=%d to_vm=%d", i, q.FromVM, q.ToVM)
	}
	return b.String()
}
