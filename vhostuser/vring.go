package vhostuser

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"unsafe"
)

// maxQueueSize is the largest split virtqueue (virtio 1.2 §2.7: 32768 entries).
const maxQueueSize = 32768

// vring is one split virtqueue shared with the guest. The control goroutine configures it
// and a single worker (ReadFrames for TX, WriteFrames for RX) runs it.
type vring struct {
	// mu guards every field below. A worker holds it for one batch and never while parked
	// on the kick eventfd; the control goroutine holds it to change configuration, to stop
	// the ring or to swap the memory table. Each vring has its own lock, so the two
	// directions of a queue pair never contend.
	mu sync.Mutex

	index   int
	log     *slog.Logger
	stats   *vringStats
	onFault func(error) // ends the connection after a guest-memory fault (fault.go)

	// Front-end configuration.
	num       uint32 // queue size; 0 until SET_VRING_NUM
	addr      vringAddr
	addrSet   bool
	reread    bool // SET_VRING_ADDR arrived: take used->idx from guest memory at start
	lastAvail uint16
	kick      *eventFile
	call      *eventFile
	errf      *eventFile
	enabled   bool
	live      atomic.Bool // enabled, for readers without mu (QueuePair.RXEnabled)
	mem       *memTable
	dlog      *dirtyLog // the dirty log while LOG_ALL is acked, else nil (zero cost when off)

	// Derived from the acked features.
	eventIdx      bool
	mrg           bool
	indirect      bool
	notifyOnEmpty bool
	hdrLen        int

	// Running state.
	started   bool
	broken    error // set when the guest broke the ring rules; cleared by a restart
	qp        *QueuePair
	desc      []byte // 16*num bytes
	avail     []byte // the avail ring, widened to whole aligned 32-bit words
	availOff  int    // offset of the avail ring inside avail
	used      []byte // the used ring (4-aligned), widened to whole 32-bit words
	usedGPA   uint64 // guest-physical address of used[0], for the dirty log
	availIdx  uint16 // last avail->idx loaded
	usedIdx   uint16 // our used->idx, published by publishUsed
	usedFlags uint16
	signalled uint16 // used->idx at the last notification decision (EVENT_IDX)
	sigValid  bool

	walker chainWalker
	tx     txScratch // TX scratch: the frame being read
	segs   []seg     // RX scratch: the writable segments of the buffers gathered for a frame (maxChainDescs)
	bufs   []rxBuf   // RX scratch: the buffers gathered for a frame (maxChainDescs)
	hdr    [netHdrLen]byte
}

// vringStats counts what happened on one vring; written by its worker with atomics so
// Stats can read them from any goroutine.
type vringStats struct {
	frames     atomic.Uint64
	bytes      atomic.Uint64
	dropped    atomic.Uint64
	kicks      atomic.Uint64
	notifies   atomic.Uint64
	waits      atomic.Uint64
	violations atomic.Uint64
	csum       atomic.Uint64 // TX frames whose checksum the back end completed
	tso        atomic.Uint64 // TX super-frames cut into segments
}

// isRX reports whether the vring is the receive queue of its pair (even index).
func (v *vring) isRX() bool { return v.index%2 == 0 }

// configure derives the per-ring switches from the acked feature set.
func (v *vring) configure(acked uint64) {
	v.eventIdx = acked&featEventIdx != 0
	v.mrg = acked&featNetMrgRxbuf != 0
	v.indirect = acked&featIndirectDesc != 0
	v.notifyOnEmpty = acked&featNotifyOnEmpty != 0
	v.hdrLen = hdrLenFor(acked)
}

// violation is a guest error on a ring; the ring is stopped and counted, nothing else.
type violation string

// Error returns the violation's description.
func (e violation) Error() string { return string(e) }

// translate maps the three ring areas into this process through the memory table, widening
// the avail and used rings to whole aligned 32-bit words so their u16 indexes can be read
// and written with 32-bit atomics.
func (v *vring) translate() error {
	if v.mem == nil {
		return violation("no memory table")
	}
	if v.num == 0 || !v.addrSet {
		return violation("ring size or addresses not set")
	}
	num := uint64(v.num)
	evt := uint64(0)
	if v.eventIdx {
		evt = 2
	}
	a := v.addr
	if a.desc%16 != 0 || a.avail%2 != 0 || a.used%4 != 0 {
		return violation("ring areas misaligned")
	}
	if a.desc > math.MaxUint64-16*num || a.avail > math.MaxUint64-(2*num+16) ||
		a.used > math.MaxUint64-(8*num+16) {
		return violation("ring areas overflow the address space")
	}
	desc, ok := v.mem.uaddrSlice(a.desc, 16*num)
	if !ok {
		return violation("descriptor table outside guest memory")
	}
	availStart := a.avail &^ 3
	availEnd := (a.avail + 4 + 2*num + evt + 3) &^ 3
	avail, ok := v.mem.uaddrSlice(availStart, availEnd-availStart)
	if !ok {
		return violation("avail ring outside guest memory")
	}
	usedEnd := (a.used + 4 + 8*num + evt + 3) &^ 3
	used, ok := v.mem.uaddrSlice(a.used, usedEnd-a.used)
	if !ok {
		return violation("used ring outside guest memory")
	}
	if uintptr(unsafe.Pointer(&avail[0]))%4 != 0 || uintptr(unsafe.Pointer(&used[0]))%4 != 0 {
		return violation("ring areas misaligned in this process")
	}
	v.desc, v.avail, v.availOff, v.used = desc, avail, int(a.avail-availStart), used
	v.usedGPA = v.usedRingGPA()
	return nil
}

