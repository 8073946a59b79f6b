package vhostuser

import "encoding/binary"

// Descriptor-chain violations; each stops the ring it was found on.
var (
	errHeadRange       = violation("avail ring names a descriptor beyond the queue size")
	errDescRange       = violation("descriptor next index beyond its table")
	errChainLoop       = violation("descriptor chain longer than the queue (loop)")
	errChainTooLong    = violation("descriptor chain longer than 256 descriptors")
	errIndirectOff     = violation("indirect descriptor without INDIRECT_DESC negotiated")
	errIndirectNested  = violation("indirect descriptor inside an indirect table")
	errIndirectNext    = violation("indirect descriptor with NEXT set")
	errIndirectLen     = violation("indirect table length zero, not a multiple of 16 or larger than the queue")
	errIndirectAddr    = violation("indirect table outside guest memory")
	errBufferAddr      = violation("buffer outside guest memory")
	errTXWritable      = violation("device-writable descriptor in a TX chain")
	errRXReadable      = violation("device-readable descriptor in an RX chain")
	errRXBufferTooTiny = violation("RX buffer smaller than the virtio-net header")
)

// descSize is the size of one split-ring descriptor: le64 addr, le32 len, le16 flags, le16 next.
const descSize = 16

// maxChainDescs bounds the descriptors of one chain, indirect ones included, and of all the
// buffers one received frame is spread over (DPDK's BUF_VECTOR_MAX): Linux uses at most
// MAX_SKB_FRAGS+2, and without a bound a guest could make every avail entry cost up to
// 32768 descriptors.
const maxChainDescs = 256

// maxWalk bounds the descriptors one ReadFrames or WriteFrames batch reads under the ring
// lock, so that whatever the guest posts, the control goroutine (GET_VRING_BASE,
// SET_MEM_TABLE) waits for at most one such batch (16 us here): a batch stops once it has
// read this many and the call takes the lock again. A frame never needs more than
// maxChainDescs, so every batch makes progress.
const maxWalk = 2048

// desc is one descriptor copied out of guest memory, so that the guest changing it while
// we look cannot make us see two different values.
type desc struct {
	addr  uint64
	len   uint32
	flags uint16
}

// chainWalker follows one descriptor chain, through at most one indirect table, and
// refuses everything virtio forbids: indexes out of range, loops (more descriptors than the
// table holds), nested or chained indirect tables, tables of bad length or outside memory;
// and chains longer than maxChainDescs. It counts every descriptor it reads in walked,
// which its user clears to bound the work of one call.
type chainWalker struct {
	mem           *memTable
	table         []byte // the descriptor table being walked: the ring's or an indirect one
	size          uint32 // entries in table
	next          uint32 // entry to read next
	more          bool   // another descriptor follows
	inIndirect    bool
	count         uint32 // descriptors read from table, bounded by size
	chain         uint32 // descriptors read for this chain, bounded by maxChainDescs
	allowIndirect bool
	walked        int // descriptors read since the user last cleared it, over every chain
}

// reset positions the walker on the chain starting at head in the ring's descriptor table.
func (w *chainWalker) reset(mem *memTable, ring []byte, num uint32, head uint16, allowIndirect bool) {
	*w = chainWalker{mem: mem, table: ring, size: num, next: uint32(head), more: true,
		allowIndirect: allowIndirect, walked: w.walked}
}

// step copies the next data descriptor of the chain into d; it returns false at the end of
// the chain and a violation when the chain is malformed.
func (w *chainWalker) step(d *desc) (bool, error) {
	for w.more {
		if w.next >= w.size {
			return false, errDescRange
		}
		w.count++
		w.chain++
		w.walked++
		if w.count > w.size {
			return false, errChainLoop
		}
		if w.chain > maxChainDescs {
			return false, errChainTooLong
		}
		b := w.table[w.next*descSize : w.next*descSize+descSize]
		addr := binary.LittleEndian.Uint64(b[0:])
		n := binary.LittleEndian.Uint32(b[8:])
		flags := binary.LittleEndian.Uint16(b[12:])
		next := binary.LittleEndian.Uint16(b[14:])
		if flags&descFIndirect != 0 {
			if err := w.enterIndirect(addr, n, flags); err != nil {
				return false, err
			}
			continue
		}
		if flags&descFNext != 0 {
			w.next = uint32(next)
		} else {
			w.more = false
		}
		*d = desc{addr: addr, len: n, flags: flags}
		return true, nil
	}
	return false, nil
}

// enterIndirect switches the walk to the indirect table a descriptor points at, after
// checking everything about it: the ring's queue size bounds its entries too, as DPDK does.
func (w *chainWalker) enterIndirect(addr uint64, n uint32, flags uint16) error {
	switch {
	case !w.allowIndirect:
		return errIndirectOff
	case w.inIndirect:
		return errIndirectNested
	case flags&descFNext != 0:
		return errIndirectNext
	case n == 0 || n%descSize != 0 || n/descSize > w.size:
		return errIndirectLen
	}
	table, ok := w.mem.gpaSlice(addr, uint64(n))
	if !ok {
		return errIndirectAddr
	}
	w.table, w.size, w.next, w.count, w.inIndirect = table, n/descSize, 0, 0, true
	return nil
}
