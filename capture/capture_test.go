package capture

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/pump"
)

// capFrame is a frame of n bytes (at least 8) tagged with its direction
// and index, so read-back frames can be matched with what was sent.
func capFrame(dir Direction, i, n int) []byte {
	f := make([]byte, n)
	for j := range f {
		f[j] = byte(j)
	}
	f[0] = byte(dir)
	binary.BigEndian.PutUint32(f[1:], uint32(i))
	return f
}

// capRecord is one frame read back from a pcap stream.
type capRecord struct {
	data []byte
	orig int
	ts   time.Time
}

// readCapture reads a pcap stream back, checking its file header.
func readCapture(t *testing.T, r io.Reader) []capRecord {
	t.Helper()
	pr, err := pcapgo.NewReader(r)
	if err != nil {
		t.Fatal(err)
	}
	if pr.LinkType() != layers.LinkTypeEthernet || pr.Snaplen() != SnapLen || pr.Resolution().ToDuration() != time.Nanosecond {
		t.Fatalf("header: link %v snaplen %d resolution %v", pr.LinkType(), pr.Snaplen(), pr.Resolution())
	}
	var recs []capRecord
	for {
		data, ci, err := pr.ReadPacketData()
		if errors.Is(err, io.EOF) {
			return recs
		}
		if err != nil {
			t.Fatal(err)
		}
		if ci.CaptureLength != len(data) {
			t.Fatalf("capture length %d, data %d", ci.CaptureLength, len(data))
		}
		recs = append(recs, capRecord{data, ci.Length, ci.Timestamp})
	}
}

