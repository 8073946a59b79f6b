package capture

import (
	"bytes"
	"errors"
	"testing"

	"github.com/gopacket/gopacket/pcapgo"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/pump"
)

// stubNet hands out the same received batch on every ReadFrames and
// encapsulates in place (overwriting the headroom) on WriteFrames.
type stubNet struct {
	rx   [][]byte
	sent int
}

func (s *stubNet) ReadFrames(frames [][]byte) (int, error) { return copy(frames, s.rx), nil }

func (s *stubNet) WriteFrames(bufs [][]byte, sizes []int, offset int) error {
	for i := range bufs[:len(sizes)] {
		copy(bufs[i][:offset], "HDRHDRHD") // what encapsulation does in place
		s.sent++
	}
	return nil
}

func (s *stubNet) Headroom() int { return 8 }

func (s *stubNet) NewSender() (pump.NetSender, error) { return s, nil }
func (s *stubNet) BatchSize() int                     { return 4 }

// frameOf returns an Ethernet-sized frame starting with b.
func frameOf(b byte) []byte {
	f := make([]byte, 60)
	f[0] = b
	return f
}

// Frames from the network are captured as decapsulated; frames from the
// VM before encapsulation writes the header in front of them. Stopping
// returns the counts, and the pcap holds both directions in order.
func TestPortCaptureBothDirections(t *testing.T) {
	stub := &stubNet{rx: [][]byte{frameOf(1), frameOf(2)}}
	p := NewTap(stub)
	var out bytes.Buffer
	c, err := New(&out, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(c, "buffer"); err != nil {
		t.Fatal(err)
	}
	if err := p.Start(c, "again"); !errors.Is(err, ErrActive) {
		t.Fatalf("second capture: %v", err)
	}
	frames := make([][]byte, 4)
	if n, _ := p.ReadFrames(frames); n != 2 {
		t.Fatalf("read %d", n)
	}
	bufs := [][]byte{append(make([]byte, 8), frameOf(3)...)}
	if err := p.WriteFrames(bufs, []int{60}, 8); err != nil || stub.sent != 1 {
		t.Fatal(err)
	}
	if st := p.Status(); st == nil || st.Target != "buffer" {
		t.Fatalf("status %+v", st)
	}
	st, err := p.Stop(nil)
	if err != nil || st.Captured != 3 || st.Dropped != 0 {
		t.Fatalf("stop: %+v %v", st, err)
	}
	if _, err := p.Stop(nil); !errors.Is(err, ErrNotActive) {
		t.Fatalf("second stop: %v", err)
	}
	r, err := pcapgo.NewReader(&out)
	if err != nil {
		t.Fatal(err)
	}
	var firsts []byte
	for {
		data, _, err := r.ReadPacketData()
		if err != nil {
			break
		}
		if len(data) != 60 {
			t.Errorf("captured %d bytes, want the 60-byte frame without header", len(data))
		}
		firsts = append(firsts, data[0])
	}
	if !bytes.Equal(firsts, []byte{1, 2, 3}) {
		t.Errorf("captured frames %v, want [1 2 3]", firsts)
	}
}

// StopCapture with a given capture leaves another one alone.
func TestPortStopOnlyThatCapture(t *testing.T) {
	p := NewTap(&stubNet{})
	mine, _ := New(new(bytes.Buffer), Options{})
	other, _ := New(new(bytes.Buffer), Options{})
	defer other.Close()
	p.Start(mine, "mine")
	if _, err := p.Stop(other); !errors.Is(err, ErrNotActive) {
		t.Fatalf("stopping another capture: %v", err)
	}
	if _, err := p.Stop(mine); err != nil {
		t.Fatal(err)
	}
}

// The decorator allocates nothing per batch, with or without a capture.
func TestPortCaptureNoAllocs(t *testing.T) {
	stub := &stubNet{rx: [][]byte{frameOf(1), frameOf(2)}}
	p := NewTap(stub)
	frames := make([][]byte, 4)
	bufs := [][]byte{append(make([]byte, 8), frameOf(3)...), append(make([]byte, 8), frameOf(4)...)}
	sizes := []int{60, 60}
	batch := func() {
		p.ReadFrames(frames)
		p.WriteFrames(bufs, sizes, 8)
	}
	if a := testing.AllocsPerRun(100, batch); a != 0 {
		t.Errorf("no capture: %v allocs per batch", a)
	}
	c, _ := New(new(bytes.Buffer), Options{})
	p.Start(c, "buffer")
	defer p.Stop(nil)
	if a := testing.AllocsPerRun(100, batch); a != 0 {
		t.Errorf("capturing: %v allocs per batch", a)
	}
}

// BenchmarkCaptureNetworkIdle is the cost the decorator adds to a batch
// when no capture runs.
func BenchmarkCaptureNetworkIdle(b *testing.B) {
	stub := &stubNet{rx: [][]byte{frameOf(1)}}
	n := NewTap(stub)
	frames := make([][]byte, 4)
	b.ReportAllocs()
	for b.Loop() {
		n.ReadFrames(frames)
	}
}
