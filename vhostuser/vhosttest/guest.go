package vhosttest

import (
	"encoding/binary"
	"fmt"
	"time"
)

// netHdrLen is the virtio-net header of a VERSION_1 / MRG_RXBUF driver.
const netHdrLen = 12

// GuestFeatures is what a Linux guest behind QEMU acks of a back end's offer.
const GuestFeatures = FVersion1 | FMrgRxbuf | FEventIdx | FIndirectDesc | FNotifyOnEmpty | FProtocol | FMQ | FMTU |
	FCsum | FHostTSO4 | FHostTSO6 | FHostECN

// GuestProtocol is the protocol features a Guest asks for.
const GuestProtocol = PMQ | PReplyAck | PMTU

// GuestOptions shape a Guest; zero values give the defaults.
type GuestOptions struct {
	Pairs   int    // queue pairs to start, default 1
	Num     uint16 // ring size, default 256
	BufSize int    // bytes per RX and TX buffer, header included; default 2048
	TXBuf   int    // bytes per TX buffer when TX frames are larger (TSO super-frames); default BufSize
	MemSize int    // guest memory, default what the rings and buffers need
	Sealed  bool   // memfd sealed against shrinking and growing, as QEMU's memfd backend does
}

// Guest is a whole virtio-net driver on a FrontEnd, for benchmarks and tests that want
// frames in and out rather than rings: guest memory, queue pairs started with every RX
// buffer posted, and TX buffers ready. Each QueuePair is used by one goroutine at a time; the
// send and receive paths allocate nothing.
type Guest struct {
	FE    *FrontEnd
	Mem   *Memory
	Pairs []*QueuePair
}

// QueuePair is one queue pair of a Guest: vring 2i receives, 2i+1 transmits.
type QueuePair struct {
	RX, TX  *Virtqueue
	bufSize int
	txSize  int
	txFree  []uint64 // TX buffers not in the ring
	scratch []byte   // a frame spread over several RX buffers, reassembled
}

// NewGuest negotiates on fe, shares guest memory, lays out and starts o.Pairs queue pairs
// (RX rings full of buffers) the way QEMU does. The caller closes the Guest.
func NewGuest(fe *FrontEnd, o GuestOptions) (*Guest, error) {
	o = o.withDefaults()
	if _, err := fe.Negotiate(GuestFeatures, GuestProtocol); err != nil {
		return nil, fmt.Errorf("vhosttest: negotiate: %w", err)
	}
	newMemory := NewMemory
	if o.Sealed {
		newMemory = NewSealedMemory
	}
	mem, err := newMemory(o.MemSize, false)
	if err != nil {
		return nil, err
	}
	g := &Guest{FE: fe, Mem: mem}
	if err := fe.SetMemTable(mem); err != nil {
		g.Close()
		return nil, fmt.Errorf("vhosttest: SET_MEM_TABLE: %w", err)
	}
	for i := range o.Pairs {
		p, err := g.newPair(o)
		if err != nil {
			g.Close()
			return nil, err
		}
		g.Pairs = append(g.Pairs, p)
		if err := fe.StartQueue(uint32(2*i), p.RX, 0); err != nil {
			g.Close()
			return nil, fmt.Errorf("vhosttest: start RX %d: %w", i, err)
		}
		if err := fe.StartQueue(uint32(2*i+1), p.TX, 0); err != nil {
			g.Close()
			return nil, fmt.Errorf("vhosttest: start TX %d: %w", i, err)
		}
	}
	return g, nil
}

// withDefaults fills in o's zero values.
func (o GuestOptions) withDefaults() GuestOptions {
	o.Pairs = max(o.Pairs, 1)
	if o.Num == 0 {
		o.Num = 256
	}
	if o.BufSize == 0 {
		o.BufSize = 2048
	}
	o.TXBuf = max(o.TXBuf, o.BufSize)
	if o.MemSize == 0 {
		per := int(o.Num)*(o.BufSize+o.TXBuf+128) + 64<<10
		o.MemSize = (o.Pairs*per + 1<<20 + 8191) &^ 8191
	}
	return o
}

// newPair lays out one pair's rings and buffers and posts every RX buffer.
func (g *Guest) newPair(o GuestOptions) (*QueuePair, error) {
	rx, err := NewVirtqueue(g.Mem, o.Num, true)
	if err != nil {
		return nil, err
	}
	tx, err := NewVirtqueue(g.Mem, o.Num, true)
	if err != nil {
		rx.Close()
		return nil, err
	}
	p := &QueuePair{RX: rx, TX: tx, bufSize: o.BufSize, txSize: o.TXBuf, scratch: make([]byte, 0, 65536+netHdrLen)}
	for range o.Num {
		a := g.Mem.Alloc(uint64(o.BufSize), 64)
		rx.Add([]Seg{{Addr: a, Len: uint32(o.BufSize), Write: true}})
		p.txFree = append(p.txFree, g.Mem.Alloc(uint64(o.TXBuf), 64))
	}
	rx.Publish()
	return p, nil
}

