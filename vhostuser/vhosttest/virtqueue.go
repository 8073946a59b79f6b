package vhosttest

import (
	"encoding/binary"
	"errors"
	"time"

	"golang.org/x/sys/unix"
)

// Descriptor flags.
const (
	DescNext     = 1
	DescWrite    = 2
	DescIndirect = 4
)

// maxIndirect is the size of the indirect table reserved per head.
const maxIndirect = 32

// Seg is one buffer of a chain: guest physical address, length, device-writable or not.
type Seg struct {
	Addr  uint64
	Len   uint32
	Write bool
}

// Virtqueue is the driver side of a split virtqueue in guest memory, with its kick and
// call eventfds. It is not safe for concurrent use.
type Virtqueue struct {
	Mem               *Memory
	Num               uint16
	Desc, Avail, Used uint64 // guest physical addresses of the three areas
	Kick, Call        int    // eventfds: the driver writes Kick, the device writes Call
	EventIdx          bool   // honour avail_event when deciding to kick

	free      []uint16
	chainLen  []uint16
	indirect  []uint64 // per head: its indirect table
	availIdx  uint16   // next avail slot (shadow of avail->idx)
	published uint16   // avail->idx last published
	lastUsed  uint16
	buf       [8]byte
}

// NewVirtqueue lays out a ring of num entries (a power of two) in m and creates its eventfds.
func NewVirtqueue(m *Memory, num uint16, eventIdx bool) (*Virtqueue, error) {
	kick, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, err
	}
	call, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(kick)
		return nil, err
	}
	n := uint64(num)
	q := &Virtqueue{
		Mem: m, Num: num, Kick: kick, Call: call, EventIdx: eventIdx,
		Desc:     m.Alloc(16*n, 16),
		Avail:    m.Alloc(8+2*n, 4),
		Used:     m.Alloc(8+8*n, 4),
		chainLen: make([]uint16, num),
		indirect: make([]uint64, num),
	}
	for i := int(num) - 1; i >= 0; i-- {
		q.free = append(q.free, uint16(i))
	}
	return q, nil
}

// Close closes the eventfds (the back end holds its own duplicates).
func (q *Virtqueue) Close() {
	unix.Close(q.Kick)
	unix.Close(q.Call)
}

// SetDesc writes descriptor i verbatim, for tests that build broken chains.
func (q *Virtqueue) SetDesc(i uint16, addr uint64, n uint32, flags, next uint16) {
	b := q.Mem.At(q.Desc+16*uint64(i), 16)
	binary.LittleEndian.PutUint64(b[0:], addr)
	binary.LittleEndian.PutUint32(b[8:], n)
	binary.LittleEndian.PutUint16(b[12:], flags)
	binary.LittleEndian.PutUint16(b[14:], next)
}

// PushHead places head in the next avail slot without publishing it.
func (q *Virtqueue) PushHead(head uint16) {
	binary.LittleEndian.PutUint16(q.Mem.At(q.Avail+4+2*uint64(q.availIdx%q.Num), 2), head)
	q.availIdx++
}

// Free returns how many descriptors are free.
func (q *Virtqueue) Free() int { return len(q.free) }

// Add chains segs in the descriptor table and queues the chain (unpublished); false when
// the table lacks free descriptors.
func (q *Virtqueue) Add(segs []Seg) (uint16, bool) {
	if len(segs) == 0 || len(segs) > len(q.free) {
		return 0, false
	}
	ids := q.free[len(q.free)-len(segs):]
	q.free = q.free[:len(q.free)-len(segs)]
	for i, s := range segs {
		var flags, next uint16
		if s.Write {
			flags |= DescWrite
		}
		if i+1 < len(segs) {
			flags |= DescNext
			next = ids[i+1]
		}
		q.SetDesc(ids[i], s.Addr, s.Len, flags, next)
	}
	q.chainLen[ids[0]] = uint16(len(segs))
	q.PushHead(ids[0])
	return ids[0], true
}

// AddIndirect queues segs as one descriptor pointing at an indirect table.
func (q *Virtqueue) AddIndirect(segs []Seg) (uint16, bool) {
	if len(segs) == 0 || len(segs) > maxIndirect || len(q.free) == 0 {
		return 0, false
	}
	head := q.free[len(q.free)-1]
	q.free = q.free[:len(q.free)-1]
	if q.indirect[head] == 0 {
		q.indirect[head] = q.Mem.Alloc(16*maxIndirect, 16)
	}
	t := q.indirect[head]
	for i, s := range segs {
		b := q.Mem.At(t+16*uint64(i), 16)
		var flags, next uint16
		if s.Write {
			flags |= DescWrite
		}
		if i+1 < len(segs) {
			flags |= DescNext
			next = uint16(i + 1)
		}
		binary.LittleEndian.PutUint64(b[0:], s.Addr)
		binary.LittleEndian.PutUint32(b[8:], s.Len)
		binary.LittleEndian.PutUint16(b[12:], flags)
		binary.LittleEndian.PutUint16(b[14:], next)
	}
	q.SetDesc(head, t, uint32(16*len(segs)), DescIndirect, 0)
	q.chainLen[head] = 1
	q.PushHead(head)
	return head, true
}

