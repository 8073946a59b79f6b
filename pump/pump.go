package pump

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/cpu"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/impair"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/l2tp"
)

// MaxFrame is the largest Ethernet frame the VM side may hand over: QEMU's
// own buffer limit for -netdev stream (NET_BUFSIZE, 4096 + 65536 bytes).
// Frames the underlay cannot carry are counted by the network side.
const MaxFrame = 4096 + 65536

// MaxQueues is the most queue pairs one pump serves (vhost-user queues=N).
const MaxQueues = 16

// Pump forwards frames between one network side and the VM ports attached
// at the moment: one port (a -netdev stream connection, a single vhost-user
// queue pair) or up to MaxQueues queue pairs of a multiqueue vhost-user NIC.
//
// Network → VM: one long-lived goroutine (RunNetToVM) reads the network
// side and, with several queue pairs attached, steers each frame by a hash
// of its flow to one of the pairs whose RX ring the guest has enabled
// (steer.go), so a flow stays in order on one queue.
//
// VM → network: each attached port is read by the goroutine that serves it
// (Serve, ServeQueue), with buffers and, with several queues, a network
// sender of its own (senders.go).
//
// The two directions share no lock: the attached ports are published as a
// whole through an atomic pointer, which the network reader loads once per
// batch; mu is taken only to attach and detach.
type Pump struct {
	net    Network
	vmDown func(n int)
	// countDrop and countTxDrop count frames a cut or impaired wire drops,
	// on the receive and the transmit side's counters.
	countDrop, countTxDrop func(r l2tp.Drop, n uint64)

	wires wires // link state and impairments (wire.go)

	attached atomic.Pointer[portSet]

	// mu guards ports, the working copy that attach and detach publish.
	mu    sync.Mutex
	ports [MaxQueues]*portRef

	queues []*queue // per queue pair; fixed once serving starts
	// announce sends what the control side injects (a RARP after a migration);
	// made on first use, guarded by mu.
	announce NetSender
	rx       *steerer // owned by RunNetToVM

	_ cpu.CacheLinePad
	// toVM is the network → VM ring occupancy: frames read from the
	// network and not yet delivered to the VM. Written by RunNetToVM only.
	toVM atomic.Int64
	_    cpu.CacheLinePad
}

// portRef boxes an interface value, so that a port is identified by pointer.
type portRef struct{ port VMPort }

// portSet is the set of attached ports, immutable once published.
type portSet struct {
	ports [MaxQueues]*portRef // by queue pair; nil: none attached
	live  []int               // the attached queue pairs, ascending
}

// queue is one queue pair's VM → network side.
type queue struct {
	// serving is held by ServeQueue for the life of one port: one port per
	// queue pair at a time. It guards bufs and sizes, which only the
	// serving goroutine uses.
	serving sync.Mutex
	send    NetSender
	bufs    [][]byte
	sizes   []int

	_ cpu.CacheLinePad
	// held is this pair's VM → network ring occupancy: frames read from
	// the VM and not yet sent. Written by the serving goroutine only.
	held atomic.Int64
	_    cpu.CacheLinePad
}

// NewPump joins a network side to VM ports, one queue pair to begin with
// (SetQueues for more). vmDown counts frames that arrive from the
// network while no VM is attached or while the VM goes away (they have
// nowhere to go); it may be nil.
func NewPump(net Network, vmDown func(n int)) *Pump {
	if vmDown == nil {
		vmDown = func(int) {}
	}
	noCount := func(l2tp.Drop, uint64) {}
	return &Pump{net: net, vmDown: vmDown, countDrop: noCount, countTxDrop: noCount,
		queues: []*queue{{send: net}}, rx: newSteerer(net.BatchSize())}
}

// SetQueues prepares n queue pairs: pair 0 sends through the network's
// WriteFrames, each other pair through a sender of its own (one socket, a
// descriptor per sender; docs/multiqueue.md). It must be called before any
// port is served.
func (p *Pump) SetQueues(n int) error {
	if n < 1 || n > MaxQueues {
		return fmt.Errorf("queues=%d: must be 1..%d", n, MaxQueues)
	}
	if n == len(p.queues) {
		return nil
	}
	qs := make([]*queue, n)
	qs[0] = &queue{send: p.net}
	for i := 1; i < n; i++ {
		s, err := p.net.NewSender()
		if err != nil {
			return fmt.Errorf("queue pair %d: %w", i, err)
		}
		qs[i] = &queue{send: s}
	}
	p.queues = qs
	return nil
}

// Queues is the number of queue pairs the pump serves.
func (p *Pump) Queues() int { return len(p.queues) }

// Attached is the number of queue pairs a VM port is attached to now.
func (p *Pump) Attached() int {
	if set := p.attached.Load(); set != nil {
		return len(set.live)
	}
	return 0
}

// RunNetToVM reads the network side until it fails (net.ErrClosed after
// the tunnel is closed) and hands each batch to the attached VM port or
// ports, waiting while the VM cannot take more: the socket is not read
// meanwhile, so the batch stays in the receive ring and nothing is dropped
// in the process.
func (p *Pump) RunNetToVM() error {
	frames := make([][]byte, p.net.BatchSize())
	var last *wireLine // the impairment line this goroutine pushed into last
	for {
		n, err := p.net.ReadFrames(frames)
		if err != nil {
			return err
		}
		if n == 0 {
			continue
		}
		if w := p.wires.dir[ToVM].Load(); w != nil || last != nil {
			p.toVM.Store(int64(n))
			err = p.pass(ToVM, w, &last, n,
				func(l *impair.Line, from int) (int, error) { return l.PushFrames(frames[from:n]) },
				func(from int) error { p.toVMBatch(frames[from:n]); return nil })
			p.toVM.Store(0)
			if err != nil {
				return err
			}
			continue
		}
		p.toVMBatch(frames[:n])
	}
}

