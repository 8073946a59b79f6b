package l2tp

import (
	"bytes"
	"net"
	"testing"
	"time"
)

// TestSessionQueueBounds: a queue holds frames up to its frame and byte
// bounds, hands them out in order and whole across the end of its buffer
// (a frame that would wrap starts over at the beginning), and frees what
// a pop handed out only at the next pop.
func TestSessionQueueBounds(t *testing.T) {
	q := newSessionQueueSized(4, 1000)
	frames := make([][]byte, 8)
	for i := range 4 {
		if !q.push(frameOf(i, 200), 0) {
			t.Fatalf("push %d refused", i)
		}
	}
	if q.push(frameOf(9, 10), 0) {
		t.Fatal("a fifth frame fit a 4-frame queue")
	}
	if n, _ := q.pop(frames[:3], nil, nil); n != 3 || !bytes.Equal(frames[2], frameOf(2, 200)) {
		t.Fatalf("pop: %d frames", n)
	}
	if q.push(frameOf(9, 10), 0) {
		t.Fatal("room before the next pop released the frames")
	}
	if n, _ := q.pop(frames, nil, nil); n != 1 || !bytes.Equal(frames[0], frameOf(3, 200)) {
		t.Fatalf("second pop: %d frames", n)
	}
	// 800 bytes written, 600 freed, 200 held: 350 bytes do not fit in the
	// 200 left at the end and start over at 0, where frames 0..2 were.
	if !q.push(frameOf(5, 350), 0) {
		t.Fatal("350 bytes refused after the wrap")
	}
	if q.push(frameOf(6, 600), 0) {
		t.Fatal("600 bytes fit beside 350 and 200 held")
	}
	n, _ := q.pop(frames, nil, nil)
	if n != 1 || !bytes.Equal(frames[0], frameOf(5, 350)) || &frames[0][0] != &q.buf[0] {
		t.Fatalf("wrapped frame: %d frames, at buf[0] %v", n, n > 0 && &frames[0][0] == &q.buf[0])
	}
	if !q.push(frameOf(6, 400), 0) {
		t.Fatal("400 bytes refused with 350 held in 1000")
	}
	q.close(nil)
	if n, err := q.pop(frames, nil, nil); n != 1 || err != nil || !bytes.Equal(frames[0], frameOf(6, 400)) {
		t.Fatalf("pop after close: %d, %v; want the queued frame first", n, err)
	}
	if _, err := q.pop(frames, nil, nil); err != net.ErrClosed {
		t.Fatalf("pop of a closed empty queue: %v", err)
	}
}

// TestSessionQueueConcurrent: a producer and a consumer goroutine move
// 200000 frames of 60..159 bytes through a queue: every frame arrives
// whole and in order, and the producer, refused only while the queue is
// full, never waits a second (the empty queue's restart at the beginning
// of its buffer keeps the byte count right).
func TestSessionQueueConcurrent(t *testing.T) {
	q := newSessionQueueSized(1024, 1<<20)
	const total = 200000
	done := make(chan int)
	go func() {
		frames := make([][]byte, 64)
		got := 0
		for got < total {
			n, _ := q.pop(frames, nil, nil)
			for i := range n {
				if len(frames[i]) != 60+got%100 || frames[i][0] != byte(got) {
					t.Errorf("frame %d: %d bytes, first %d", got, len(frames[i]), frames[i][0])
				}
				got++
			}
		}
		done <- got
	}()
	f := make([]byte, 160)
	last := time.Now()
	for sent := 0; sent < total; {
		f[0] = byte(sent)
		if !q.push(f[:60+sent%100], 0) {
			q.signalReady()
			if time.Since(last) > time.Second {
				t.Fatalf("refused for 1 s at frame %d: queued %d", sent, q.queued())
			}
			continue
		}
		sent++
		last = time.Now()
		if sent%64 == 0 {
			q.signalReady()
		}
	}
	q.signalReady()
	if got := <-done; got != total {
		t.Fatalf("%d of %d", got, total)
	}
}
