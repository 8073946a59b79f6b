package vhostuser

import "encoding/binary"

// Virtio feature bits this back end knows about (virtio 1.2 §5.1.3 and §6).
const (
	featNetCsum       uint64 = 1 << 0  // VIRTIO_NET_F_CSUM: the guest may leave TX checksums to us
	featNetHostTSO4   uint64 = 1 << 11 // VIRTIO_NET_F_HOST_TSO4: the guest may send TCPv4 super-frames
	featNetHostTSO6   uint64 = 1 << 12 // VIRTIO_NET_F_HOST_TSO6: the guest may send TCPv6 super-frames
	featNetHostECN    uint64 = 1 << 13 // VIRTIO_NET_F_HOST_ECN: ... also for flows that use ECN
	featNetMTU        uint64 = 1 << 3  // VIRTIO_NET_F_MTU: the guest reads the MTU from config space
	featNetMrgRxbuf   uint64 = 1 << 15 // VIRTIO_NET_F_MRG_RXBUF: a frame may span several RX buffers
	featGuestAnnounce uint64 = 1 << 21 // VIRTIO_NET_F_GUEST_ANNOUNCE: QEMU has the guest announce itself after migration
	featNetMQ         uint64 = 1 << 22 // VIRTIO_NET_F_MQ: several queue pairs
	featNotifyOnEmpty uint64 = 1 << 24 // VIRTIO_F_NOTIFY_ON_EMPTY: notify when the avail ring runs dry
	featLogAll        uint64 = 1 << 26 // VHOST_F_LOG_ALL: log every guest write (migration)
	featIndirectDesc  uint64 = 1 << 28 // VIRTIO_RING_F_INDIRECT_DESC: descriptor tables in guest memory
	featEventIdx      uint64 = 1 << 29 // VIRTIO_RING_F_EVENT_IDX: used_event/avail_event suppression
	featProtocol      uint64 = 1 << 30 // VHOST_USER_F_PROTOCOL_FEATURES
	featVersion1      uint64 = 1 << 32 // VIRTIO_F_VERSION_1
)

// vhost-user protocol feature bits (docs/interop/vhost-user.rst).
const (
	protoMQ       uint64 = 1 << 0  // GET_QUEUE_NUM and several queue pairs
	protoLogShmFD uint64 = 1 << 1  // SET_LOG_BASE shares the dirty log as an fd (migration)
	protoRARP     uint64 = 1 << 2  // SEND_RARP: announce the migrated guest's MAC
	protoReplyAck uint64 = 1 << 3  // need_reply answered with a u64 status
	protoNetMTU   uint64 = 1 << 4  // NET_SET_MTU
	protoMemSlots uint64 = 1 << 15 // CONFIGURE_MEM_SLOTS: ADD_MEM_REG / REM_MEM_REG
)

// Split-ring descriptor and ring flags (virtio 1.2 §2.7).
const (
	descFNext     = 1 // the chain continues at desc.next
	descFWrite    = 2 // device-writable buffer
	descFIndirect = 4 // the buffer is a table of descriptors

	availFNoInterrupt = 1 // avail->flags: the driver does not want used notifications
	usedFNoNotify     = 1 // used->flags: the device does not want kicks
)

// Virtio-net header sizes: 12 bytes with VERSION_1 or MRG_RXBUF (it carries num_buffers),
// 10 bytes for a legacy driver that negotiated neither.
const (
	netHdrLen       = 12
	netHdrLenLegacy = 10
	numBuffersOff   = 10 // offset of the le16 num_buffers field in the 12-byte header
)

// offeredFeatures returns the virtio feature set offered to the front end for cfg: the
// guest's transmit offloads unless cfg.NoOffload (see offload.go), never the receive ones.
func offeredFeatures(cfg *Config) uint64 {
	f := featVersion1 | featNetMrgRxbuf | featEventIdx | featIndirectDesc |
		featNotifyOnEmpty | featProtocol | featLogAll | featGuestAnnounce
	if !cfg.NoOffload {
		f |= featNetCsum | featNetHostTSO4 | featNetHostTSO6 | featNetHostECN
	}
	if cfg.Queues > 1 {
		f |= featNetMQ
	}
	if cfg.MTU > 0 {
		f |= featNetMTU
	}
	return f
}

// offeredProtocolFeatures returns the vhost-user protocol features this back end speaks.
func offeredProtocolFeatures() uint64 {
	return protoMQ | protoLogShmFD | protoRARP | protoReplyAck | protoNetMTU | protoMemSlots
}

// hdrLenFor returns the virtio-net header length a driver with the acked features uses.
func hdrLenFor(acked uint64) int {
	if acked&(featVersion1|featNetMrgRxbuf) != 0 {
		return netHdrLen
	}
	return netHdrLenLegacy
}

// putNetHdr writes a header for a received frame: no checksum or GSO information (those
// offloads are not offered), num_buffers set when the header is 12 bytes long.
func putNetHdr(h []byte, numBuffers uint16) {
	clear(h)
	if len(h) >= netHdrLen {
		binary.LittleEndian.PutUint16(h[numBuffersOff:], numBuffers)
	}
}