// TestCaptureFileRoundTrip writes batches of every size class to a file
// and reads them back identical, in order, jumbo frames cut to the snap
// length with their length kept.
func TestCaptureFileRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "port0.pcap")
	c, err := Create(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var sent [][]byte
	sizes := []int{14, 60, 61, 1514, 9014, 65535, 65536, pump.MaxFrame, 100}
	before := time.Now()
	for b := range 50 {
		var batch [][]byte
		dir := Direction(b % 2)
		for k := range 1 + b%5 {
			batch = append(batch, capFrame(dir, len(sent)+k, sizes[(b+k)%len(sizes)]))
		}
		c.Frames(dir, batch)
		sent = append(sent, batch...)
		time.Sleep(time.Millisecond) // let the writer run between batches
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("file mode %v, %v", st.Mode(), err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs := readCapture(t, f)
	checkRecords(t, recs, sent, before)
	if s := c.Stats(); s.Captured != uint64(len(sent)) || s.Dropped != 0 || s.Bytes != sumCaptured(sent) {
		t.Fatalf("stats %+v, sent %d frames, %d bytes", s, len(sent), sumCaptured(sent))
	}
}

// checkRecords compares read-back records with the frames sent, in order.
func checkRecords(t *testing.T, recs []capRecord, sent [][]byte, before time.Time) {
	t.Helper()
	if len(recs) != len(sent) {
		t.Fatalf("read %d frames, sent %d", len(recs), len(sent))
	}
	last := before
	for i, r := range recs {
		want := sent[i][:min(len(sent[i]), SnapLen)]
		if !bytes.Equal(r.data, want) || r.orig != len(sent[i]) {
			t.Fatalf("frame %d: %d/%d bytes, want %d/%d", i, len(r.data), r.orig, len(want), len(sent[i]))
		}
		if r.ts.Before(last) || r.ts.After(time.Now()) {
			t.Fatalf("frame %d: time %v after %v", i, r.ts, last)
		}
		last = r.ts
	}
}

// sumCaptured is the bytes a capture keeps of frames.
func sumCaptured(frames [][]byte) uint64 {
	var n uint64
	for _, f := range frames {
		n += uint64(min(len(f), SnapLen))
	}
	return n
}

// TestCaptureMergeOrder feeds both directions in turn from one goroutine,
// faster than the writer drains: the stream must come out in timestamp
// order, each direction in its own order.
func TestCaptureMergeOrder(t *testing.T) {
	var out bytes.Buffer
	c, err := New(&out, Options{QueueBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	const batches = 2000
	for b := range batches {
		dir := Direction(b % 2)
		c.Frames(dir, [][]byte{capFrame(dir, b/2, 60), capFrame(dir, b/2, 60)})
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	recs := readCapture(t, &out)
	if s := c.Stats(); s.Dropped != 0 || len(recs) != 2*batches {
		t.Fatalf("stats %+v, read %d", s, len(recs))
	}
	for i := 1; i < len(recs); i++ {
		if recs[i].ts.Before(recs[i-1].ts) {
			t.Fatalf("frame %d at %v, before frame %d at %v", i, recs[i].ts, i-1, recs[i-1].ts)
		}
	}
}

// TestCaptureFileRefusals checks that an existing file is kept unless
// asked, that errors name the path, and that Overwrite makes it 0600.
func TestCaptureFileRefusals(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.pcap")
	if err := os.WriteFile(path, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Create(path, Options{}); !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), path) {
		t.Fatalf("existing file: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "keep me" {
		t.Fatal("existing file changed")
	}
	c, err := Create(path, Options{Overwrite: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 || st.Size() != 24 {
		t.Fatalf("overwritten file: mode %v size %d", st.Mode(), st.Size())
	}
	bad := filepath.Join(t.TempDir(), "no", "such", "dir.pcap")
	if _, err := Create(bad, Options{}); err == nil || !strings.Contains(err.Error(), bad) {
		t.Fatalf("missing directory: %v", err)
	}
}

// gateWriter passes Writes through until hold, then blocks them until
// release; it keeps what it is given.
type gateWriter struct {
	block   chan struct{} // closed: Writes wait on open
	open    chan struct{} // closed by release
	mu      sync.Mutex
	buf     bytes.Buffer
	blocked chan struct{} // closed at the first Write that waits
	once    sync.Once
}

// newGateWriter passes Writes through until hold is called.
func newGateWriter() *gateWriter {
	return &gateWriter{block: make(chan struct{}), open: make(chan struct{}), blocked: make(chan struct{})}
}

// hold makes later Writes wait for release.
func (g *gateWriter) hold() { close(g.block) }

// release lets waiting and later Writes through.
func (g *gateWriter) release() { close(g.open) }

// Write waits while the gate is held, then keeps p.
func (g *gateWriter) Write(p []byte) (int, error) {
	select {
	case <-g.block:
		g.once.Do(func() { close(g.blocked) })
		<-g.open
	default:
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.buf.Write(p)
}

// TestCaptureFullQueueDrops stalls the destination: Frames must keep
// returning at once and count what does not fit as dropped; once released,
// everything counted as captured is in the stream, in order.
func TestCaptureFullQueueDrops(t *testing.T) {
	g := newGateWriter()
	c, err := New(g, Options{QueueBytes: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	g.hold()
	var sent [][]byte
	done := make(chan struct{})
	go func() {
		defer close(done)
		for b := range 200 { // 200 × 16 × 1514 B ≈ 4.8 MB, far above queue and buffer
			batch := make([][]byte, 16)
			for k := range batch {
				batch[k] = capFrame(ToNetwork, len(sent)+k, 1514)
			}
			c.Frames(ToNetwork, batch)
			sent = append(sent, batch...)
			if b == 0 {
				<-g.blocked // the writer is stuck from now on
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Frames blocked behind a stalled writer")
	}
	s := c.Stats()
	if s.Dropped == 0 || s.Dropped >= uint64(len(sent)) {
		t.Fatalf("stats while stalled %+v, sent %d", s, len(sent))
	}
	g.release()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	s = c.Stats()
	if s.Captured+s.Dropped != uint64(len(sent)) {
		t.Fatalf("stats %+v, sent %d", s, len(sent))
	}
	recs := readCapture(t, &g.buf)
	if uint64(len(recs)) != s.Captured {
		t.Fatalf("read %d frames, captured %d", len(recs), s.Captured)
	}
	checkSubsequence(t, recs, ToNetwork, len(sent))
}

// checkSubsequence checks that dir's frames in recs appear in the order
// they were sent, once each, and returns how many there were.
func checkSubsequence(t *testing.T, recs []capRecord, dir Direction, sent int) int {
	t.Helper()
	next, n := 0, 0
	for _, r := range recs {
		if Direction(r.data[0]) != dir {
			continue
		}
		i := int(binary.BigEndian.Uint32(r.data[1:]))
		if i < next || i >= sent {
			t.Fatalf("%v frame %d after %d (of %d)", dir, i, next-1, sent)
		}
		next, n = i+1, n+1
	}
	return n
}

// TestCaptureConcurrentDirections has two goroutines feed the two
// directions at once (run with -race): each direction's frames come back
// in order, and the counts add up.
func TestCaptureConcurrentDirections(t *testing.T) {
	var out bytes.Buffer
	c, err := New(&out, Options{})
	if err != nil {
		t.Fatal(err)
	}
	const batches, per = 300, 8
	var wg sync.WaitGroup
	for _, dir := range []Direction{ToNetwork, ToVM} {
		wg.Go(func() {
			batch := make([][]byte, per)
			for b := range batches {
				for k := range batch {
					batch[k] = capFrame(dir, b*per+k, 64+k*100)
				}
				c.Frames(dir, batch)
			}
		})
	}
	wg.Go(func() { // Stats from a third goroutine while frames flow
		for range 100 {
			c.Stats()
			_ = c.Err()
		}
	})
	wg.Wait()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	recs := readCapture(t, &out)
	s := c.Stats()
	if s.Captured+s.Dropped != 2*batches*per || uint64(len(recs)) != s.Captured {
		t.Fatalf("stats %+v, read %d", s, len(recs))
	}
	n := checkSubsequence(t, recs, ToNetwork, batches*per) + checkSubsequence(t, recs, ToVM, batches*per)
	if n != len(recs) {
		t.Fatalf("%d frames of neither direction", len(recs)-n)
	}
}

// errWriter fails every Write after the first n bytes.
type errWriter struct{ n int }

// Write accepts up to the budget, then fails.
func (w *errWriter) Write(p []byte) (int, error) {
	if len(p) > w.n {
		return 0, errors.New("disk full")
	}
	w.n -= len(p)
	return len(p), nil
}

// TestCaptureWriteError checks that a failing destination stops the
// capture (Err, Close) and that frames are dropped, not queued, after it.
func TestCaptureWriteError(t *testing.T) {
	c, err := New(&errWriter{n: 24 + 16 + 60}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	frame := capFrame(ToVM, 0, 60)
	c.Frames(ToVM, [][]byte{frame})
	deadline := time.Now().Add(5 * time.Second)
	for c.Stats().Captured == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	c.Frames(ToVM, [][]byte{frame, frame}) // overflows the budget at flush
	for c.Err() == nil && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	c.Frames(ToNetwork, [][]byte{frame, frame, frame})
	if err := c.Close(); err == nil || !strings.Contains(err.Error(), "disk full") || c.Err() == nil {
		t.Fatalf("Close = %v, Err = %v", err, c.Err())
	}
	if s := c.Stats(); s.Captured+s.Dropped != 6 || s.Dropped < 3 {
		t.Fatalf("stats %+v", s)
	}
	if _, err := New(&errWriter{n: 10}, Options{}); err == nil {
		t.Fatal("NewCapture: file header write error not reported")
	}
}

// TestCaptureAfterClose checks that Frames after Close is a counted drop,
// that Close is idempotent, and that the writer goroutine is gone.
func TestCaptureAfterClose(t *testing.T) {
	c, err := New(io.Discard, Options{})
	if err != nil {
		t.Fatal(err)
	}
	c.Frames(ToVM, nil)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c.Frames(ToVM, [][]byte{capFrame(ToVM, 0, 60)})
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.exited:
	default:
		t.Fatal("writer goroutine still running after Close")
	}
	if s := c.Stats(); s != (Stats{Dropped: 1}) {
		t.Fatalf("stats %+v", s)
	}
}

// TestCaptureRingWrap pushes records of awkward sizes through a small ring
// many times over, so every wrap case (marker, short tail) is crossed.
func TestCaptureRingWrap(t *testing.T) {
	var out bytes.Buffer
	c, err := New(&out, Options{QueueBytes: minCaptureQueue})
	if err != nil {
		t.Fatal(err)
	}
	var sent [][]byte
	for i := range 1000 {
		f := capFrame(ToVM, i, 14+(i*997)%20000)
		sent = append(sent, f)
		c.Frames(ToVM, [][]byte{f})
		for s := c.Stats(); s.Captured+s.Dropped+4 <= uint64(len(sent)); s = c.Stats() {
			runtime.Gosched() // at most 4 records (80 KiB) in flight: no drops
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	checkRecords(t, readCapture(t, &out), sent, time.Time{})
}

// TestCaptureRingEdges places an empty ring's positions just before its
// end, so the next record must wrap: with 8 bytes left (too few for a
// marker) and with 32 (a marker), at positions past 2^32.
func TestCaptureRingEdges(t *testing.T) {
	for _, left := range []uint64{8, 32, 120} {
		var r captureRing
		r.init(minCaptureQueue / 2)
		start := uint64(7)<<32 + uint64(len(r.buf)) - left
		r.head.Store(start)
		r.tail.Store(start)
		frames := [][]byte{capFrame(ToVM, 0, 100), capFrame(ToVM, 1, 30)}
		if !r.put(42, frames) {
			t.Fatalf("left %d: put refused", left)
		}
		for i, f := range frames {
			ts, ok := r.peekTime()
			if !ok || ts != 42 {
				t.Fatalf("left %d, record %d: peekTime %d, %v", left, i, ts, ok)
			}
			ts, orig, data, next := r.peek()
			if !bytes.Equal(data, f) || orig != len(f) || ts != 42 {
				t.Fatalf("left %d, record %d: %d/%d bytes", left, i, len(data), orig)
			}
			if i == 0 && left == 120 && next != start+120 {
				t.Fatalf("left 120: a fitting record wrapped (next %d)", next-start)
			}
			r.head.Store(next)
		}
		if _, ok := r.peekTime(); ok || r.head.Load() != r.tail.Load() {
			t.Fatalf("left %d: ring not empty after two records", left)
		}
	}
}

// TestCaptureFramesAllocs checks that Frames allocates nothing in steady
// state (the writer goroutine included: AllocsPerRun counts every
// goroutine's allocations).
func TestCaptureFramesAllocs(t *testing.T) {
	c, err := New(io.Discard, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	batch := make([][]byte, 32)
	for i := range batch {
		batch[i] = capFrame(ToNetwork, i, 1514)
	}
	for range 100 { // warm up: goroutine stacks, timers
		c.Frames(ToNetwork, batch)
	}
	allocs := testing.AllocsPerRun(1000, func() {
		c.Frames(ToNetwork, batch)
		c.Frames(ToVM, batch[:5])
	})
	if allocs != 0 {
		t.Fatalf("Frames: %v allocations per call", allocs)
	}
}

// BenchmarkCaptureFrames measures Frames with batches of 32 frames of
// 1514 bytes: "drain" keeps the writer (to io.Discard) up with the
// producer, so it is the sustained capture rate without drops; "full" has
// a stalled destination, so it is what the data path pays while every
// frame is dropped.
func BenchmarkCaptureFrames(b *testing.B) {
	batch := make([][]byte, 32)
	for i := range batch {
		batch[i] = capFrame(ToNetwork, i, 1514)
	}
	b.Run("drain", func(b *testing.B) {
		c, err := New(io.Discard, Options{})
		if err != nil {
			b.Fatal(err)
		}
		benchFrames(b, c, batch, func(sent uint64) {
			for s := c.Stats(); s.Captured+s.Dropped+uint64(16*len(batch)) < sent; s = c.Stats() {
				runtime.Gosched() // at most 16 batches in flight
			}
		})
	})
	b.Run("full", func(b *testing.B) {
		g := newGateWriter()
		c, err := New(g, Options{})
		if err != nil {
			b.Fatal(err)
		}
		g.hold()
		defer g.release()
		benchFrames(b, c, batch, func(uint64) {})
	})
}

// benchFrames runs Frames b.N times, calling pace after each, and reports
// the share of frames dropped.
func benchFrames(b *testing.B, c *Capture, batch [][]byte, pace func(sent uint64)) {
	b.ReportAllocs()
	b.SetBytes(int64(len(batch) * len(batch[0])))
	sent := uint64(0)
	for b.Loop() {
		c.Frames(ToNetwork, batch)
		sent += uint64(len(batch))
		pace(sent)
	}
	b.StopTimer()
	s := c.Stats()
	b.ReportMetric(float64(s.Dropped)/float64(max(sent, 1)), "dropped/frame")
	go c.Close() // "full" releases its writer only after returning
}
