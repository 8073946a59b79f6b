package backend

import (
	"encoding/binary"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/frontend"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/impair"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/internal/testlog"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/l2tp"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/pump"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/vhostuser/vhosttest"
)

// vhostRig is a whole vhost-user port in this process: a Port listening on
// a vhost-user socket with its L2TPv3/UDP session on loopback, an in-process
// guest (vhosttest.Guest) driving its queue pairs, and a peer tunnel facing
// the session.
type vhostRig struct {
	port    *Port
	g       *vhosttest.Guest
	peer    *l2tp.Tunnel
	peerGot atomic.Int64 // frames the peer received, counted by its one reader
}

// newVhostRig starts a port with the given queue pairs and connects a guest
// using all of them.
func newVhostRig(tb testing.TB, queues int) *vhostRig {
	tb.Helper()
	p0, p1 := twoUDPPorts(tb)
	opts := "src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=%d,txsession=%d,rxsession=%d"
	mine, err := l2tp.ParseOptions(fmt.Sprintf(opts, p0, p1, 1, 2))
	if err != nil {
		tb.Fatal(err)
	}
	theirs, err := l2tp.ParseOptions(fmt.Sprintf(opts, p1, p0, 2, 1))
	if err != nil {
		tb.Fatal(err)
	}
	sock := filepath.Join(tb.TempDir(), "vu.sock")
	cfg := PortConfig{Name: "bench", L2TP: mine, Batch: 64,
		VhostUser: &frontend.VhostUserAddr{Path: sock, Server: true, Queues: queues, MTU: 1500}}
	r := &vhostRig{}
	if r.port, err = OpenPort(cfg, testlog.Discard()); err != nil {
		tb.Fatal(err)
	}
	r.port.Start()
	tb.Cleanup(func() { r.port.Close() })
	if r.peer, err = l2tp.Open(theirs, l2tp.TunnelOptions{BatchSize: 64}); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { r.peer.Close() })
	go r.readPeer()
	fe, err := vhosttest.Dial(sock)
	if err != nil {
		tb.Fatal(err)
	}
	if r.g, err = vhosttest.NewGuest(fe, vhosttest.GuestOptions{Pairs: queues}); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(r.g.Close)
	for i := 0; i < 2000; i++ {
		if r.port.pump.Attached() == queues {
			return r
		}
		time.Sleep(time.Millisecond)
	}
	tb.Fatalf("%d queue pairs never attached", queues)
	return nil
}

// fillFlow writes an Ethernet/IPv4/UDP frame of size bytes of flow into b.
func fillFlow(b []byte, size, flow int) int {
	clear(b[:42])
	binary.BigEndian.PutUint16(b[12:], 0x0800)
	ip := b[14:]
	ip[0], ip[9] = 0x45, 17
	binary.BigEndian.PutUint32(ip[12:], 0x0a000001)
	binary.BigEndian.PutUint32(ip[16:], 0x0a000002)
	binary.BigEndian.PutUint16(ip[20:], uint16(1000+flow))
	return size
}

// window bounds the frames in flight per queue pair, so that loopback UDP
// never overflows a socket buffer and the benchmarks measure without loss.
const window = 1024

// readPeer counts what the peer receives until it is closed.
func (r *vhostRig) readPeer() {
	frames := make([][]byte, 64)
	for {
		k, err := r.peer.ReadFrames(frames)
		if err != nil {
			return
		}
		r.peerGot.Add(int64(k))
	}
}

// encap moves n frames of size bytes from the guest's TX rings (each pair
// its own goroutine and flow) through the port to the peer; it returns
// how many arrived.
func (r *vhostRig) encap(n, size int) int {
	base := r.peerGot.Load()
	inFlight := func(sent int) int { return sent - int(r.peerGot.Load()-base)/len(r.g.Pairs) }
	per := n / len(r.g.Pairs)
	var wg sync.WaitGroup
	for i, p := range r.g.Pairs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fill := func(b []byte) int { return fillFlow(b, size, i) }
			for sent := 0; sent < per; {
				if inFlight(sent) >= window {
					time.Sleep(20 * time.Microsecond) // let the peer catch up; never spin
					continue
				}
				k := p.Send(min(32, per-sent), fill)
				if k == 0 {
					p.WaitTX(time.Millisecond)
				}
				sent += k
			}
		}()
	}
	wg.Wait()
	return waitCount(&r.peerGot, base, per*len(r.g.Pairs))
}

