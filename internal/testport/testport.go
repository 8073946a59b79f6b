// Package testport hands tests UDP port numbers to put in a configuration
// before the code under test binds them.
//
// Binding port 0, reading the number and closing (the usual trick) races:
// until the caller binds it, the kernel may give that ephemeral port to any
// other socket that binds port 0 or sends unbound, in this process or in the
// test binaries `go test ./...` runs beside it, and two such calls in a row
// may even return the same number. So UDP picks below the kernel's ephemeral
// range, where the kernel never picks, never hands out a number twice in one
// process, and checks that nobody holds the port right now.
package testport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
)

// Ports below the ephemeral range (ip_local_port_range, 32768 by default)
// and above the well-known ones.
const (
	low  = 10000
	high = 32768
)

var (
	mu   sync.Mutex // guards next
	next int        // the next number to try; 0 until the first call
)

// UDP returns a UDP port that nobody holds on addr (a loopback address) and
// that this process was not given before; it fails t when none is left.
func UDP(t testing.TB, addr string) int {
	t.Helper()
	p, err := Free(addr)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Free is UDP for code without a testing.TB (the VM harness).
func Free(addr string) (int, error) {
	mu.Lock()
	defer mu.Unlock()
	if next == 0 { // each test process starts elsewhere in the range
		next = low + rand.IntN(high-low)
	}
	for range high - low {
		p := next
		next = low + (next+1-low)%(high-low)
		c, err := net.ListenPacket("udp", net.JoinHostPort(addr, fmt.Sprint(p)))
		if err == nil {
			c.Close()
			return p, nil
		}
	}
	return 0, fmt.Errorf("testport: no free UDP port on %s in %d-%d", addr, low, high-1)
}
