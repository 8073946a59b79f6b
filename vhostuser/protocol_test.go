package vhostuser

import (
	"encoding/binary"
	"errors"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/vhostuser/vhosttest"
	"golang.org/x/sys/unix"
)

// served is a server on a socketpair with a raw front end and nothing negotiated.
type served struct {
	srv  *Server
	fe   *vhosttest.FrontEnd
	h    *recorder
	done chan error
}

// newServed serves one end of a socketpair for cfg; Cleanup closes it.
func newServed(t *testing.T, cfg Config) *served {
	t.Helper()
	fe, conn, err := vhosttest.Pair()
	if err != nil {
		t.Fatal(err)
	}
	s := &served{fe: fe, h: newRecorder(), done: make(chan error, 1)}
	cfg.Logger = testLogger()
	s.srv, err = New(cfg, s.h)
	if err != nil {
		t.Fatal(err)
	}
	go func() { s.done <- s.srv.ServeConn(conn) }()
	t.Cleanup(func() {
		fe.Close()
		s.srv.Close()
		<-s.done
	})
	return s
}

// expectHangup waits for the back end to close the connection.
func (s *served) expectHangup(t *testing.T) {
	t.Helper()
	s.fe.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var b [64]byte
	for {
		_, err := s.fe.Conn.Read(b[:])
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatal("back end kept the connection")
			}
			return
		}
	}
}

// TestNegotiation checks the offers and that odd but legal settings are accepted.
func TestNegotiation(t *testing.T) {
	s := newServed(t, Config{Queues: 2, MTU: 1500})
	fe := s.fe
	feat, err := fe.Get(vhosttest.GetFeatures, nil)
	want := uint64(vhosttest.FVersion1 | vhosttest.FMrgRxbuf | vhosttest.FEventIdx | vhosttest.FIndirectDesc |
		vhosttest.FNotifyOnEmpty | vhosttest.FProtocol | vhosttest.FMQ | vhosttest.FMTU |
		vhosttest.FCsum | vhosttest.FHostTSO4 | vhosttest.FHostTSO6 | vhosttest.FHostECN |
		vhosttest.FLogAll | vhosttest.FGuestAnnounce)
	if err != nil || feat != want {
		t.Fatalf("GET_FEATURES = %#x, %v; want %#x", feat, err, want)
	}
	proto, err := fe.Get(vhosttest.GetProtocolFeatures, nil)
	if err != nil || proto != vhosttest.PMQ|vhosttest.PLogShmFD|vhosttest.PRARP|vhosttest.PReplyAck|vhosttest.PMTU|vhosttest.PMemSlots {
		t.Fatalf("GET_PROTOCOL_FEATURES = %#x, %v", proto, err)
	}
	if err := fe.Set(vhosttest.SetProtocolFeatures, vhosttest.U64(proto)); err != nil {
		t.Fatal(err)
	}
	fe.ReplyAck = true
	if n, err := fe.Get(vhosttest.GetQueueNum, nil); err != nil || n != 2 {
		t.Fatalf("GET_QUEUE_NUM = %d, %v", n, err)
	}
	for _, step := range []struct {
		req  uint32
		body []byte
	}{
		{vhosttest.SetOwner, nil},
		{vhosttest.SetFeatures, vhosttest.U64(vhosttest.FProtocol)}, // the QEMU reconnect flaw
		{vhosttest.SetFeatures, vhosttest.U64(feat)},
		{vhosttest.NetSetMTU, vhosttest.U64(1400)},
		{vhosttest.SendRARP, vhosttest.U64(0x665544332211)},
		{vhosttest.SetVringCall, vhosttest.U64(3 | vhosttest.NoFD)},
		{vhosttest.SetVringErr, vhosttest.U64(2 | vhosttest.NoFD)},
		{vhosttest.SetVringEnable, vhosttest.State(3, 1)},
	} {
		if err := fe.Set(step.req, step.body); err != nil {
			t.Fatalf("request %d: %v", step.req, err)
		}
	}
	if base, err := fe.GetVringBase(3); err != nil || base != 0 {
		t.Fatalf("GET_VRING_BASE of an unstarted ring = %d, %v", base, err)
	}
	if st := s.srv.Stats(); st.MTU != 1400 || st.ProtocolErrors != 0 {
		t.Errorf("stats %+v", st)
	}
}

// badMessage is one malformed message and the fds it carries.
type badMessage struct {
	name  string
	req   uint32
	flags uint32
	body  []byte
	fds   int
	setup bool // negotiate and share memory first
}

