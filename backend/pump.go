package backend

import (
	"errors"
	"sync"
	"sync/atomic"
)

// MaxFrame is the largest Ethernet frame the VM side may hand over: QEMU's
// own buffer limit for -netdev stream (NET_BUFSIZE, 4096 + 65536 bytes).
// Frames the underlay cannot carry are counted by the network side.
const MaxFrame = 4096 + 65536

// Pump forwards frames between one network side and whichever VM port is
// attached at the moment. The network side is read by one long-lived
// goroutine (RunNetToVM); each attached port is read by the goroutine that
// calls Serve. The two directions share no lock: the attached port is
// published through an atomic pointer.
type Pump struct {
	net    Network
	vmDown func(n int)

	attached atomic.Pointer[portRef]

	// serving is held by Serve for the life of one port: one VM at a time,
	// and it guards txBufs/txSizes, used only by the VM→network direction.
	serving sync.Mutex
	txBufs  [][]byte
	txSizes []int
}

// portRef boxes an interface value for atomic.Pointer.
type portRef struct{ port VMPort }

// NewPump joins a network side to VM ports. vmDown counts frames that
// arrive from the network while no VM is attached or while the VM goes away
// (they have nowhere to go); it may be nil.
func NewPump(net Network, vmDown func(n int)) *Pump {
	if vmDown == nil {
		vmDown = func(int) {}
	}
	n := net.BatchSize()
	p := &Pump{net: net, vmDown: vmDown, txBufs: make([][]byte, n), txSizes: make([]int, n)}
	for i := range p.txBufs {
		p.txBufs[i] = make([]byte, net.Headroom()+MaxFrame)
	}
	return p
}

// RunNetToVM reads the network side until it fails (net.ErrClosed after
// the tunnel is closed) and hands each batch to the attached VM, waiting
// while the VM cannot take more: the socket is not read meanwhile, so the
// batch stays in the receive ring and nothing is dropped in the process.
func (p *Pump) RunNetToVM() error {
	frames := make([][]byte, p.net.BatchSize())
	for {
		n, err := p.net.ReadFrames(frames)
		if err != nil {
			return err
		}
		if n == 0 {
			continue
		}
		ref := p.attached.Load()
		if ref == nil {
			p.vmDown(n)
			continue
		}
		if err := ref.port.WriteFrames(frames[:n]); err != nil {
			// The VM went away mid-batch: end the port so its reader
			// (Serve) notices too, and count the batch as undeliverable.
			ref.port.Close()
			p.vmDown(n)
		}
	}
}

// Serve attaches port, forwards what the VM sends to the network until the
// port fails or closes, then detaches and closes it. It returns the error
// that ended the port (io.EOF for an orderly close) or the network's error.
func (p *Pump) Serve(port VMPort) error {
	p.serving.Lock()
	defer p.serving.Unlock()
	ref := &portRef{port: port}
	p.attached.Store(ref)
	defer func() {
		p.attached.CompareAndSwap(ref, nil)
		port.Close()
	}()
	off := p.net.Headroom()
	bufs, sizes := p.txBufs, p.txSizes
	if b := port.BatchSize(); b > 0 && b < len(bufs) {
		bufs, sizes = bufs[:b], sizes[:b]
	}
	for {
		n, err := port.ReadFrames(bufs, sizes, off)
		if err != nil {
			return err
		}
		if n == 0 {
			continue
		}
		if err := p.net.WriteFrames(bufs[:n], sizes[:n], off); err != nil {
			return errors.Join(errNetwork, err)
		}
	}
}

// errNetwork marks a Serve error that came from the network side, which
// ends the whole port rather than one VM connection.
var errNetwork = errors.New("network side failed")

// IsNetworkError reports whether a Serve error came from the network side.
func IsNetworkError(err error) bool { return errors.Is(err, errNetwork) }
