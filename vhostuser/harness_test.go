package vhostuser

import (
	"bytes"
	"cmp"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/vhostuser/vhosttest"
	"golang.org/x/sys/unix"
)

// allFeatures is what a modern Linux guest behind QEMU acks from our offer.
const allFeatures = vhosttest.FVersion1 | vhosttest.FMrgRxbuf | vhosttest.FEventIdx |
	vhosttest.FIndirectDesc | vhosttest.FNotifyOnEmpty | vhosttest.FProtocol | vhosttest.FMQ | vhosttest.FMTU

// allProto is every protocol feature a test front end asks for.
const allProto = vhosttest.PMQ | vhosttest.PReplyAck | vhosttest.PMTU

// testLogger discards logs unless VHOSTUSER_LOG is set (logging through t.Log would race
// the end of the test for goroutines that outlive it).
func testLogger() *slog.Logger {
	if os.Getenv("VHOSTUSER_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// recorder is a Handler that reports starts and stops on channels.
type recorder struct {
	started chan *QueuePair
	stopped chan int
}

// newRecorder makes a recorder with room for every event of a test.
func newRecorder() *recorder {
	return &recorder{started: make(chan *QueuePair, 64), stopped: make(chan int, 64)}
}

// QueuePairStarted records q.
func (r *recorder) QueuePairStarted(i int, q *QueuePair) { r.started <- q }

// QueuePairStopped records i.
func (r *recorder) QueuePairStopped(i int) { r.stopped <- i }

// waitStarted returns the next started pair or fails the test.
func (r *recorder) waitStarted(t testing.TB) *QueuePair {
	t.Helper()
	select {
	case q := <-r.started:
		return q
	case <-time.After(5 * time.Second):
		t.Fatal("no queue pair started")
		return nil
	}
}

// waitStopped returns the next stopped pair index or fails the test.
func (r *recorder) waitStopped(t testing.TB) int {
	t.Helper()
	select {
	case i := <-r.stopped:
		return i
	case <-time.After(5 * time.Second):
		t.Fatal("no queue pair stopped")
		return -1
	}
}

// rigOpts chooses what a rig negotiates.
type rigOpts struct {
	features uint64 // acked from the offer; 0 means allFeatures
	proto    uint64 // 0 means allProto
	num      uint16 // ring size; 0 means 256
	split    bool   // guest memory in two regions
	queues   int
	noStart  bool         // negotiate and set memory, but start no ring
	sealed   bool         // guest memory sealed against shrinking (F_SEAL_SHRINK)
	log      *slog.Logger // the server's logger; nil means testLogger()
}

// rig is a back end served over a socketpair with an in-process front end and guest.
type rig struct {
	t      testing.TB
	srv    *Server
	fe     *vhosttest.FrontEnd
	mem    *vhosttest.Memory
	rx, tx *vhosttest.Virtqueue
	q      *QueuePair
	h      *recorder
	done   chan error
	once   sync.Once
}

// newRig serves one end of a socketpair, negotiates, shares 8 MiB of guest
// memory and (unless noStart) starts queue pair 0.
func newRig(t testing.TB, o rigOpts) *rig {
	t.Helper()
	if o.features == 0 {
		o.features = allFeatures
	}
	if o.proto == 0 {
		o.proto = allProto
	}
	if o.num == 0 {
		o.num = 256
	}
	newMemory := vhosttest.NewMemory
	if o.sealed {
		newMemory = vhosttest.NewSealedMemory
	}
	mem, err := newMemory(8<<20, o.split)
	if err != nil {
		t.Fatal(err)
	}
	fe, conn, err := vhosttest.Pair()
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, fe: fe, mem: mem, h: newRecorder(), done: make(chan error, 1)}
	r.srv, err = New(Config{Queues: max(o.queues, 1), MTU: 1500, Logger: cmp.Or(o.log, testLogger())}, r.h)
	if err != nil {
		t.Fatal(err)
	}
	go func() { r.done <- r.srv.ServeConn(conn) }()
	t.Cleanup(r.close)
	if _, err := fe.Negotiate(o.features, o.proto); err != nil {
		t.Fatal(err)
	}
	if err := fe.SetMemTable(mem); err != nil {
		t.Fatal(err)
	}
	evt := o.features&vhosttest.FEventIdx != 0
	if r.rx, err = vhosttest.NewVirtqueue(mem, o.num, evt); err != nil {
		t.Fatal(err)
	}
	if r.tx, err = vhosttest.NewVirtqueue(mem, o.num, evt); err != nil {
		t.Fatal(err)
	}
	if !o.noStart {
		r.start()
	}
	return r
}

// start starts vrings 0 and 1 and waits for the queue pair.
func (r *rig) start() {
	r.t.Helper()
	if err := r.fe.StartQueue(0, r.rx, 0); err != nil {
		r.t.Fatal(err)
	}
	if err := r.fe.StartQueue(1, r.tx, 0); err != nil {
		r.t.Fatal(err)
	}
	r.q = r.h.waitStarted(r.t)
}

// close ends the connection, waits for ServeConn and releases the guest; only once.
func (r *rig) close() { r.once.Do(r.doClose) }

// doClose is close's body.
func (r *rig) doClose() {
	r.fe.Close()
	r.srv.Close()
	select {
	case <-r.done:
	case <-time.After(5 * time.Second):
		r.t.Error("ServeConn did not return")
	}
	if r.rx != nil {
		r.rx.Close()
		r.tx.Close()
	}
	r.mem.Close()
}

// frame returns a recognisable test frame of n bytes.
func frame(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

// putTX copies hdr+frame into fresh guest buffers cut at the given lengths (the last one
// takes the rest) and queues them as one chain, indirect if asked.
func (r *rig) putTX(f []byte, indirect bool, cuts ...int) uint16 {
	r.t.Helper()
	return r.putTXHdr(make([]byte, netHdrLen), f, indirect, cuts...)
}

// putTXHdr is putTX with the virtio-net header hdr instead of a zero one.
func (r *rig) putTXHdr(hdr, f []byte, indirect bool, cuts ...int) uint16 {
	r.t.Helper()
	data := append(bytes.Clone(hdr), f...)
	var segs []vhosttest.Seg
	for len(data) > 0 {
		n := len(data)
		if len(cuts) > 0 {
			n, cuts = min(cuts[0], n), cuts[1:]
		}
		a := r.mem.Alloc(uint64(n), 8)
		copy(r.mem.At(a, uint64(n)), data[:n])
		segs = append(segs, vhosttest.Seg{Addr: a, Len: uint32(n)})
		data = data[n:]
	}
	add := r.tx.Add
	if indirect {
		add = r.tx.AddIndirect
	}
	h, ok := add(segs)
	if !ok {
		r.t.Fatal("TX ring full")
	}
	return h
}

// rxBuffers queues n device-writable RX buffers of size bytes each.
func (r *rig) rxBuffers(n, size int) {
	r.t.Helper()
	for range n {
		a := r.mem.Alloc(uint64(size), 8)
		if _, ok := r.rx.Add([]vhosttest.Seg{{Addr: a, Len: uint32(size), Write: true}}); !ok {
			r.t.Fatal("RX ring full")
		}
	}
}

// rxFrame pops the used buffers of the next received frame and reassembles it; it checks
// num_buffers matches the buffers used.
func (r *rig) rxFrame(addrOf func(id uint16) uint64) ([]byte, int) {
	r.t.Helper()
	id, n, ok := r.rx.PopUsed()
	if !ok {
		r.t.Fatal("no used RX buffer")
	}
	b := r.mem.At(addrOf(id), uint64(n))
	nb := int(b[10]) | int(b[11])<<8
	out := append([]byte(nil), b[netHdrLen:]...)
	for i := 1; i < nb; i++ {
		id, n, ok = r.rx.PopUsed()
		if !ok {
			r.t.Fatalf("frame claims %d buffers, only %d used", nb, i)
		}
		out = append(out, r.mem.At(addrOf(id), uint64(n))...)
	}
	return out, nb
}

// descAddr returns the address in descriptor id of q (what the driver put there).
func descAddr(m *vhosttest.Memory, q *vhosttest.Virtqueue) func(uint16) uint64 {
	return func(id uint16) uint64 {
		b := m.At(q.Desc+16*uint64(id), 8)
		return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
			uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
	}
}

// readN calls ReadFrames until n frames arrived or it fails.
func readN(t testing.TB, q *QueuePair, n int) [][]byte {
	t.Helper()
	bufs := make([][]byte, 64)
	for i := range bufs {
		bufs[i] = make([]byte, 70000)
	}
	sizes := make([]int, 64)
	var out [][]byte
	for len(out) < n {
		k, err := q.ReadFrames(bufs, sizes, 4)
		if err != nil {
			t.Fatalf("ReadFrames after %d frames: %v", len(out), err)
		}
		for i := range k {
			out = append(out, bytes.Clone(bufs[i][4:4+sizes[i]]))
		}
	}
	return out
}

// openFDs counts this process's open fds, to prove no path leaks one.
func openFDs(t testing.TB) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// portShape is backend.Port's method set, copied so this package need not import backend:
// *QueuePair must keep satisfying it.
type portShape interface {
	ReadFrames(bufs [][]byte, sizes []int, offset int) (int, error)
	WriteFrames(frames [][]byte) error
	BatchSize() int
	Close() error
}

var _ portShape = (*QueuePair)(nil)

// cpuTime returns the user+system CPU time this process has used so far.
func cpuTime(t testing.TB) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