// toVMBatch hands a batch to the attached port or ports, counting it as
// undeliverable when none is attached.
func (p *Pump) toVMBatch(frames [][]byte) {
	set := p.attached.Load()
	switch {
	case set == nil:
		p.vmDown(len(frames))
	case len(set.live) == 1:
		p.toVM.Store(int64(len(frames)))
		p.deliver(set.ports[set.live[0]], frames)
	default:
		p.toVM.Store(int64(len(frames)))
		p.rx.steer(p, set, frames)
	}
	p.toVM.Store(0)
}

// deliver hands frames to one port, waiting while it cannot take them. If
// the VM goes away mid-batch the port is closed, so that its reader
// notices too, and the batch is counted as undeliverable.
func (p *Pump) deliver(ref *portRef, frames [][]byte) {
	if err := ref.port.WriteFrames(frames); err != nil {
		ref.port.Close()
		p.vmDown(len(frames))
	}
}

// Serve is ServeQueue for queue pair 0: the stream front end's one port.
func (p *Pump) Serve(port VMPort) error { return p.ServeQueue(0, port) }

// ServeQueue attaches port as queue pair i, forwards what the VM sends to
// the network until the port fails or closes, then detaches and closes it.
// It returns the error that ended the port (io.EOF for an orderly close) or
// the network's error. A second port for the same pair waits for the first
// to be detached.
func (p *Pump) ServeQueue(i int, port VMPort) error {
	if i < 0 || i >= len(p.queues) {
		port.Close()
		return fmt.Errorf("queue pair %d: the pump serves %d", i, len(p.queues))
	}
	q := p.queues[i]
	q.serving.Lock()
	defer q.serving.Unlock()
	ref := &portRef{port: port}
	p.attach(i, ref)
	defer func() {
		p.detach(i, ref)
		port.Close()
	}()
	off := p.net.Headroom()
	q.allocate(off, p.net.BatchSize())
	bufs, sizes := q.bufs, q.sizes
	if b := port.BatchSize(); b > 0 && b < len(bufs) {
		bufs, sizes = bufs[:b], sizes[:b]
	}
	var last *wireLine // the impairment line this goroutine pushed into last
	for {
		n, err := port.ReadFrames(bufs, sizes, off)
		if err != nil {
			return err
		}
		if n == 0 {
			continue
		}
		q.held.Store(int64(n))
		if w := p.wires.dir[ToNetwork].Load(); w != nil || last != nil {
			err = p.pass(ToNetwork, w, &last, n,
				func(l *impair.Line, from int) (int, error) { return l.PushBufs(bufs[from:n], sizes[from:n], off) },
				func(from int) error { return q.send.WriteFrames(bufs[from:n], sizes[from:n], off) })
		} else {
			err = q.send.WriteFrames(bufs[:n], sizes[:n], off)
		}
		q.held.Store(0)
		if err != nil {
			return errors.Join(errNetwork, err)
		}
	}
}

// RingOccupancy is how many frames a port holds inside the process, by
// direction, waiting for the other side to take them: a gauge that stays
// near 0 while both sides keep up and rises to a batch (per queue pair,
// VM → network) while one side applies backpressure.
type RingOccupancy struct {
	// ToVM: frames read from the network not yet delivered to the VM.
	ToVM int64 `json:"to_vm"`
	// ToNetwork: frames read from the VM not yet sent, all queue pairs.
	ToNetwork int64 `json:"to_network"`
}

// Occupancy reads the ring occupancy gauges (each atomically; any
// goroutine).
func (p *Pump) Occupancy() RingOccupancy {
	o := RingOccupancy{ToVM: p.toVM.Load()}
	for _, q := range p.queues {
		o.ToNetwork += q.held.Load()
	}
	return o
}

// allocate makes the queue's frame buffers the first time it is served;
// later ports of the same pair reuse them.
func (q *queue) allocate(headroom, batch int) {
	if q.bufs != nil {
		return
	}
	q.bufs, q.sizes = make([][]byte, batch), make([]int, batch)
	for i := range q.bufs {
		q.bufs[i] = make([]byte, headroom+MaxFrame)
	}
}

// attach publishes ref as queue pair i.
func (p *Pump) attach(i int, ref *portRef) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ports[i] = ref
	p.publish()
}

// detach withdraws ref from queue pair i, unless another port replaced it.
func (p *Pump) detach(i int, ref *portRef) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ports[i] == ref {
		p.ports[i] = nil
		p.publish()
	}
}

// publish stores a fresh portSet built from p.ports (nil when empty); call
// it with mu held.
func (p *Pump) publish() {
	set := &portSet{ports: p.ports}
	for i, r := range p.ports {
		if r != nil {
			set.live = append(set.live, i)
		}
	}
	if len(set.live) == 0 {
		set = nil
	}
	p.attached.Store(set)
}

// Announce sends frame to the network as if the VM had sent it (the RARP
// that tells switches where a migrated guest now is), through a sender of
// its own so that it never races a queue pair's sender.
func (p *Pump) Announce(frame []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.announce == nil {
		s, err := p.net.NewSender()
		if err != nil {
			return fmt.Errorf("announce: %w", err)
		}
		p.announce = s
	}
	off := p.net.Headroom()
	buf := make([]byte, off+len(frame))
	copy(buf[off:], frame)
	return p.announce.WriteFrames([][]byte{buf}, []int{len(frame)}, off)
}

// errNetwork marks a Serve error that came from the network side, which
// ends the whole port rather than one VM connection.
var errNetwork = errors.New("network side failed")

// IsNetworkError reports whether a Serve error came from the network side.
func IsNetworkError(err error) bool { return errors.Is(err, errNetwork) }