// word returns the aligned 32-bit word of b at off (a multiple of 4), bounds-checked.
func word(b []byte, off int) *uint32 {
	_ = b[off+3]
	return (*uint32)(unsafe.Pointer(&b[off]))
}

// load16 reads the little-endian u16 at b[off] with a 32-bit atomic load of its word: Go has
// no 16-bit atomics, and the atomic gives the acquire ordering the ring protocol needs.
func load16(b []byte, off int) uint16 {
	w := atomic.LoadUint32(word(b, off&^3))
	return uint16(w >> (uint(off&3) * 8))
}

// store16Fence writes the u16 at b[off] (2-aligned) and then performs an atomic
// read-modify-write of its word that adds zero: a full fence that orders the store before
// later loads without rewriting the other half, which may belong to the guest.
func store16Fence(b []byte, off int, val uint16) {
	p := (*uint16)(unsafe.Pointer(&b[off]))
	_ = b[off+1]
	*p = val
	atomic.AddUint32(word(b, off&^3), 0)
}

// availFlags returns avail->flags.
func (v *vring) availFlags() uint16 { return load16(v.avail, v.availOff) }

// usedEvent returns used_event, the avail ring's trailing field (EVENT_IDX).
func (v *vring) usedEvent() uint16 { return load16(v.avail, v.availOff+4+2*int(v.num)) }

// loadUsedIdx returns used->idx as guest memory holds it.
func (v *vring) loadUsedIdx() uint16 { return load16(v.used, 2) }

// refreshAvail reloads avail->idx and refuses an index that claims more than num new
// entries, which only a broken or hostile driver publishes.
func (v *vring) refreshAvail() error {
	idx := load16(v.avail, v.availOff+2)
	if uint32(idx-v.lastAvail) > v.num {
		return violation(fmt.Sprintf("avail index %d is more than %d ahead of %d", idx, v.num, v.lastAvail))
	}
	v.availIdx = idx
	return nil
}

// head returns the descriptor head published in avail slot i and checks it is in range.
func (v *vring) head(i uint16) (uint16, error) {
	h := binary.LittleEndian.Uint16(v.avail[v.availOff+4+2*int(uint32(i)&(v.num-1)):])
	if uint32(h) >= v.num {
		return 0, errHeadRange
	}
	return h, nil
}

// putUsed writes the used element for head at the next used slot; publishUsed makes it
// visible to the guest.
func (v *vring) putUsed(id uint16, n uint32) {
	off := 4 + 8*int(uint32(v.usedIdx)&(v.num-1))
	binary.LittleEndian.PutUint32(v.used[off:], uint32(id))
	binary.LittleEndian.PutUint32(v.used[off+4:], n)
	v.usedIdx++
}

// publishUsed stores used->flags and used->idx as one atomic 32-bit word after the used
// elements: the release store orders the elements before the index the guest polls.
func (v *vring) publishUsed() {
	atomic.StoreUint32(word(v.used, 0), uint32(v.usedFlags)|uint32(v.usedIdx)<<16)
	if v.dlog != nil {
		v.logUsed()
	}
}

// notify signals the call eventfd unless the guest suppressed it (EVENT_IDX used_event or
// NO_INTERRUPT), always when NOTIFY_ON_EMPTY asks for it; call after publishUsed.
func (v *vring) notify() {
	need := false
	if v.notifyOnEmpty && v.refreshAvail() == nil && v.availIdx == v.lastAvail {
		need = true
	} else if v.eventIdx {
		old, nw := v.signalled, v.usedIdx
		need = !v.sigValid || uint16(nw-v.usedEvent()-1) < uint16(nw-old)
	} else {
		need = v.availFlags()&availFNoInterrupt == 0
	}
	v.signalled, v.sigValid = v.usedIdx, true
	if need && v.call != nil {
		v.call.signal()
		v.stats.notifies.Add(1)
	}
}