// decap sends n frames of size bytes (16 flows) from the peer through the
// port into the guest's RX rings, each pair read by its own goroutine; it
// returns how many arrived.
func (r *vhostRig) decap(n, size int) int {
	var got atomic.Int64
	var wg sync.WaitGroup
	done := make(chan struct{})
	for _, p := range r.g.Pairs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			count := func([]byte) { got.Add(1) }
			for {
				if p.Receive(count) == 0 {
					select {
					case <-done:
						return
					default:
					}
					p.WaitRX(time.Millisecond)
				}
			}
		}()
	}
	off := r.peer.Headroom()
	bufs, sizes := make([][]byte, 32), make([]int, 32)
	for i := range bufs {
		bufs[i] = make([]byte, off+size)
		sizes[i] = fillFlow(bufs[i][off:], size, i%16)
	}
	limit := window * len(r.g.Pairs)
	for sent := 0; sent < n; {
		if sent-int(got.Load()) >= limit {
			time.Sleep(20 * time.Microsecond)
			continue
		}
		k := min(32, n-sent)
		if err := r.peer.WriteFrames(bufs[:k], sizes[:k], off); err != nil {
			break
		}
		sent += k
	}
	delivered := waitCount(&got, 0, n)
	close(done)
	wg.Wait()
	return delivered
}

// waitCount waits until c has moved want past base or stops moving for a
// second, and returns how far it moved.
func waitCount(c *atomic.Int64, base int64, want int) int {
	last, since := c.Load()-base, time.Now()
	for int(last) < want && time.Since(since) < time.Second {
		time.Sleep(100 * time.Microsecond)
		if v := c.Load() - base; v != last {
			last, since = v, time.Now()
		}
	}
	return int(last)
}

// benchVhost runs one direction at one size over queues pairs, through
// the impairments spec names ("": none).
func benchVhost(b *testing.B, queues, size int, encap bool, spec string) {
	r := newVhostRig(b, queues)
	if spec != "" {
		s, err := impair.Parse(spec)
		if err != nil {
			b.Fatal(err)
		}
		r.port.pump.SetWire(pump.ToVM, pump.WireState{Spec: s})
		r.port.pump.SetWire(pump.ToNetwork, pump.WireState{Spec: s})
	}
	move := r.decap
	if encap {
		move = r.encap
	}
	move(1000, size) // warm up: attach, fault in the rings
	b.ReportAllocs()
	b.SetBytes(int64(size))
	b.ResetTimer()
	start := time.Now()
	got := move(b.N, size)
	el := time.Since(start)
	b.StopTimer()
	if want := b.N / queues * queues; got < want {
		b.Fatalf("%d of %d frames arrived", got, want)
	}
	b.ReportMetric(float64(got)/el.Seconds()/1e6, "Mpps")
}

// BenchmarkVhostUser moves frames guest → vhost-user → pump → L2TPv3/UDP
// (encap) and back (decap) through a real port in this process, with one
// and two queue pairs (the numbers behind the multiqueue decision in
// senders.go), and with one pair through an impairment line that changes
// nothing ("seed 1": the cost of the line itself).
func BenchmarkVhostUser(b *testing.B) {
	for _, dir := range []string{"encap", "decap"} {
		for _, size := range []int{64, 1500} {
			for _, q := range []int{1, 2} {
				b.Run(fmt.Sprintf("%s/%dB/q%d", dir, size, q), func(b *testing.B) {
					benchVhost(b, q, size, dir == "encap", "")
				})
			}
			b.Run(fmt.Sprintf("%s/%dB/q1/impaired", dir, size), func(b *testing.B) {
				benchVhost(b, 1, size, dir == "encap", "seed 1")
			})
		}
	}
}

// TestVhostUserPortBothQueues moves frames both ways through a real port
// with two queue pairs: every frame arrives, and both pairs carry frames
// in both directions.
func TestVhostUserPortBothQueues(t *testing.T) {
	r := newVhostRig(t, 2)
	if got := r.encap(2000, 200); got != 2000 {
		t.Fatalf("encap: %d of 2000", got)
	}
	if got := r.decap(2000, 200); got != 2000 {
		t.Fatalf("decap: %d of 2000", got)
	}
	st := r.port.Status().FrontEnd
	if len(st.Queues) != 2 {
		t.Fatalf("status has %d queues", len(st.Queues))
	}
	for i, q := range st.Queues {
		if q.FromVM == 0 || q.ToVM == 0 {
			t.Errorf("queue pair %d carried %+v", i, q)
		}
	}
	t.Logf("%s: %s", st, st.QueueCounts())
}
