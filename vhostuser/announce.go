package vhostuser

import (
	"encoding/binary"
	"net"
)

// Announcer is a Handler that can tell the network where a migrated guest now is. After
// a live migration QEMU sends SEND_RARP to the destination's back end when the guest has
// no VIRTIO_NET_F_GUEST_ANNOUNCE (with it QEMU makes the guest announce itself, and the
// announcement arrives as ordinary TX frames). Announce is called from the control
// goroutine with the guest's MAC and a broadcast RARP frame for it, to be sent toward the
// network as if the guest had sent it; it must not block for long.
type Announcer interface {
	Announce(mac net.HardwareAddr, frame []byte)
}

// rarpFrameLen is a minimum Ethernet frame (without FCS): 14 + 28 bytes of RARP, padded.
const rarpFrameLen = 60

// RARPFrame builds the frame DPDK and QEMU's self-announce send for mac: a broadcast RARP
// "reverse request" (RFC 903, opcode 3) whose sender and target hardware addresses are mac
// and whose protocol addresses are zero, so switches re-learn mac's port.
func RARPFrame(mac net.HardwareAddr) []byte {
	f := make([]byte, rarpFrameLen)
	copy(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(f[6:12], mac)
	binary.BigEndian.PutUint16(f[12:], 0x8035) // ETH_P_RARP
	binary.BigEndian.PutUint16(f[14:], 1)      // hardware type: Ethernet
	binary.BigEndian.PutUint16(f[16:], 0x0800) // protocol type: IPv4
	f[18], f[19] = 6, 4                        // address lengths
	binary.BigEndian.PutUint16(f[20:], 3)      // reverse request
	copy(f[22:28], mac)                        // sender hardware address
	copy(f[32:38], mac)                        // target hardware address
	return f
}