// memTableBody builds a SET_MEM_TABLE body for the given regions.
func memTableBody(n uint32, regions ...vhosttest.Region) []byte {
	b := binary.NativeEndian.AppendUint32(nil, n)
	b = binary.NativeEndian.AppendUint32(b, 0)
	for _, r := range regions {
		for _, v := range []uint64{r.GPA, r.Size, r.UserAddr, r.Offset} {
			b = binary.NativeEndian.AppendUint64(b, v)
		}
	}
	return b
}

// TestBadMessages sends one malformed or impossible message per connection: each must end
// that connection (counted), leave the server serving, and leak no fd.
func TestBadMessages(t *testing.T) {
	reg := vhosttest.Region{GPA: 0, Size: 1 << 20, UserAddr: 0x10000}
	cases := []badMessage{
		{name: "unknown request", req: 99, flags: 1},
		{name: "known but unsupported request", req: 6, flags: 1, body: make([]byte, 16), fds: 1},
		{name: "version 2", req: vhosttest.GetFeatures, flags: 2},
		{name: "reply bit", req: vhosttest.GetFeatures, flags: 1 | vhosttest.FlagReply},
		{name: "unknown flag", req: vhosttest.GetFeatures, flags: 1 | 1<<7},
		{name: "short body", req: vhosttest.SetFeatures, flags: 1, body: make([]byte, 4)},
		{name: "long body", req: vhosttest.SetVringNum, flags: 1, body: make([]byte, 12)},
		{name: "body over the limit", req: vhosttest.SetFeatures, flags: 1, body: make([]byte, 4097)},
		{name: "fd on a request without fds", req: vhosttest.SetFeatures, flags: 1, body: vhosttest.U64(0), fds: 1},
		{name: "kick without fd and without NOFD", req: vhosttest.SetVringKick, flags: 1, body: vhosttest.U64(0)},
		{name: "kick with two fds", req: vhosttest.SetVringKick, flags: 1, body: vhosttest.U64(0), fds: 2},
		{name: "call with fd and NOFD", req: vhosttest.SetVringCall, flags: 1, body: vhosttest.U64(vhosttest.NoFD), fds: 1},
		{name: "mem table fds short", req: vhosttest.SetMemTable, flags: 1, body: memTableBody(2, reg, reg), fds: 1},
		{name: "mem table nine regions", req: vhosttest.SetMemTable, flags: 1, body: memTableBody(9), fds: 8},
		{name: "mem table size mismatch", req: vhosttest.SetMemTable, flags: 1, body: memTableBody(2, reg), fds: 2},
		{name: "mem table beyond the file", req: vhosttest.SetMemTable, flags: 1,
			body: memTableBody(1, vhosttest.Region{Size: 1 << 30, UserAddr: 0x10000}), fds: 1},
		{name: "mem table misaligned", req: vhosttest.SetMemTable, flags: 1,
			body: memTableBody(1, vhosttest.Region{Size: 4096, UserAddr: 0x10003}), fds: 1},
		{name: "mem table wraps", req: vhosttest.SetMemTable, flags: 1,
			body: memTableBody(1, vhosttest.Region{GPA: 1<<64 - 4096, Size: 8192}), fds: 1},
		{name: "ring size not a power of two", req: vhosttest.SetVringNum, flags: 1, body: vhosttest.State(0, 100)},
		{name: "ring size too big", req: vhosttest.SetVringNum, flags: 1, body: vhosttest.State(0, 65536)},
		{name: "vring index out of range", req: vhosttest.SetVringNum, flags: 1, body: vhosttest.State(2, 256)},
		{name: "kick index out of range", req: vhosttest.SetVringKick, flags: 1, body: vhosttest.U64(7), fds: 1},
		{name: "feature not offered", req: vhosttest.SetFeatures, flags: 1, body: vhosttest.U64(1 << 1)},
		{name: "protocol feature not offered", req: vhosttest.SetProtocolFeatures, flags: 1, body: vhosttest.U64(1 << 5)},
		{name: "kick before the ring is configured", req: vhosttest.SetVringKick, flags: 1, body: vhosttest.U64(0), fds: -2},
		{name: "enable state 2", req: vhosttest.SetVringEnable, flags: 1, body: vhosttest.State(0, 2)},
		{name: "MTU 10", req: vhosttest.NetSetMTU, flags: 1, body: vhosttest.U64(10)},
		{name: "base beyond u16", req: vhosttest.SetVringBase, flags: 1, body: vhosttest.State(0, 1<<16)},
		{name: "kick fd not pollable", req: vhosttest.SetVringKick, flags: 1, body: vhosttest.U64(0), fds: -1},
	}
	mem, err := vhosttest.NewMemory(1<<20, false)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	before := openFDs(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newServed(t, Config{})
			var fds []int
			switch {
			case c.fds == -1: // a regular file: the netpoller refuses it
				fds = []int{mem.FD}
			case c.fds == -2:
				fds = []int{efd}
			default:
				for range c.fds {
					fds = append(fds, mem.FD)
				}
			}
			if err := s.fe.Send(c.req, c.flags, c.body, fds...); err != nil {
				t.Fatal(err)
			}
			s.expectHangup(t)
			if st := s.srv.Stats(); st.ProtocolErrors != 1 {
				t.Errorf("ProtocolErrors = %d", st.ProtocolErrors)
			}
		})
	}
	if after := openFDs(t); after != before {
		t.Errorf("%d fds open before, %d after", before, after)
	}
}