// Publish makes the queued chains visible (avail->idx) and reports whether the device
// wants a kick: vring_need_event on avail_event with EVENT_IDX, else !NO_NOTIFY.
func (q *Virtqueue) Publish() bool {
	old := q.published
	q.published = q.availIdx
	q.Mem.Store16(q.Avail+2, q.availIdx) // an atomic: orders the ring writes before it
	if q.EventIdx {
		event := q.Mem.Load16(q.Used + 4 + 8*uint64(q.Num))
		return uint16(q.availIdx-event-1) < uint16(q.availIdx-old)
	}
	return q.Mem.Load16(q.Used)&1 == 0
}

// KickNow signals the kick eventfd.
func (q *Virtqueue) KickNow() {
	binary.NativeEndian.PutUint64(q.buf[:], 1)
	unix.Write(q.Kick, q.buf[:])
}

// PublishKick publishes and kicks when the device asked for it; it reports the kick.
func (q *Virtqueue) PublishKick() bool {
	if q.Publish() {
		q.KickNow()
		return true
	}
	return false
}

// PopUsed returns the next used element, freeing its descriptors.
func (q *Virtqueue) PopUsed() (id uint16, n uint32, ok bool) {
	if q.lastUsed == q.Mem.Load16(q.Used+2) {
		return 0, 0, false
	}
	e := q.Mem.At(q.Used+4+8*uint64(q.lastUsed%q.Num), 8)
	id = uint16(binary.LittleEndian.Uint32(e[0:]))
	n = binary.LittleEndian.Uint32(e[4:])
	q.lastUsed++
	d := id
	for range q.chainLen[id] {
		q.free = append(q.free, d)
		d = binary.LittleEndian.Uint16(q.Mem.At(q.Desc+16*uint64(d)+14, 2))
	}
	q.chainLen[id] = 0
	return id, n, true
}

// UsedIdx returns used->idx as the device published it.
func (q *Virtqueue) UsedIdx() uint16 { return q.Mem.Load16(q.Used + 2) }

// AvailEvent returns avail_event as the device published it.
func (q *Virtqueue) AvailEvent() uint16 { return q.Mem.Load16(q.Used + 4 + 8*uint64(q.Num)) }

// SetUsedEvent publishes used_event: the device notifies once used->idx passes it.
func (q *Virtqueue) SetUsedEvent(v uint16) { q.Mem.Store16(q.Avail+4+2*uint64(q.Num), v) }

// SetNoInterrupt sets or clears VRING_AVAIL_F_NO_INTERRUPT.
func (q *Virtqueue) SetNoInterrupt(on bool) {
	var f uint16
	if on {
		f = 1
	}
	q.Mem.Store16(q.Avail, f)
}

// Calls reads and clears the call eventfd's counter: the notifications since last time.
func (q *Virtqueue) Calls() uint64 {
	if _, err := unix.Read(q.Call, q.buf[:]); err != nil {
		return 0
	}
	return binary.NativeEndian.Uint64(q.buf[:])
}

// WaitCall waits up to d for a notification and consumes it.
func (q *Virtqueue) WaitCall(d time.Duration) error {
	fds := []unix.PollFd{{Fd: int32(q.Call), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, int(d/time.Millisecond))
	if err != nil {
		return err
	}
	if n == 0 {
		return errors.New("vhosttest: no notification")
	}
	q.Calls()
	return nil
}

// DescAddr returns the buffer address in descriptor id (what the driver put there).
func (q *Virtqueue) DescAddr(id uint16) uint64 {
	return binary.LittleEndian.Uint64(q.Mem.At(q.Desc+16*uint64(id), 8))
}

// ArmUsedEvent asks for a notification at the next used entry (EVENT_IDX used_event),
// clears a stale one, and reports whether an entry is already there, in which case the
// caller should not wait.
func (q *Virtqueue) ArmUsedEvent() bool {
	q.Calls()
	q.SetUsedEvent(q.lastUsed)
	return q.UsedIdx() != q.lastUsed
}