// Close ends the control connection and releases the rings and memory.
func (g *Guest) Close() {
	g.FE.Close()
	for _, p := range g.Pairs {
		p.RX.Close()
		p.TX.Close()
	}
	g.Mem.Close()
}

// Send reclaims the TX buffers the back end has finished with, then queues up to n frames,
// each written by fill into a buffer (fill returns the frame's length, at most
// TXBuf-12) behind a zero virtio-net header, publishes them and kicks if the back end
// asked for it. It returns how many it queued: 0 when the ring is full (see WaitTX).
func (p *QueuePair) Send(n int, fill func(frame []byte) int) int {
	return p.send(n, fill, nil)
}

// SendOffload is Send for frames that ask for offloads: hdr fills each frame's 12-byte
// virtio-net header (see NetHdr) after fill wrote the frame.
func (p *QueuePair) SendOffload(n int, fill func(frame []byte) int, hdr func(h []byte)) int {
	return p.send(n, fill, hdr)
}

// send queues up to n frames written by fill, their headers by hdr when not nil.
func (p *QueuePair) send(n int, fill func(frame []byte) int, hdr func(h []byte)) int {
	p.reclaimTX()
	k := 0
	for ; k < n && len(p.txFree) > 0; k++ {
		a := p.txFree[len(p.txFree)-1]
		b := p.TX.Mem.At(a, uint64(p.txSize))
		clear(b[:netHdrLen])
		l := fill(b[netHdrLen:])
		if hdr != nil {
			hdr(b[:netHdrLen])
		}
		if _, ok := p.TX.Add([]Seg{{Addr: a, Len: uint32(netHdrLen + l)}}); !ok {
			break
		}
		p.txFree = p.txFree[:len(p.txFree)-1]
	}
	if k > 0 {
		p.TX.PublishKick()
	}
	return k
}

// reclaimTX takes back every TX buffer the back end has used.
func (p *QueuePair) reclaimTX() {
	for {
		id, _, ok := p.TX.PopUsed()
		if !ok {
			return
		}
		p.txFree = append(p.txFree, p.TX.DescAddr(id))
	}
}

// WaitTX waits up to d for the back end to finish a TX buffer, when none is free.
func (p *QueuePair) WaitTX(d time.Duration) {
	if len(p.txFree) > 0 || p.TX.ArmUsedEvent() {
		return
	}
	p.TX.WaitCall(d)
}

// Receive hands every received frame (without the virtio-net header; one reassembled
// from several buffers with MRG_RXBUF) to fn, which must not keep it, re-posts the
// buffers, and kicks if the back end asked for it. It returns the number of frames.
func (p *QueuePair) Receive(fn func(frame []byte)) int {
	n := 0
	for {
		id, l, ok := p.RX.PopUsed()
		if !ok {
			break
		}
		a := p.RX.DescAddr(id)
		b := p.RX.Mem.At(a, uint64(l))
		nb := 1
		if len(b) >= netHdrLen {
			nb = int(binary.LittleEndian.Uint16(b[10:]))
		}
		f := b[min(netHdrLen, len(b)):]
		p.repost(a)
		if nb > 1 {
			f = p.gather(f, nb)
		}
		fn(f)
		n++
	}
	if n > 0 {
		p.RX.PublishKick()
	}
	return n
}

// gather appends the other nb-1 buffers of a merged frame to first, re-posting them.
func (p *QueuePair) gather(first []byte, nb int) []byte {
	s := append(p.scratch[:0], first...)
	for i := 1; i < nb; i++ {
		id, l, ok := p.RX.PopUsed()
		if !ok {
			break
		}
		a := p.RX.DescAddr(id)
		s = append(s, p.RX.Mem.At(a, uint64(l))...)
		p.repost(a)
	}
	p.scratch = s[:0]
	return s
}

// repost gives an RX buffer back to the ring (published by Receive).
func (p *QueuePair) repost(a uint64) {
	p.RX.Add([]Seg{{Addr: a, Len: uint32(p.bufSize), Write: true}})
}

// WaitRX waits up to d for a received frame.
func (p *QueuePair) WaitRX(d time.Duration) {
	if p.RX.ArmUsedEvent() {
		return
	}
	p.RX.WaitCall(d)
}

// NetHdr is a virtio-net header asking for offloads (virtio 1.2 §5.1.6): NEEDS_CSUM at
// CsumStart/CsumOffset, and with GSOType (1 TCPv4, 4 TCPv6) a super-frame cut at GSOSize.
type NetHdr struct {
	NeedsCsum             bool
	GSOType               uint8
	HdrLen, GSOSize       uint16
	CsumStart, CsumOffset uint16
}

// Put writes h into the first 10 bytes of b, little-endian, as a driver does.
func (h NetHdr) Put(b []byte) {
	b[0] = 0
	if h.NeedsCsum {
		b[0] = 1
	}
	b[1] = h.GSOType
	binary.LittleEndian.PutUint16(b[2:], h.HdrLen)
	binary.LittleEndian.PutUint16(b[4:], h.GSOSize)
	binary.LittleEndian.PutUint16(b[6:], h.CsumStart)
	binary.LittleEndian.PutUint16(b[8:], h.CsumOffset)
}
