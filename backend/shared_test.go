package backend

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/internal/testlog"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/l2tp"
)

// openUDP opens a tunnel on 127.0.0.1 from sport to dport.
func openUDP(t *testing.T, sport, dport int, tx, rx uint32) *l2tp.Tunnel {
	t.Helper()
	c, err := l2tp.ParseOptions(fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=%d,txsession=%d,rxsession=%d", sport, dport, tx, rx))
	if err != nil {
		t.Fatal(err)
	}
	tun, err := l2tp.Open(c, l2tp.TunnelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tun.Close() })
	return tun
}

// freeUDPPort is a UDP port free on 127.0.0.1 a moment ago.
func freeUDPPort(t *testing.T) int {
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// Datagrams for a session no port has, arriving on a shared tunnel, are
// logged for the whole socket at most once per interval (whichever port's
// logger comes first), with their count: a burst gives one line, not one
// per port, and a steady stream one line per interval, not two.
func TestSharedTunnelDropsLoggedOnce(t *testing.T) {
	p, q := freeUDPPort(t), freeUDPPort(t)
	a, b := openUDP(t, p, q, 1, 11), openUDP(t, p, q, 2, 12)
	stranger := openUDP(t, q, p, 99, 99) // sends session 99: nobody's
	var buf testlog.Buffer
	log := testlog.Text(&buf)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const every = 100 * time.Millisecond
	go logDrops(ctx, log.With("port", "a"), a, every)
	time.Sleep(every / 2) // b's ticks fall between a's
	go logDrops(ctx, log.With("port", "b"), b, every)
	off := stranger.Headroom()
	bufs, sizes := make([][]byte, 5), make([]int, 5)
	for i := range bufs {
		bufs[i], sizes[i] = make([]byte, off+60), 60
	}
	send := func(n int) {
		if err := stranger.WriteFrames(bufs[:n], sizes[:n], off); err != nil {
			t.Fatal(err)
		}
	}
	const line = "shared tunnel dropped packets of no session"
	send(5)
	for end := time.Now().Add(3 * time.Second); !strings.Contains(buf.String(), line) && time.Now().Before(end); {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(3 * every) // nothing new to log
	if n := strings.Count(buf.String(), line); n != 1 || !strings.Contains(buf.String(), "reason=session count=5 total=5") {
		t.Fatalf("a burst: %d lines, want 1 with reason=session count=5:\n%s", n, buf.String())
	}
	start := time.Now()
	for time.Since(start) < 10*every {
		send(1)
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(2 * every)
	n := strings.Count(buf.String(), line) - 1
	if max := int(time.Since(start)/every) + 2; n > max || n < 5 {
		t.Errorf("a stream over %v: %d lines, want 5..%d (one per interval for the socket)", time.Since(start).Round(time.Millisecond), n, max)
	}
	if got := a.Stats().Snapshot().Dropped() + b.Stats().Snapshot().Dropped(); got != 0 {
		t.Errorf("the ports counted %d drops of another session", got)
	}
}