// TestReplyAckFailure reports a refused request with a non-zero status before hanging up.
func TestReplyAckFailure(t *testing.T) {
	s := newServed(t, Config{})
	if err := s.fe.Set(vhosttest.SetProtocolFeatures, vhosttest.U64(vhosttest.PReplyAck)); err != nil {
		t.Fatal(err)
	}
	s.fe.Send(vhosttest.SetVringNum, vhosttest.Version1|vhosttest.NeedReply, vhosttest.State(0, 3))
	b, err := s.fe.Recv(vhosttest.SetVringNum)
	if err != nil || len(b) != 8 || binary.NativeEndian.Uint64(b) == 0 {
		t.Fatalf("status %x, %v", b, err)
	}
	s.expectHangup(t)
}

// TestFDsReleased replaces tables and eventfds many times and checks nothing leaks, also
// after the connection ends.
func TestFDsReleased(t *testing.T) {
	before := openFDs(t)
	func() {
		r := newRig(t, rigOpts{})
		for range 20 {
			if err := r.fe.SetMemTable(r.mem); err != nil {
				t.Fatal(err)
			}
			if err := r.fe.Set(vhosttest.SetVringCall, vhosttest.U64(0), r.rx.Call); err != nil {
				t.Fatal(err)
			}
			if err := r.fe.Set(vhosttest.SetVringErr, vhosttest.U64(1), r.rx.Call); err != nil {
				t.Fatal(err)
			}
		}
		r.close()
		r.h.waitStopped(t)
	}()
	if after := openFDs(t); after != before {
		t.Errorf("%d fds open before, %d after", before, after)
	}
}

// TestReconnect serves two front ends in turn on a listening socket; the second resumes
// the rings from used->idx in guest memory although it sends a stale base.
func TestReconnect(t *testing.T) {
	path := filepath.Join(t.TempDir(), "vu.sock")
	h := newRecorder()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srv, err := New(Config{Logger: testLogger()}, h)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- serveListener(srv, ln) }()
	mem, err := vhosttest.NewMemory(1<<20, false)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	rx, _ := vhosttest.NewVirtqueue(mem, 64, true)
	tx, _ := vhosttest.NewVirtqueue(mem, 64, true)
	defer rx.Close()
	defer tx.Close()
	buf := mem.Alloc(2048, 8)
	for round := range 2 {
		fe, err := vhosttest.Dial(path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fe.Negotiate(allFeatures, allProto); err != nil {
			t.Fatal(err)
		}
		if err := fe.SetMemTable(mem); err != nil {
			t.Fatal(err)
		}
		if err := fe.StartQueue(0, rx, 0); err != nil {
			t.Fatal(err)
		}
		if err := fe.StartQueue(1, tx, 0); err != nil { // base 0 is stale in round 1
			t.Fatal(err)
		}
		q := h.waitStarted(t)
		f := frame(100, byte(round))
		copy(mem.At(buf, 112), append(make([]byte, 12), f...))
		tx.Add([]vhosttest.Seg{{Addr: buf, Len: 112}})
		tx.PublishKick()
		if got := readN(t, q, 1); string(got[0]) != string(f) {
			t.Fatalf("round %d: wrong frame", round)
		}
		if id, _, ok := tx.PopUsed(); !ok || tx.UsedIdx() != uint16(round+1) {
			t.Fatalf("round %d: used %d idx %d", round, id, tx.UsedIdx())
		}
		fe.Close()
		h.waitStopped(t)
	}
	if st := srv.Stats(); st.Connections != 2 || st.TXFrames != 2 || st.ProtocolErrors != 0 {
		t.Errorf("stats %+v", st)
	}
	srv.Close()
	if fe, err := vhosttest.Dial(path); err == nil { // handed to a closed server
		defer fe.Close()
	}
	if err := <-done; !errors.Is(err, ErrServerClosed) {
		t.Errorf("ServeConn = %v", err)
	}
}

