package pump

import (
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/impair"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/l2tp"
)

// A port is a wire that can be cut and degraded, each direction on its
// own. The data path loads one direction's *wire once per batch: nil (the
// common case) is a plain wire and costs nothing more. A cut direction
// drops and counts (link_down). An impaired one copies each batch into
// an impair.Line, from which a goroutine of the line's own (an emitter)
// hands frames on when they are due; while that line is full the side
// that pushes waits, as it does on a full socket, unless the spec drops.

// wire is one direction's state as the data path sees it, immutable once
// published.
type wire struct {
	down bool
	spec impair.Spec
	line *wireLine // nil: no impairments
}

// wireLine is a Line with the emitter that empties it.
type wireLine struct {
	*impair.Line
	done chan struct{} // closed when the emitter has ended
}

// Direction is one way through a port.
type Direction uint8

// The two directions, as metrics label them.
const (
	ToNetwork Direction = iota // frames the VM sent, into the tunnel
	ToVM                       // frames from the tunnel, to the VM
)

// String names the direction as metrics and the admin API do.
func (d Direction) String() string {
	if d == ToVM {
		return "to_vm"
	}
	return "to_network"
}

// CountDropsWith sets how the pump counts the frames a cut or impaired
// wire drops: rx on the receive side's counters (to the VM), tx on the
// transmit side's (to the network). Call it before traffic starts.
func (p *Pump) CountDropsWith(rx, tx func(r l2tp.Drop, n uint64)) {
	p.countDrop, p.countTxDrop = rx, tx
}

// wires is a pump's two directions.
type wires struct {
	mu     sync.Mutex // guards changes and emitSend (control path only)
	dir    [2]atomic.Pointer[wire]
	closed bool
	// emitSend is the to-network emitter's sender with several queue
	// pairs (a sender of its own); with one, the pair's own is used.
	emitSend NetSender
}

// WireState is what a user sets on one direction.
type WireState struct {
	Down bool
	Spec impair.Spec
}

// state is what w was set to (the zero state for a nil wire).
func (w *wire) state() WireState {
	if w == nil {
		return WireState{}
	}
	return WireState{Down: w.down, Spec: w.spec}
}

// Wire reports direction d's link state and impairments.
func (p *Pump) Wire(d Direction) WireState { return p.wires.dir[d&1].Load().state() }

// SetWire changes direction d's link state and impairments while traffic
// flows. A changed spec gets a fresh line; the frames in the old one still
// leave at their time, and the direction's pushers wait for them before
// using the new one, so no frame is lost or reordered by the change.
func (p *Pump) SetWire(d Direction, st WireState) error {
	d &= 1
	w := &p.wires
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return net.ErrClosed
	}
	old := w.dir[d].Load()
	nw := &wire{down: st.Down, spec: st.Spec}
	switch {
	case !st.Spec.Active():
	case old != nil && old.line != nil && old.spec == st.Spec:
		nw.line = old.line
	default:
		l, err := p.newWireLine(d, st.Spec)
		if err != nil {
			return err
		}
		nw.line = l
	}
	if old != nil && old.line != nil && old.line != nw.line {
		old.line.Close()
	}
	if !nw.down && nw.line == nil {
		nw = nil
	}
	w.dir[d].Store(nw)
	return nil
}

// CloseWires ends both directions' lines at once and refuses further
// changes (the port is closing).
func (p *Pump) CloseWires() {
	w := &p.wires
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closed = true
	for d := range w.dir {
		if cur := w.dir[d].Load(); cur != nil && cur.line != nil {
			cur.line.Abort()
		}
	}
}

// newWireLine makes a line for direction d and starts its emitter.
func (p *Pump) newWireLine(d Direction, spec impair.Spec) (*wireLine, error) {
	headroom, countDrop := 0, p.countDrop
	if d == ToNetwork {
		headroom, countDrop = p.net.Headroom(), p.countTxDrop
	}
	l := &wireLine{done: make(chan struct{})}
	l.Line = impair.NewLine(spec, headroom, rand.Uint64(), func(r impair.Drop, n uint64) {
		countDrop(impairDrops[r], n)
	})
	if d == ToVM {
		go p.emitToVM(l)
		return l, nil
	}
	send, err := p.emitSender()
	if err != nil {
		return nil, err
	}
	go p.emitToNetwork(l, send)
	return l, nil
}

// impairDrops maps the impairments' drop reasons to the session's.
var impairDrops = [impair.NumDrops]l2tp.Drop{
	impair.DropLoss: l2tp.DropImpairLoss, impair.DropRate: l2tp.DropImpairRate, impair.DropLimit: l2tp.DropImpairLimit}

