package l2tp

import (
	"bytes"
	"net"
	"testing"
)

// TestSessionQueueBounds: a queue holds frames up to its frame and byte
// bounds, hands them out in order and whole across the end of its buffer
// (a frame that would wrap starts over at the beginning), and frees what
// a pop handed out only at the next pop.
func TestSessionQueueBounds(t *testing.T) {
	q := newSessionQueueSized(4, 1000)
	frames := make([][]byte, 8)
	for i := range 4 {
		if !q.push(frameOf(i, 200)) {
			t.Fatalf("push %d refused", i)
		}
	}
	if q.push(frameOf(9, 10)) {
		t.Fatal("a fifth frame fit a 4-frame queue")
	}
	if n, _ := q.pop(frames[:3]); n != 3 || !bytes.Equal(frames[2], frameOf(2, 200)) {
		t.Fatalf("pop: %d frames", n)
	}
	if q.push(frameOf(9, 10)) {
		t.Fatal("room before the next pop released the frames")
	}
	if n, _ := q.pop(frames); n != 1 || !bytes.Equal(frames[0], frameOf(3, 200)) {
		t.Fatalf("second pop: %d frames", n)
	}
	// 800 bytes written, 600 freed, 200 held: 350 bytes do not fit in the
	// 200 left at the end and start over at 0, where frames 0..2 were.
	if !q.push(frameOf(5, 350)) {
		t.Fatal("350 bytes refused after the wrap")
	}
	if q.push(frameOf(6, 600)) {
		t.Fatal("600 bytes fit beside 350 and 200 held")
	}
	n, _ := q.pop(frames)
	if n != 1 || !bytes.Equal(frames[0], frameOf(5, 350)) || &frames[0][0] != &q.buf[0] {
		t.Fatalf("wrapped frame: %d frames, at buf[0] %v", n, n > 0 && &frames[0][0] == &q.buf[0])
	}
	if !q.push(frameOf(6, 400)) {
		t.Fatal("400 bytes refused with 350 held in 1000")
	}
	q.close(nil)
	if n, err := q.pop(frames); n != 1 || err != nil || !bytes.Equal(frames[0], frameOf(6, 400)) {
		t.Fatalf("pop after close: %d, %v; want the queued frame first", n, err)
	}
	if _, err := q.pop(frames); err != net.ErrClosed {
		t.Fatalf("pop of a closed empty queue: %v", err)
	}
}
