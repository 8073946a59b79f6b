// Package testport hands tests UDP and TCP port numbers to put in a
// configuration before the code under test binds them.
//
// Binding port 0, reading the number and closing (the usual trick) races:
// until the caller binds it, the kernel may give that ephemeral port to any
// other socket that binds port 0, sends unbound or connects, in this process
// or in the test binaries `go test ./...` runs beside it, and two such calls
// in a row may even return the same number. So this package picks below the
// kernel's ephemeral range, where the kernel never picks, never hands out a
// number twice in one process, and checks that nobody holds the port now.
package testport

import (
	"fmt"
	"io"
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
	return take(t, "udp", addr)
}

// TCP is UDP for a TCP listener: nobody listens or is connected from it.
func TCP(t testing.TB, addr string) int {
	t.Helper()
	return take(t, "tcp", addr)
}

// take is Free that fails t on error.
func take(t testing.TB, network, addr string) int {
	t.Helper()
	p, err := Free(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Free is UDP or TCP (network "udp" or "tcp") for code without a testing.TB
// (the VM harness).
func Free(network, addr string) (int, error) {
	mu.Lock()
	defer mu.Unlock()
	if next == 0 { // each test process starts elsewhere in the range
		next = low + rand.IntN(high-low)
	}
	for range high - low {
		p := next
		next = low + (next+1-low)%(high-low)
		if probe(network, net.JoinHostPort(addr, fmt.Sprint(p))) == nil {
			return p, nil
		}
	}
	return 0, fmt.Errorf("testport: no free %s port on %s in %d-%d", network, addr, low, high-1)
}

// probe binds address on network and lets it go again.
func probe(network, address string) error {
	var c io.Closer
	var err error
	if network == "tcp" {
		c, err = net.Listen(network, address)
	} else {
		c, err = net.ListenPacket(network, address)
	}
	if err == nil {
		c.Close()
	}
	return err
}
