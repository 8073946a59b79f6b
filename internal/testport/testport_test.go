package testport

import (
	"net"
	"strconv"
	"testing"
)

// TestUDPDistinctBindable: many calls in a row give distinct ports below the
// ephemeral range, each bindable at once. (Binding port 0 and closing gave
// the same number twice 4 times in 200,000 pairs here.)
func TestUDPDistinctBindable(t *testing.T) {
	seen := map[int]bool{}
	for range 2000 {
		p := UDP(t, "127.0.0.1")
		if seen[p] || p < low || p >= high {
			t.Fatalf("port %d: seen before %v, want a new one in %d-%d", p, seen[p], low, high-1)
		}
		seen[p] = true
		c, err := net.ListenPacket("udp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			t.Fatalf("bind the port given: %v", err)
		}
		c.Close()
	}
}

// TestUDPSkipsHeld: a port someone holds is not handed out.
func TestUDPSkipsHeld(t *testing.T) {
	p := UDP(t, "127.0.0.1")
	mu.Lock()
	next = p // as if the range had wrapped round to it
	mu.Unlock()
	c, err := net.ListenPacket("udp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if q := UDP(t, "127.0.0.1"); q == p {
		t.Fatalf("got port %d, which is held", q)
	}
}

// TestTCP: a TCP port given can be listened on, and one held is skipped.
func TestTCP(t *testing.T) {
	p := TCP(t, "127.0.0.1")
	l, err := net.Listen("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	if err != nil {
		t.Fatalf("listen on the port given: %v", err)
	}
	defer l.Close()
	mu.Lock()
	next = p
	mu.Unlock()
	if q := TCP(t, "127.0.0.1"); q == p {
		t.Fatalf("got port %d, which is held", q)
	}
}
