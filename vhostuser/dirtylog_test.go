package vhostuser

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/vhostuser/vhosttest"
	"golang.org/x/sys/unix"
)

// logGuard is the pattern around a test's dirty log in its memfd: the back end must not
// write there.
const logGuard = 0xa5

// testLog is a dirty log as QEMU shares it: a memfd with the log at an offset, guarded on
// both sides.
type testLog struct {
	fd         int
	all        []byte // the whole memfd
	log        []byte // the log itself
	off, size  uint64
	guardAfter uint64
}

// newTestLog makes a log of size bytes at offset 4096 of a memfd with a page of guard
// after it.
func newTestLog(t *testing.T, size uint64) *testLog {
	t.Helper()
	fd, err := unix.MemfdCreate("vhostuser-dirty-log", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	l := &testLog{fd: fd, off: 4096, size: size}
	l.guardAfter = 4096
	total := int(l.off + size + l.guardAfter)
	if err := unix.Ftruncate(fd, int64(total)); err != nil {
		t.Fatal(err)
	}
	if l.all, err = unix.Mmap(fd, 0, total, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
		t.Fatal(err)
	}
	for i := range l.all {
		l.all[i] = logGuard
	}
	l.log = l.all[l.off : l.off+size]
	clear(l.log)
	t.Cleanup(func() {
		unix.Munmap(l.all)
		unix.Close(fd)
	})
	return l
}

// logSizeFor is the log QEMU sizes for guest memory ending at end: one bit per 4 KiB page
// from guest-physical 0, in whole u64 chunks.
func logSizeFor(end uint64) uint64 {
	pages := (end + 4095) / 4096
	return (pages + 63) / 64 * 8
}

// marked returns the pages whose bit is set.
func (l *testLog) marked() map[uint64]bool {
	m := map[uint64]bool{}
	for i, b := range l.log {
		for bit := range 8 {
			if b&(1<<bit) != 0 {
				m[uint64(i)*8+uint64(bit)] = true
			}
		}
	}
	return m
}

// checkGuards fails the test if the back end wrote outside the log.
func (l *testLog) checkGuards(t *testing.T) {
	t.Helper()
	for i, b := range l.all {
		if (uint64(i) < l.off || uint64(i) >= l.off+l.size) && b != logGuard {
			t.Fatalf("byte %d of the log's memfd, outside the log, was written: %#x", i, b)
		}
	}
}

// pagesOf adds the pages of [gpa, gpa+n) to m.
func pagesOf(m map[uint64]bool, gpa, n uint64) {
	for p := gpa / 4096; n > 0 && p <= (gpa+n-1)/4096; p++ {
		m[p] = true
	}
}

// usedRingPages adds the pages of q's used ring (flags, idx, elements, avail_event).
func usedRingPages(m map[uint64]bool, q *vhosttest.Virtqueue) {
	pagesOf(m, q.Used, 4+8*uint64(q.Num)+2)
}

// migrationTraffic moves frames both ways on r while logging and returns the pages the
// back end wrote: the RX buffers it filled (up to the bytes it reported) and both used
// rings.
func migrationTraffic(t *testing.T, r *rig, seed byte) map[uint64]bool {
	t.Helper()
	want := map[uint64]bool{}
	usedRingPages(want, r.rx)
	usedRingPages(want, r.tx)
	r.rxBuffers(8, 2048)
	r.rx.Publish()
	frames := [][]byte{frame(60, seed), frame(1500, seed+1), frame(3000, seed+2)}
	if err := r.q.WriteFrames(frames); err != nil {
		t.Fatal(err)
	}
	addr := descAddr(r.mem, r.rx)
	for {
		id, n, ok := r.rx.PopUsed()
		if !ok {
			break
		}
		pagesOf(want, addr(id), uint64(n))
	}
	r.putTX(frame(200, seed), false)
	r.putTX(frame(1400, seed), false)
	r.tx.PublishKick()
	readN(t, r.q, 2)
	for {
		if _, _, ok := r.tx.PopUsed(); !ok {
			break
		}
	}
	return want
}

// setLogAll acks the rig's features with or without LOG_ALL and sets the rings' LOG flag
// the way QEMU toggles logging on running rings.
func setLogAll(t *testing.T, r *rig, on bool) {
	t.Helper()
	offered, err := r.fe.Get(vhosttest.GetFeatures, nil)
	if err != nil {
		t.Fatal(err)
	}
	f := offered & allFeatures
	if on {
		f |= vhosttest.FLogAll
	}
	if err := r.fe.Set(vhosttest.SetFeatures, vhosttest.U64(f)); err != nil {
		t.Fatal(err)
	}
	for i, q := range []*vhosttest.Virtqueue{r.rx, r.tx} {
		if err := r.fe.SetVringLog(uint32(i), q, on); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDirtyLogMarksEveryWrittenPage logs, stops logging and logs again in a resized log,
// on running rings, and checks that exactly the pages the back end wrote are marked and
// nothing outside the log is touched.
func TestDirtyLogMarksEveryWrittenPage(t *testing.T) {
	r := newRig(t, rigOpts{proto: allProto | vhosttest.PLogShmFD})
	end := r.mem.Base + uint64(len(r.mem.Bytes))
	l1 := newTestLog(t, logSizeFor(end))
	if err := r.fe.SetLogBase(l1.fd, l1.size, l1.off); err != nil {
		t.Fatal(err)
	}
	setLogAll(t, r, true)
	want := migrationTraffic(t, r, 1)
	if got := l1.marked(); !equalPages(got, want) {
		t.Fatalf("marked pages %v, want the written pages %v", keys(got), keys(want))
	}
	l1.checkGuards(t)

	// Off: nothing more is marked.
	setLogAll(t, r, false)
	clear(l1.log)
	migrationTraffic(t, r, 2)
	if got := l1.marked(); len(got) != 0 {
		t.Fatalf("logging off, yet pages %v marked", keys(got))
	}

	// A repeated SET_LOG_BASE with a larger log replaces the first one.
	l2 := newTestLog(t, logSizeFor(end)+4096)
	if err := r.fe.SetLogBase(l2.fd, l2.size, l2.off); err != nil {
		t.Fatal(err)
	}
	setLogAll(t, r, true)
	want = migrationTraffic(t, r, 3)
	if got := l2.marked(); !equalPages(got, want) {
		t.Fatalf("resized log: marked pages %v, want %v", keys(got), keys(want))
	}
	if got := l1.marked(); len(got) != 0 {
		t.Fatalf("the replaced log was written: pages %v", keys(got))
	}
	l1.checkGuards(t)
	l2.checkGuards(t)
}

// TestDirtyLogTooSmallEndsConnection gives a log that covers only the first 256 KiB of
// guest-physical space: the first write above it is a protocol error that ends the
// connection (counted), not a crash and not a write outside the log.
func TestDirtyLogTooSmallEndsConnection(t *testing.T) {
	r := newRig(t, rigOpts{proto: allProto | vhosttest.PLogShmFD})
	l := newTestLog(t, 8)
	if err := r.fe.SetLogBase(l.fd, l.size, l.off); err != nil {
		t.Fatal(err)
	}
	setLogAll(t, r, true)
	r.rxBuffers(4, 2048)
	r.rx.Publish()
	err := r.q.WriteFrames([][]byte{frame(100, 1), frame(100, 2)})
	if !errors.Is(err, net.ErrClosed) {
		t.Fatalf("WriteFrames with a log too small: %v, want an error wrapping net.ErrClosed", err)
	}
	r.h.waitStopped(t)
	deadline := time.Now().Add(5 * time.Second)
	for r.srv.Stats().ProtocolErrors != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("ProtocolErrors = %d, want 1", r.srv.Stats().ProtocolErrors)
		}
		time.Sleep(time.Millisecond)
	}
	l.checkGuards(t)
	if got := l.marked(); len(got) != 0 {
		t.Fatalf("pages %v marked in a log that cannot hold them", keys(got))
	}
}

// TestSetLogBaseRefusesBadLogs checks a log that no file backs and a misaligned offset end
// the connection.
func TestSetLogBaseRefusesBadLogs(t *testing.T) {
	for _, c := range []struct {
		name      string
		size, off uint64
	}{{"beyond the file", 1 << 20, 0}, {"misaligned", 8, 3}, {"empty", 0, 0}} {
		t.Run(c.name, func(t *testing.T) {
			s := newServed(t, Config{})
			l := newTestLog(t, 64)
			body := binary.NativeEndian.AppendUint64(nil, c.size)
			body = binary.NativeEndian.AppendUint64(body, c.off)
			if err := s.fe.Send(vhosttest.SetLogBase, vhosttest.Version1, body, l.fd); err != nil {
				t.Fatal(err)
			}
			s.expectHangup(t)
		})
	}
}

// equalPages reports whether two page sets are the same.
func equalPages(a, b map[uint64]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for p := range a {
		if !b[p] {
			return false
		}
	}
	return true
}

// keys lists a page set, for messages.
func keys(m map[uint64]bool) []uint64 {
	var out []uint64
	for p := range m {
		out = append(out, p)
	}
	return out
}

// announcer is a recorder that also records announcements.
type announcer struct {
	*recorder
	frames chan []byte
}

// Announce records the frame.
func (a *announcer) Announce(mac net.HardwareAddr, frame []byte) { a.frames <- frame }

// TestSendRARPAnnounces checks SEND_RARP hands the Handler a RARP frame for the MAC in
// the body's first six bytes (golden bytes).
func TestSendRARPAnnounces(t *testing.T) {
	fe, conn, err := vhosttest.Pair()
	if err != nil {
		t.Fatal(err)
	}
	h := &announcer{recorder: newRecorder(), frames: make(chan []byte, 1)}
	srv, err := New(Config{Logger: testLogger()}, h)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServeConn(conn) }()
	defer func() { fe.Close(); srv.Close(); <-done }()
	if _, err := fe.Negotiate(allFeatures, allProto|vhosttest.PRARP); err != nil {
		t.Fatal(err)
	}
	body := []byte{0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0, 0}
	if err := fe.Set(vhosttest.SendRARP, body); err != nil {
		t.Fatal(err)
	}
	want, _ := hex.DecodeString("ffffffffffff525400123456" + "8035" + "0001" + "0800" + "0604" + "0003" +
		"525400123456" + "00000000" + "525400123456" + "00000000" + "000000000000000000000000000000000000")
	select {
	case got := <-h.frames:
		if !bytes.Equal(got, want) {
			t.Fatalf("RARP frame\n%x\nwant\n%x", got, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no announcement")
	}
}