// emitSender is the sender the to-network emitter uses: with one queue
// pair that pair's own (its goroutine only pushes while the line exists,
// and waits for the emitter to end before it sends again), with several a
// sender of its own, made once. Call it with wires.mu held.
func (p *Pump) emitSender() (NetSender, error) {
	if len(p.queues) == 1 {
		return p.queues[0].send, nil
	}
	if p.wires.emitSend == nil {
		s, err := p.net.NewSender()
		if err != nil {
			return nil, fmt.Errorf("impairment sender: %w", err)
		}
		p.wires.emitSend = s
	}
	return p.wires.emitSend, nil
}

// emitToNetwork sends the line's frames when they are due, dropping them
// (link_down) while the direction is cut, until the line is closed and
// empty or the network fails.
func (p *Pump) emitToNetwork(l *wireLine, send NetSender) {
	defer close(l.done)
	bufs, sizes := make([][]byte, p.net.BatchSize()), make([]int, p.net.BatchSize())
	off := p.net.Headroom()
	for {
		n, err := l.Take(bufs, sizes)
		if err != nil {
			return
		}
		if p.wires.dir[ToNetwork].Load().state().Down {
			p.countTxDrop(l2tp.DropLinkDown, uint64(n))
			continue
		}
		if err := send.WriteFrames(bufs[:n], sizes[:n], off); err != nil {
			l.Abort() // the network failed: the port is ending
			return
		}
	}
}

// emitToVM delivers the line's frames to the VM when they are due, as
// RunNetToVM does without impairments, until the line is closed and empty.
func (p *Pump) emitToVM(l *wireLine) {
	defer close(l.done)
	bufs, sizes := make([][]byte, p.net.BatchSize()), make([]int, p.net.BatchSize())
	for {
		n, err := l.Take(bufs, sizes)
		if err != nil {
			return
		}
		if p.wires.dir[ToVM].Load().state().Down {
			p.countDrop(l2tp.DropLinkDown, uint64(n))
			continue
		}
		for i := range n {
			bufs[i] = bufs[i][:sizes[i]]
		}
		p.toVMBatch(bufs[:n])
	}
}

// errLineClosed ends a pusher whose direction's line was shut under it
// without a replacement: the port is closing or the network failed.
var errLineClosed = fmt.Errorf("impairment line closed: %w", net.ErrClosed)

// pass takes one batch of n frames through direction d's wire w on its
// slow path: it waits for the line the pusher used last (*last) to empty
// if that is no longer w's, drops the batch while the direction is cut,
// and pushes what remains into w's line (push(line, from) pushes frames
// from..n-1 and says how many it took), or hands it to direct when w is
// plain again.
func (p *Pump) pass(d Direction, w *wire, last **wireLine, n int,
	push func(l *impair.Line, from int) (int, error), direct func(from int) error) error {
	from := 0
	for {
		if *last != nil && (w == nil || w.line != *last) {
			<-(*last).done
			*last = nil
		}
		switch {
		case w == nil || !w.down && w.line == nil:
			return direct(from)
		case w.down:
			p.countDropDir(d, l2tp.DropLinkDown, uint64(n-from))
			return nil
		}
		*last = w.line
		k, err := push(w.line.Line, from)
		if from += k; err == nil {
			return nil
		}
		nw := p.wires.dir[d].Load()
		if nw == w {
			return errLineClosed
		}
		w = nw
	}
}

// countDropDir counts n drops for reason r on direction d's counters.
func (p *Pump) countDropDir(d Direction, r l2tp.Drop, n uint64) {
	if d == ToNetwork {
		p.countTxDrop(r, n)
	} else {
		p.countDrop(r, n)
	}
}

// WireStatus is one direction's link state, impairments and delay line,
// as the admin API and metrics report them.
type WireStatus struct {
	Direction  string `json:"direction"` // to_network or to_vm
	LinkUp     bool   `json:"link_up"`
	Impairment string `json:"impairment,omitempty"` // in netem's words
	Queued     int    `json:"queued"`               // frames in the delay line now
	// What the current line did to frames (since its spec was set).
	Duplicated uint64 `json:"duplicated"`
	Corrupted  uint64 `json:"corrupted"`
	Reordered  uint64 `json:"reordered"`
}

// WireStatus reports direction d.
func (p *Pump) WireStatus(d Direction) WireStatus {
	w := p.wires.dir[d&1].Load()
	st := WireStatus{Direction: d.String(), LinkUp: !w.state().Down, Impairment: w.state().Spec.String()}
	if w != nil && w.line != nil {
		var c impair.Counters
		c, st.Queued = w.line.Status()
		st.Duplicated, st.Corrupted, st.Reordered = c.Duplicated, c.Corrupted, c.Reordered
	}
	return st
}
