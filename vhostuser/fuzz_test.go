package vhostuser

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"unsafe"
)

// fuzzBase is where fuzz guest memory sits, both guest-physically and in the "front end's"
// address space.
const fuzzBase = 0x10000

// goMemory returns n bytes of 8-aligned Go memory as a one-region table at fuzzBase.
func goMemory(n int) (*memTable, []byte) {
	words := make([]uint64, n/8)
	b := unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), n)
	return &memTable{regions: []region{{gpa: fuzzBase, size: uint64(n), uaddr: fuzzBase, data: b}}}, b
}

// byteTransport feeds a recorded byte stream to the message reader and swallows replies.
type byteTransport struct{ in []byte }

// recv hands out the next bytes; the stream never carries fds.
func (b *byteTransport) recv(p []byte, _ *[]int) (int, error) {
	if len(b.in) == 0 {
		return 0, io.EOF
	}
	n := copy(p, b.in)
	b.in = b.in[n:]
	return n, nil
}

// send discards a reply.
func (b *byteTransport) send([]byte) error { return nil }

// close does nothing.
func (b *byteTransport) close() error { return nil }

// msg encodes one request for a seed.
func msg(req request, flags uint32, body ...[]byte) []byte {
	var p []byte
	for _, b := range body {
		p = append(p, b...)
	}
	h := binary.NativeEndian.AppendUint32(nil, uint32(req))
	h = binary.NativeEndian.AppendUint32(h, flags)
	h = binary.NativeEndian.AppendUint32(h, uint32(len(p)))
	return append(h, p...)
}

// u32 encodes a seed field.
func u32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }

// u64 encodes a seed field.
func u64(v uint64) []byte { return binary.NativeEndian.AppendUint64(nil, v) }

// messageSeeds are a QEMU-like opening that starts both rings, and some broken messages.
func messageSeeds() [][]byte {
	var open []byte
	for _, m := range [][]byte{
		msg(reqSetOwner, 1),
		msg(reqGetFeatures, 1),
		msg(reqGetProtocolFeatures, 1),
		msg(reqSetProtocolFeatures, 1, u64(protoReplyAck|protoMQ)),
		msg(reqSetFeatures, 9, u64(featVersion1|featNetMrgRxbuf|featEventIdx|featIndirectDesc|featProtocol)),
		msg(reqGetQueueNum, 1),
	} {
		open = append(open, m...)
	}
	rings := append([]byte(nil), open...)
	for i := range uint32(2) {
		base := uint64(fuzzBase + i*0x4000)
		rings = append(rings, msg(reqSetVringNum, 9, u32(i), u32(8))...)
		rings = append(rings, msg(reqSetVringBase, 9, u32(i), u32(0))...)
		rings = append(rings, msg(reqSetVringAddr, 9, u32(i), u32(0), u64(base), u64(base+0x2000), u64(base+0x1000), u64(0))...)
		rings = append(rings, msg(reqSetVringKick, 9, u64(uint64(i)|vringNoFD))...)
		rings = append(rings, msg(reqSetVringCall, 9, u64(uint64(i)|vringNoFD))...)
		rings = append(rings, msg(reqSetVringEnable, 9, u32(i), u32(1))...)
	}
	stop := append(append([]byte(nil), rings...), msg(reqGetVringBase, 1, u32(1), u32(0))...)
	stop = append(stop, msg(reqNetSetMTU, 9, u64(1500))...)
	stop = append(stop, msg(reqResetOwner, 1)...)
	return [][]byte{
		open, rings, stop,
		msg(reqSetMemTable, 1, u32(1), u32(0), u64(0), u64(4096), u64(0), u64(0)), // fd missing
		msg(reqSetVringKick, 1, u64(0)),                                           // fd missing
		msg(reqSetVringNum, 1, u32(0)),                                            // short
		msg(99, 1),
		append(msg(reqGetFeatures, 1), 0, 0, 0),
	}
}

// FuzzMessage drives the decoder, the request table and every handler reachable without
// fds from arbitrary bytes; nothing may panic, hang or leave a ring half torn down.
func FuzzMessage(f *testing.F) {
	for _, s := range messageSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg := Config{Queues: 2, BatchSize: 8, Logger: testLogger()}
		tr := &byteTransport{in: data}
		s := newSession(&cfg, newRecorder(), cfg.Logger, tr)
		s.mem, _ = goMemory(64 << 10)
		for _, v := range s.vrings {
			v.mem = s.mem
		}
		s.run()
		for _, v := range s.vrings {
			if v.started || v.kick != nil || v.call != nil || v.qp != nil {
				t.Fatalf("vring %d left running after teardown", v.index)
			}
		}
	})
}

// Where FuzzDescChain puts things in its 64 KiB of guest memory. Its input is compact so
// the fuzzer can mutate and minimise it: a control byte, then the descriptor table, the
// avail ring and an area for indirect tables, each zero-filled when the input is short.
const (
	fuzzDescOff     = 0x000 // up to 32 descriptors
	fuzzDescLen     = 0x200
	fuzzIndirectOff = 0x400 // indirect tables for seeds to point at
	fuzzIndirectLen = 0x200
	fuzzAvailOff    = 0x800
	fuzzAvailLen    = 4 + 2*32 + 2
	fuzzUsedOff     = 0xc00
	fuzzBufOff      = 0x1000 // where seeds put their buffers
)

