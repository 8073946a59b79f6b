package impair_test

import (
	"bytes"
	"math"
	"math/bits"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/impair"
)

// mustParse parses a spec the test knows is good.
func mustParse(t testing.TB, s string) impair.Spec {
	t.Helper()
	spec, err := impair.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

// frameOf is a 64-byte frame numbered i.
func frameOf(buf []byte, i int) []byte {
	for j := range buf {
		buf[j] = byte(i >> (8 * (j % 4)))
	}
	return buf
}

// run offers n frames to an engine for spec, one every gap nanoseconds,
// and hands each frame that leaves the line to out with its offer and
// leave times and its index. It drains the line as it goes.
func run(t testing.TB, spec impair.Spec, n int, gap int64, out func(frame []byte, due int64)) *impair.Engine {
	e := impair.NewEngine(spec, 8, 1)
	bufs, sizes := make([][]byte, 64), make([]int, 64)
	frame := make([]byte, 64)
	var now int64
	drain := func(until int64) {
		for {
			k := e.Pop(until, bufs, sizes)
			for i := range k {
				out(bufs[i][8:8+sizes[i]], until)
			}
			e.Release()
			if k == 0 {
				return
			}
		}
	}
	for i := range n {
		for !e.Offer(frameOf(frame, i), now) {
			due, _ := e.NextDue()
			drain(due)
		}
		now += gap
		drain(now)
	}
	drain(math.MaxInt64)
	return e
}

// within fails unless got is within tol of want.
func within(t *testing.T, what string, got, want, tol float64) {
	t.Helper()
	if math.Abs(got-want) > tol {
		t.Errorf("%s = %.5g, want %.5g ± %.3g", what, got, want, tol)
	} else {
		t.Logf("%s = %.5g (want %.5g ± %.3g)", what, got, want, tol)
	}
}

// meanTol is 5 standard errors of a mean over million samples of
// standard deviation sd.
func meanTol(sd float64) float64 { return 5 * sd / math.Sqrt(million) }

// binomialTol is 5 standard deviations of a share p over n trials.
func binomialTol(p float64, n int) float64 { return 5 * math.Sqrt(p*(1-p)/float64(n)) }

func TestEngineRandomLoss(t *testing.T) {
	for _, p := range []float64{0.01, 0.2} {
		e := run(t, impair.Spec{Loss: p}, million, 1000, func([]byte, int64) {})
		got := float64(e.Counters.Drops[impair.DropLoss]) / million
		within(t, "loss share", got, p, binomialTol(p, million))
		if e.Counters.Queued+e.Counters.Drops[impair.DropLoss] != million {
			t.Errorf("queued %d + lost %d != offered %d", e.Counters.Queued, e.Counters.Drops[impair.DropLoss], million)
		}
	}
}

func TestEngineGilbertElliott(t *testing.T) {
	spec := mustParse(t, "loss gemodel 1% 25%") // bad state loses all, good none
	e := impair.NewEngine(spec, 0, 1)
	frame := make([]byte, 64)
	bufs, sizes := make([][]byte, 1), make([]int, 1)
	var lost, bursts, run int
	for i := range million {
		q := e.Counters.Queued
		e.Offer(frame, int64(i))
		if e.Counters.Queued == q {
			lost++
			run++
		} else {
			if run > 0 {
				bursts++
			}
			run = 0
			e.Pop(int64(i), bufs, sizes)
			e.Release()
		}
	}
	pBad := 0.01 / (0.01 + 0.25)
	within(t, "loss share", float64(lost)/million, pBad, 3*binomialTol(pBad, million)) // bursts: wider than binomial
	within(t, "mean burst length", float64(lost)/float64(bursts), 1/0.25, 0.15)
}

func TestEngineDuplicate(t *testing.T) {
	var out int
	e := run(t, impair.Spec{Duplicate: 0.05}, million, 1000, func([]byte, int64) { out++ })
	within(t, "duplicate share", float64(e.Counters.Duplicated)/million, 0.05, binomialTol(0.05, million))
	if out != million+int(e.Counters.Duplicated) {
		t.Errorf("%d frames left the line, want %d + %d duplicates", out, million, e.Counters.Duplicated)
	}
}

func TestEngineCorrupt(t *testing.T) {
	want := make([]byte, 64)
	var oneBit, other int
	run(t, impair.Spec{Corrupt: 0.1}, million, 1000, func(f []byte, _ int64) {
		// frames leave in order without delay: rebuild the original from its number
		i := int(f[0]) | int(f[1])<<8 | int(f[2])<<16 | int(f[3])<<24
		frameOf(want, i)
		diff := 0
		for j := range f {
			diff += bits.OnesCount8(f[j] ^ want[j])
		}
		switch diff {
		case 0:
		case 1:
			oneBit++
		default:
			other++
		}
	})
	// A flipped bit in bytes 0..3 changes the number read back: count only
	// what is certain, frames with exactly one flipped bit elsewhere.
	within(t, "frames with one bit flipped", float64(oneBit)/million, 0.1*60/64, binomialTol(0.1*60/64, million))
	if other > million/100 {
		t.Errorf("%d frames differ by more than one bit", other)
	}
}

func TestEngineDelayUniform(t *testing.T) {
	testDelay(t, "delay 50ms 10ms", func(mean, sd, lo, hi float64) {
		within(t, "mean delay ms", mean, 50, meanTol(10/math.Sqrt(3)))
		within(t, "stddev ms", sd, 10/math.Sqrt(3), meanTol(10/math.Sqrt(3)))
		if lo < 40 || hi > 60 {
			t.Errorf("delays span %.3f..%.3f ms, want within 40..60", lo, hi)
		}
	})
}

func TestEngineDelayNormal(t *testing.T) {
	testDelay(t, "delay 50ms 10ms distribution normal", func(mean, sd, lo, hi float64) {
		within(t, "mean delay ms", mean, 50, meanTol(10))
		within(t, "stddev ms", sd, 10, meanTol(10))
		if lo < 0 {
			t.Errorf("a negative delay: %.3f ms", lo)
		}
	})
}

// testDelay measures each frame's time in the line over a million frames
// offered 100 µs apart and passes mean, standard deviation, min and max in
// milliseconds to check.
func testDelay(t *testing.T, spec string, check func(mean, sd, lo, hi float64)) {
	offered := make([]int64, million)
	var sum, sq float64
	lo, hi := math.Inf(1), math.Inf(-1)
	e := impair.NewEngine(mustParse(t, spec+" limit 100000"), 0, 1)
	frame := make([]byte, 64)
	bufs, sizes := make([][]byte, 64), make([]int, 64)
	take := func(now int64) {
		for {
			due, ok := e.NextDue()
			if !ok || due > now {
				return
			}
			k := e.Pop(due, bufs, sizes)
			for i := range k {
				f := bufs[i][:sizes[i]]
				n := int(f[0]) | int(f[1])<<8 | int(f[2])<<16 | int(f[3])<<24
				d := float64(due-offered[n]) / 1e6
				sum, sq = sum+d, sq+d*d
				lo, hi = min(lo, d), max(hi, d)
			}
			e.Release()
		}
	}
	for i := range million {
		now := int64(i) * 100_000
		offered[i] = now
		if !e.Offer(frameOf(frame, i), now) {
			t.Fatal("line full")
		}
		take(now)
	}
	take(math.MaxInt64)
	mean := sum / million
	check(mean, math.Sqrt(sq/million-mean*mean), lo, hi)
}

func TestEngineRate(t *testing.T) {
	// 10 Mbit/s, 1500-byte frames: 1.2 ms each. Offer 10 000 frames at
	// once into a big enough line: the last leaves after 12 s.
	spec := mustParse(t, "rate 10mbit limit 10000")
	e := impair.NewEngine(spec, 0, 1)
	frame := make([]byte, 1500)
	for range 10000 {
		if !e.Offer(frame, 0) {
			t.Fatal("line full")
		}
	}
	bufs, sizes := make([][]byte, 10000), make([]int, 10000)
	if n := e.Pop(int64(6*time.Second), bufs, sizes); n != 5000 {
		t.Errorf("after 6 s %d frames left, want 5000", n)
	}
	e.Release()
	last, _ := e.NextDue()
	for e.Len() > 0 {
		last, _ = e.NextDue()
		e.Pop(last, bufs, sizes)
		e.Release()
	}
	within(t, "last frame leaves at (s)", float64(last)/1e9, 12, 1e-6)
	// A full line behind a rate drops and counts.
	for range 10001 {
		e.Offer(frame, last)
	}
	if got := e.Counters.Drops[impair.DropRate]; got != 1 {
		t.Errorf("DropRate = %d, want 1", got)
	}
}

func TestEngineReorder(t *testing.T) {
	// One in 5 frames may go at once, with 25 %: a cycle is 4 frames, then
	// on average 4 more tries: 1 frame in 8.
	var prev int
	var early int
	e := run(t, mustParse(t, "delay 10ms reorder 25% gap 5 limit 100000"), million, 10_000, func(f []byte, _ int64) {
		n := int(f[0]) | int(f[1])<<8 | int(f[2])<<16 | int(f[3])<<24
		if n < prev {
			early++
		}
		prev = max(prev, n)
	})
	within(t, "reordered share", float64(e.Counters.Reordered)/million, 0.125, 2*binomialTol(0.125, million))
	if early == 0 {
		t.Error("no frame left after a later one")
	}
}

func TestEngineFullHoldsBackOrDrops(t *testing.T) {
	frame := make([]byte, 64)
	e := impair.NewEngine(mustParse(t, "delay 1s"), 0, 1)
	for range impair.DefaultLimit {
		if !e.Offer(frame, 0) {
			t.Fatal("refused before full")
		}
	}
	if e.Offer(frame, 0) {
		t.Error("a full line without limit took a frame: the sender must be held back")
	}
	e = impair.NewEngine(mustParse(t, "delay 1s limit 10"), 0, 1)
	for range 15 {
		if !e.Offer(frame, 0) {
			t.Fatal("limit 10: a full line held the sender back instead of dropping")
		}
	}
	if got := e.Counters.Drops[impair.DropLimit]; got != 5 {
		t.Errorf("DropLimit = %d, want 5", got)
	}
}

func TestEngineSeedReplays(t *testing.T) {
	pattern := func(spec string) []byte {
		var b []byte
		e := impair.NewEngine(mustParse(t, spec), 0, 99)
		frame := make([]byte, 64)
		bufs, sizes := make([][]byte, 2), make([]int, 2)
		for i := range 10000 {
			q := e.Counters.Queued
			e.Offer(frame, int64(i))
			b = append(b, byte(e.Counters.Queued-q))
			e.Pop(int64(i), bufs, sizes)
			e.Release()
		}
		return b
	}
	a, b := pattern("loss 20% duplicate 5% seed 7"), pattern("loss 20% duplicate 5% seed 7")
	if !bytes.Equal(a, b) {
		t.Error("the same seed gave two patterns")
	}
	if c := pattern("loss 20% duplicate 5% seed 8"); bytes.Equal(a, c) {
		t.Error("seeds 7 and 8 gave the same pattern")
	}
}

func TestEngineLargeFrame(t *testing.T) {
	e := impair.NewEngine(impair.Spec{Delay: 1}, 4, 1)
	big := bytes.Repeat([]byte{0xab}, 9000)
	e.Offer(big, 0)
	bufs, sizes := make([][]byte, 1), make([]int, 1)
	if n := e.Pop(1, bufs, sizes); n != 1 || !bytes.Equal(bufs[0][4:4+sizes[0]], big) {
		t.Fatalf("a 9000-byte frame did not come out whole (n=%d)", n)
	}
}

func TestEngineAllocs(t *testing.T) {
	e := impair.NewEngine(mustParse(t, "delay 1ms 1ms distribution normal loss 1% duplicate 1% corrupt 1% rate 1gbit reorder 5%"), 16, 1)
	frame := make([]byte, 1500)
	bufs, sizes := make([][]byte, 64), make([]int, 64)
	var now int64
	allocs := testing.AllocsPerRun(1000, func() {
		for range 32 {
			e.Offer(frame, now)
		}
		now += int64(time.Millisecond)
		for e.Pop(now+int64(10*time.Millisecond), bufs, sizes) > 0 {
			e.Release()
		}
	})
	if allocs != 0 {
		t.Errorf("%.1f allocs per batch, want 0", allocs)
	}
}

func BenchmarkEngine(b *testing.B) {
	e := impair.NewEngine(mustParse(b, "delay 1ms 1ms loss 1% rate 10gbit"), 16, 1)
	frame := make([]byte, 1500)
	bufs, sizes := make([][]byte, 64), make([]int, 64)
	b.ReportAllocs()
	var now int64
	for i := 0; b.Loop(); i++ {
		e.Offer(frame, now)
		now += 1000
		if i%32 == 31 {
			for e.Pop(now, bufs, sizes) > 0 {
				e.Release()
			}
		}
	}
}