// enableNotify asks the guest to kick on its next buffer (avail_event with EVENT_IDX, the
// NO_NOTIFY flag otherwise), fences, and re-reads avail->idx so that a buffer published
// meanwhile is seen now instead of never kicked. It reports whether avail->idx moved since
// the worker last read it, as the kernel's vhost_enable_notify does: buffers the worker has
// already seen and found too few (an RX frame that needs more) are no reason to stay awake.
func (v *vring) enableNotify() (bool, error) {
	seen := v.availIdx
	if v.eventIdx {
		store16Fence(v.used, 4+8*int(v.num), seen)
		if v.dlog != nil {
			v.logUsed()
		}
	} else {
		v.usedFlags &^= usedFNoNotify
		v.publishUsed()
	}
	if err := v.refreshAvail(); err != nil {
		return false, err
	}
	return v.availIdx != seen, nil
}

// disableNotify tells a driver without EVENT_IDX to stop kicking while the worker is busy;
// with EVENT_IDX the stale avail_event already suppresses kicks.
func (v *vring) disableNotify() {
	if !v.eventIdx && v.usedFlags&usedFNoNotify == 0 {
		v.usedFlags |= usedFNoNotify
		v.publishUsed()
	}
}

// start makes a configured ring live: it maps the ring areas, takes used->idx from guest
// memory after SET_VRING_ADDR (resuming after a reconnect or a guest reboot), and resets the
// notification state. A guest fault leaves the ring started but broken.
func (v *vring) start(acked uint64) {
	v.configure(acked)
	v.started, v.broken, v.sigValid = true, nil, false
	if acked&featProtocol == 0 {
		v.setEnabled(true)
	}
	if err := v.translate(); err != nil {
		v.fail(err)
		return
	}
	if v.reread {
		v.reread = false
		v.usedIdx = v.loadUsedIdx()
		if v.usedIdx != v.lastAvail {
			v.log.Info("vhostuser: resuming ring from used index", "vring", v.index,
				"base", v.lastAvail, "used", v.usedIdx)
			v.lastAvail = v.usedIdx
		}
	}
	v.availIdx = v.lastAvail
	v.usedFlags = 0
	v.publishUsed()
	v.signalStart()
	switch {
	case !v.isRX() && v.tx.spans == nil:
		v.tx.spans = make([]span, 0, maxChainDescs)
	case v.isRX() && v.bufs == nil:
		v.bufs = make([]rxBuf, maxChainDescs)
		v.segs = make([]seg, maxChainDescs)
	}
}

// signalStart notifies the guest when a ring (re)starts or gets a new call fd, as
// libvhost-user and passt do: a previous back end may have published used entries and died
// before signalling, and the guest would wait for that signal forever. A spurious
// notification only makes the driver look at its used ring.
func (v *vring) signalStart() {
	if v.call != nil && v.started {
		v.call.signal()
		v.stats.notifies.Add(1)
	}
}

// setCall installs the call fd (SET_VRING_CALL) and signals it on a started ring; it
// returns the one it replaces, for the caller to close.
func (v *vring) setCall(e *eventFile) *eventFile {
	old := v.call
	v.call = e
	v.signalStart()
	return old
}

// setEnabled enables or disables the ring (SET_VRING_ENABLE); called under v.mu.
func (v *vring) setEnabled(on bool) {
	v.enabled = on
	v.live.Store(on)
}

// remap re-translates a live ring after a memory-table or feature change.
func (v *vring) remap() {
	if v.started && v.broken == nil {
		if err := v.translate(); err != nil {
			v.fail(err)
		}
	}
}

// stop ends processing (GET_VRING_BASE, reset, disconnect): the kick fd is closed, which
// wakes a parked worker, and a new SET_VRING_KICK is needed to start again.
func (v *vring) stop() {
	v.started, v.qp = false, nil
	v.desc, v.avail, v.used = nil, nil, nil
	v.kick.close()
	v.kick = nil
}

// ErrRingBroken is wrapped (with net.ErrClosed) by the error ReadFrames or WriteFrames
// return once the guest broke a virtqueue rule on that ring; the ring stays stopped until
// the front end restarts it.
var ErrRingBroken = errors.New("vhostuser: guest broke the virtqueue rules")

// RingError is the error of a ring the guest broke. It matches ErrRingBroken and
// net.ErrClosed with errors.Is, so a caller that stops on net.ErrClosed stops here too.
type RingError struct {
	Vring  int   // the vring index (2i: RX of pair i, 2i+1: TX)
	Reason error // what the guest did
}

// Error names the ring and the guest's fault.
func (e *RingError) Error() string {
	return fmt.Sprintf("vhostuser: vring %d stopped: %v", e.Vring, e.Reason)
}

// Unwrap exposes the reason and both sentinels to errors.Is.
func (e *RingError) Unwrap() []error { return []error{e.Reason, ErrRingBroken, net.ErrClosed} }

// fail marks the ring broken, counts it, logs the reason once and signals the front end's
// error eventfd; the guest's bad ring costs that queue, never the process.
func (v *vring) fail(err error) {
	if v.broken != nil {
		return
	}
	v.broken = &RingError{Vring: v.index, Reason: err}
	v.stats.violations.Add(1)
	v.log.Warn("vhostuser: stopping vring", "vring", v.index, "reason", err.Error())
	if v.errf != nil {
		v.errf.signal()
	}
}