// With bit 7 of the control byte FuzzDescChain runs a 512-entry ring tiled from the input:
// descriptor j is input descriptor j%32 with its next index moved to the same tile, avail
// slot j is input slot j%32 moved likewise. Chains can then reach the 256-descriptor bound
// and a call the per-call bound, which the small rings never do.
const (
	fuzzBigNum     = 512
	fuzzBigDescOff = 0x8000
	fuzzBigAvail   = 0xa000
	fuzzBigUsed    = 0xb000
)

// tileBigRing lays the 512-entry ring out in guest memory b from the small ring's areas
// and returns its addresses.
func tileBigRing(b []byte) vringAddr {
	const small = fuzzDescLen / descSize
	for j := range fuzzBigNum {
		d := b[fuzzBigDescOff+descSize*j:]
		copy(d[:descSize], b[fuzzDescOff+descSize*(j%small):])
		next := binary.LittleEndian.Uint16(d[14:])
		binary.LittleEndian.PutUint16(d[14:], next+uint16(small*(j/small)))
	}
	copy(b[fuzzBigAvail:fuzzBigAvail+4], b[fuzzAvailOff:])
	slots := (fuzzAvailLen - 6) / 2
	for j := range fuzzBigNum {
		h := binary.LittleEndian.Uint16(b[fuzzAvailOff+4+2*(j%slots):])
		binary.LittleEndian.PutUint16(b[fuzzBigAvail+4+2*j:], h+uint16(small*(j/slots)))
	}
	return vringAddr{desc: fuzzBase + fuzzBigDescOff, avail: fuzzBase + fuzzBigAvail, used: fuzzBase + fuzzBigUsed}
}

// chainSeed builds a FuzzDescChain input from descriptors (addr, len, flags, next), the
// avail heads and an optional indirect table.
func chainSeed(ctl byte, descs [][4]uint64, heads []uint16, indirect ...[4]uint64) []byte {
	in := make([]byte, 1+fuzzDescLen+fuzzAvailLen+fuzzIndirectLen)
	in[0] = ctl
	put := func(b []byte, d [4]uint64) {
		binary.LittleEndian.PutUint64(b, d[0])
		binary.LittleEndian.PutUint32(b[8:], uint32(d[1]))
		binary.LittleEndian.PutUint16(b[12:], uint16(d[2]))
		binary.LittleEndian.PutUint16(b[14:], uint16(d[3]))
	}
	for i, d := range descs {
		put(in[1+16*i:], d)
	}
	avail := in[1+fuzzDescLen:]
	binary.LittleEndian.PutUint16(avail[2:], uint16(len(heads)))
	for i, h := range heads {
		binary.LittleEndian.PutUint16(avail[4+2*i:], h)
	}
	for i, d := range indirect {
		put(in[1+fuzzDescLen+fuzzAvailLen+16*i:], d)
	}
	for len(in) > 1 && in[len(in)-1] == 0 {
		in = in[:len(in)-1]
	}
	return in
}

// chainSeeds cover single, chained, indirect and broken chains for both directions.
func chainSeeds() [][]byte {
	buf := uint64(fuzzBase + fuzzBufOff)
	tbl := uint64(fuzzBase + fuzzIndirectOff)
	const n, w, i = descFNext, descFWrite, descFIndirect
	h := func(hs ...uint16) []uint16 { return hs }
	return [][]byte{
		chainSeed(3, [][4]uint64{{buf, 112, 0, 0}}, h(0)),                                        // TX single
		chainSeed(3, [][4]uint64{{buf, 12, n, 1}, {buf + 64, 1000, n, 2}, {buf, 2, 0, 0}}, h(0)), // TX chain
		chainSeed(3|8, [][4]uint64{{tbl, 32, i, 0}}, h(0), [4]uint64{buf, 12, n, 1}, [4]uint64{buf, 500, 0, 0}),
		chainSeed(3, [][4]uint64{{buf, 12, n, 1}, {buf, 12, n, 0}}, h(0)),            // loop
		chainSeed(3|8, [][4]uint64{{tbl, 16, i, 0}}, h(0), [4]uint64{tbl, 16, i, 0}), // nested
		chainSeed(3|64, [][4]uint64{{buf, 2048, w, 0}, {buf + 2048, 2048, w, 0}}, h(0, 1)),
		chainSeed(3|16|64, [][4]uint64{{buf, 100, w, 0}, {buf + 2048, 9000, w, 0}}, h(0, 1)),
		chainSeed(3|16|64|8, [][4]uint64{{tbl, 32, i, 0}}, h(0), [4]uint64{buf, 12, w | n, 1}, [4]uint64{buf + 16, 9000, w, 0}),
		chainSeed(3|32, [][4]uint64{{buf, 112, 0, 0}}, h(0, 0, 0, 0, 0, 0, 0, 0, 0)), // index jump
		bigRing(longChain(buf, 0, 64, true), false),                                  // TX: 512 entries, chains of 32 descriptors, 2 KiB: all dropped
		bigRing(longChain(buf, 0, 8, false), false),                                  // TX: one chain through all 512: over 256
		bigRing(longChain(buf, w, 8, true), true),                                    // RX: 256-byte buffers of 32 descriptors
	}
}

