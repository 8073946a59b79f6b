package impair_test

import (
	"errors"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/impair"
)

// noDrops is an onDrop for lines whose spec drops nothing.
func noDrops(t *testing.T) func(impair.Drop, uint64) {
	return func(d impair.Drop, n uint64) { t.Errorf("unexpected drop %d ×%d", d, n) }
}

func TestLineDelays(t *testing.T) {
	l := impair.NewLine(mustParse(t, "delay 30ms"), 4, 1, noDrops(t))
	frames := [][]byte{[]byte("one"), []byte("two")}
	start := time.Now()
	if n, err := l.PushFrames(frames); n != 2 || err != nil {
		t.Fatalf("PushFrames = %d, %v", n, err)
	}
	bufs, sizes := make([][]byte, 8), make([]int, 8)
	got := 0
	for got < 2 {
		n, err := l.Take(bufs, sizes)
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			if s := string(bufs[i][4 : 4+sizes[i]]); s != string(frames[got]) {
				t.Errorf("frame %d = %q, want %q", got, s, frames[got])
			}
			got++
		}
	}
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Errorf("frames left after %v, want >= 30ms", d)
	}
	l.Close()
	if _, err := l.Take(bufs, sizes); !errors.Is(err, impair.ErrClosed) {
		t.Errorf("Take after Close on an empty line = %v, want ErrClosed", err)
	}
	if _, err := l.PushFrames(frames); !errors.Is(err, impair.ErrClosed) {
		t.Errorf("PushFrames after Close = %v, want ErrClosed", err)
	}
}

func TestLineHoldsPusherBack(t *testing.T) {
	l := impair.NewLine(mustParse(t, "delay 1ms"), 0, 1, noDrops(t))
	frame := make([]byte, 64)
	batch := make([][]byte, impair.DefaultLimit+10)
	for i := range batch {
		batch[i] = frame
	}
	pushed := make(chan int)
	go func() {
		n, _ := l.PushFrames(batch)
		pushed <- n
	}()
	select {
	case n := <-pushed:
		t.Fatalf("a push of %d frames into a line of %d returned without a taker", n, impair.DefaultLimit)
	case <-time.After(50 * time.Millisecond):
	}
	bufs, sizes := make([][]byte, 64), make([]int, 64)
	got := 0
	for got < len(batch) {
		n, err := l.Take(bufs, sizes)
		if err != nil {
			t.Fatal(err)
		}
		got += n
	}
	if n := <-pushed; n != len(batch) {
		t.Errorf("pushed %d, want %d", n, len(batch))
	}
}

func TestLineDropsCounted(t *testing.T) {
	var lost uint64
	l := impair.NewLine(mustParse(t, "loss 50% seed 3"), 0, 1, func(d impair.Drop, n uint64) {
		if d != impair.DropLoss {
			t.Errorf("drop reason %d, want DropLoss", d)
		}
		lost += n
	})
	frames := make([][]byte, 1000)
	for i := range frames {
		frames[i] = make([]byte, 60)
	}
	l.PushFrames(frames)
	c, queued := l.Status()
	if lost == 0 || lost != c.Drops[impair.DropLoss] || uint64(queued)+lost != 1000 {
		t.Errorf("onDrop counted %d, line %d lost and %d queued of 1000", lost, c.Drops[impair.DropLoss], queued)
	}
}

func TestLineCloseDrainsAbortDiscards(t *testing.T) {
	l := impair.NewLine(mustParse(t, "delay 20ms"), 0, 1, noDrops(t))
	l.PushFrames([][]byte{{1}, {2}})
	l.Close()
	bufs, sizes := make([][]byte, 8), make([]int, 8)
	if n, err := l.Take(bufs, sizes); n != 2 || err != nil {
		t.Errorf("Take after Close = %d, %v; want the 2 queued frames", n, err)
	}
	l = impair.NewLine(mustParse(t, "delay 3600s"), 0, 1, noDrops(t))
	l.PushFrames([][]byte{{1}})
	done := make(chan error)
	go func() { _, err := l.Take(bufs, sizes); done <- err }()
	time.Sleep(10 * time.Millisecond)
	l.Abort()
	select {
	case err := <-done:
		if !errors.Is(err, impair.ErrClosed) {
			t.Errorf("Take after Abort = %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Abort did not end a Take waiting for a frame due in an hour")
	}
}

func TestLineAllocs(t *testing.T) {
	l := impair.NewLine(mustParse(t, "loss 1% duplicate 1%"), 16, 1, func(impair.Drop, uint64) {})
	bufs, sizes := make([][]byte, 32), make([]int, 32)
	for i := range bufs {
		bufs[i] = make([]byte, 16+1500)
		sizes[i] = 1500
	}
	out, outSizes := make([][]byte, 64), make([]int, 64)
	allocs := testing.AllocsPerRun(1000, func() {
		l.PushBufs(bufs, sizes, 16)
		l.Take(out, outSizes)
	})
	if allocs != 0 {
		t.Errorf("%.1f allocs per batch pushed and taken, want 0", allocs)
	}
}