// serveListener hands each connection ln accepts to srv, as the front end's listener
// does, until srv refuses one.
func serveListener(srv *Server, ln *net.UnixListener) error {
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			return err
		}
		if err := srv.ServeConn(c); errors.Is(err, ErrServerClosed) {
			return err
		}
	}
}

// TestMultiQueue starts pair 1 of two and checks the Handler hears about it.
func TestMultiQueue(t *testing.T) {
	r := newRig(t, rigOpts{queues: 2, noStart: true})
	if err := r.fe.StartQueue(2, r.rx, 0); err != nil {
		t.Fatal(err)
	}
	if err := r.fe.StartQueue(3, r.tx, 0); err != nil {
		t.Fatal(err)
	}
	q := r.h.waitStarted(t)
	if q.Index() != 1 {
		t.Fatalf("started pair %d", q.Index())
	}
	r.putTX(frame(77, 1), false)
	r.tx.PublishKick()
	if got := readN(t, q, 1); len(got[0]) != 77 {
		t.Fatal("wrong frame on pair 1")
	}
}

// TestMemSlots builds guest memory region by region with ADD_MEM_REG, carries frames
// through a buffer straddling the two regions, then removes a region under a live ring:
// a buffer there is refused afterwards instead of read.
func TestMemSlots(t *testing.T) {
	mem, err := vhosttest.NewMemory(2<<20, true)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	rx, _ := vhosttest.NewVirtqueue(mem, 64, true)
	tx, _ := vhosttest.NewVirtqueue(mem, 64, true)
	defer rx.Close()
	defer tx.Close()
	before := openFDs(t)
	s := newServed(t, Config{})
	if _, err := s.fe.Negotiate(allFeatures, allProto|vhosttest.PMemSlots); err != nil {
		t.Fatal(err)
	}
	if n, err := s.fe.Get(vhosttest.GetMaxMemSlots, nil); err != nil || n != maxMemSlots {
		t.Fatalf("GET_MAX_MEM_SLOTS = %d, %v", n, err)
	}
	for _, r := range mem.Regions {
		if err := s.fe.AddMemReg(mem, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.fe.StartQueue(0, rx, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.fe.StartQueue(1, tx, 0); err != nil {
		t.Fatal(err)
	}
	q := s.h.waitStarted(t)
	cross := mem.AllocAt(mem.Regions[1].GPA-50, 200)
	f := frame(150, 9)
	copy(mem.At(cross, 162), append(make([]byte, 12), f...))
	tx.Add([]vhosttest.Seg{{Addr: cross, Len: 162}})
	tx.PublishKick()
	if got := readN(t, q, 1); string(got[0]) != string(f) {
		t.Fatal("frame across regions corrupted")
	}
	if err := s.fe.RemMemReg(mem, mem.Regions[1]); err != nil {
		t.Fatal(err)
	}
	far := mem.Alloc(200, 8) // in the removed region
	if far < mem.Regions[1].GPA {
		t.Fatal("test layout: buffer not in region 1")
	}
	tx.Add([]vhosttest.Seg{{Addr: far, Len: 162}})
	tx.PublishKick()
	if _, err := q.ReadFrames([][]byte{make([]byte, 2048)}, []int{0}, 0); !errors.Is(err, ErrRingBroken) {
		t.Fatalf("buffer in a removed region: %v", err)
	}
	// Removing it twice is a protocol error: a failure status, then the connection ends.
	if err := s.fe.RemMemReg(mem, mem.Regions[1]); err == nil {
		t.Fatal("second REM_MEM_REG of the same region accepted")
	}
	s.expectHangup(t)
	s.fe.Close()
	s.h.waitStopped(t)
	s.srv.Close()
	<-s.done
	s.done <- nil // for Cleanup
	if after := openFDs(t); after != before {
		t.Errorf("%d fds open before, %d after", before, after)
	}
}