// longChain is 32 descriptors of size bytes each naming the next; tiled into the 512-entry
// ring they make 16 chains of 32 if end, else one chain through every tile.
func longChain(buf, flags uint64, size uint64, end bool) [][4]uint64 {
	d := make([][4]uint64, fuzzDescLen/descSize)
	for i := range d {
		d[i] = [4]uint64{buf + size*uint64(i), size, flags | descFNext, uint64(i + 1)}
	}
	if end {
		d[len(d)-1][2] &^= descFNext
	}
	return d
}

// bigRing is a seed for the 512-entry ring (TX, or RX with MRG_RXBUF) of descs, the avail
// entries of each tile naming its first descriptor, all 512 published.
func bigRing(descs [][4]uint64, rx bool) []byte {
	ctl := byte(128)
	if rx {
		ctl |= 64 | 16
	}
	in := chainSeed(ctl, descs, []uint16{0})
	in = append(in, make([]byte, max(0, 1+fuzzDescLen+4-len(in)))...)
	binary.LittleEndian.PutUint16(in[1+fuzzDescLen+2:], fuzzBigNum)
	return in
}

// FuzzDescChain builds a ring from arbitrary guest memory and runs the TX pop or the RX
// fill on it. The ring must survive or break cleanly: no panic, no access outside guest
// memory (Go's bounds checks would panic), no frame larger than its buffer, no hang.
func FuzzDescChain(f *testing.F) {
	for _, s := range chainSeeds() {
		f.Add(s)
	}
	f.Fuzz(runChain)
}

// runChain is FuzzDescChain's body.
func runChain(t *testing.T, data []byte) {
	if len(data) < 1 {
		return
	}
	ctl := data[0]
	mem, b := goMemory(64 << 10)
	rest := data[1:]
	for _, area := range [][2]int{{fuzzDescOff, fuzzDescLen}, {fuzzAvailOff, fuzzAvailLen}, {fuzzIndirectOff, fuzzIndirectLen}} {
		k := copy(b[area[0]:area[0]+area[1]], rest)
		rest = rest[k:]
	}
	acked := featVersion1
	if ctl&8 != 0 {
		acked |= featIndirectDesc
	}
	if ctl&16 != 0 {
		acked |= featNetMrgRxbuf
	}
	if ctl&32 != 0 {
		acked |= featEventIdx | featNotifyOnEmpty
	}
	rx := ctl&64 != 0
	idx := 1
	if rx {
		idx = 0
	}
	v := &vring{index: idx, log: testLogger(), stats: &vringStats{}, mem: mem,
		num: 1 << (ctl & 7 % 6), addrSet: true, enabled: true,
		addr: vringAddr{desc: fuzzBase + fuzzDescOff, avail: fuzzBase + fuzzAvailOff, used: fuzzBase + fuzzUsedOff}}
	if ctl&128 != 0 {
		v.num, v.addr = fuzzBigNum, tileBigRing(b)
	}
	v.start(acked)
	if v.broken != nil {
		t.Fatalf("valid layout refused: %v", v.broken)
	}
	for range 3 {
		if v.broken != nil {
			return
		}
		var err error
		if rx {
			var n int
			n, _, err = v.fillRX([][]byte{make([]byte, 60), make([]byte, 9000), make([]byte, 1514)})
			if n > 3 {
				t.Fatalf("consumed %d of 3 frames", n)
			}
		} else {
			bufs := [][]byte{make([]byte, 1600), make([]byte, 1600)}
			sizes := make([]int, 2)
			var n int
			n, err = v.popTX(bufs, sizes, 14, false)
			for i := range n {
				if sizes[i] <= 0 || sizes[i] > 1600-14 {
					t.Fatalf("frame %d has size %d", i, sizes[i])
				}
			}
		}
		if err != nil {
			v.fail(err)
		}
		if v.walker.walked > maxWalk+maxChainDescs {
			t.Fatalf("one call read %d descriptors, over the %d+%d bound", v.walker.walked, maxWalk, maxChainDescs)
		}
		if v.usedIdx != v.lastAvail {
			t.Fatalf("used %d != avail %d: a popped chain was not returned", v.usedIdx, v.lastAvail)
		}
	}
}

// TestWriteFuzzCorpus regenerates testdata/fuzz from the seeds when VHOSTUSER_WRITE_CORPUS
// is set; the committed corpus is its output.
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("VHOSTUSER_WRITE_CORPUS") == "" {
		t.Skip("set VHOSTUSER_WRITE_CORPUS=1 to regenerate testdata/fuzz")
	}
	for name, seeds := range map[string][][]byte{"FuzzMessage": messageSeeds(), "FuzzDescChain": chainSeeds(),
		"FuzzMemTable": memSeeds()} {
		dir := filepath.Join("testdata", "fuzz", name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, s := range seeds {
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
