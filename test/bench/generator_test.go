package main

import (
	"net"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestSendRecvMmsg sends a batch over loopback and receives it whole.
func TestSendRecvMmsg(t *testing.T) {
	ports, err := freePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	rx, err := udpSocket(ports[0], 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(rx)
	tx, err := udpSocket(ports[1], ports[0], 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(tx)
	out := newMsgBatch(8, 200)
	for i := range 8 {
		buildL2TP(out.bufs[i], 5, 60+i, uint64(i))
		out.setLen(i, 8+60+i)
	}
	if n, err := sendmmsg(tx, out.hdrs); n != 8 || err != nil {
		t.Fatalf("sendmmsg = %d, %v", n, err)
	}
	in := newMsgBatch(16, 2048)
	got := 0
	for got < 8 {
		n, err := recvmmsg(rx, in.hdrs)
		if err != nil {
			t.Fatalf("recvmmsg: %v", err)
		}
		for i := range n {
			frame, ok := parseL2TP(in.received(i), 5)
			seq, ours := parseFrame(frame)
			if !ok || !ours || seq != uint64(got) || len(frame) != 60+got {
				t.Fatalf("message %d: ok %v ours %v seq %d len %d", got, ok, ours, seq, len(frame))
			}
			got++
		}
	}
}

// TestStreamWriterReader runs the stream generators against each other
// over a socketpair: every frame arrives, in order, none bad.
func TestStreamWriterReader(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	conns := make([]net.Conn, 2)
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "sp")
		if conns[i], err = net.FileConn(f); err != nil {
			t.Fatal(err)
		}
		f.Close()
		defer conns[i].Close()
	}
	w := newStreamWriter(conns[0], 1500, 10000) // 6 frames per write: frames split across reads
	rd := newStreamReader(conns[1], 1500)
	rdone, wdone := goRun(rd.run), goRun(w.run)
	time.Sleep(100 * time.Millisecond)
	w.stop()
	if err := <-wdone; err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(2 * time.Second); rd.delivered() < w.sent() && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	rd.stop()
	if err := <-rdone; err != nil {
		t.Fatal(err)
	}
	rep := rd.report()
	if w.sent() == 0 || rd.delivered() != w.sent() || rep != (sinkReport{}) {
		t.Fatalf("sent %d delivered %d report %+v", w.sent(), rd.delivered(), rep)
	}
}

// TestLimitTrial runs a short loopback trial, flat out and paced, through
// the same code as the benchmark.
func TestLimitTrial(t *testing.T) {
	r := &runner{batch: 32, sinkRcvbuf: 4 << 20, drainMax: time.Second, dir: t.TempDir()}
	for _, rate := range []float64{0, 50000} {
		res := r.run(trialSpec{path: pathLimit, dir: dirLoopback, size: 64, rate: rate,
			warm: 20 * time.Millisecond, window: 200 * time.Millisecond})
		if res.Err != "" || res.Delivered == 0 || res.Sink.Bad != 0 || res.Sink.Late != 0 {
			t.Fatalf("rate %v: %+v", rate, res)
		}
		// Under load the pacer forfeits credit, so only the upper bound is firm.
		if rate > 0 && res.OfferedMpps > 1.1*rate/1e6 {
			t.Errorf("paced at %v pps, offered %.3f Mpps", rate, res.OfferedMpps)
		}
	}
}

// TestParseCounters reads a sidecar counters line.
func TestParseCounters(t *testing.T) {
	line := `time=2025-01-01T00:00:00Z level=INFO msg=counters port=port0 session=1 ` +
		`l2tpv3="rx 10 pkts 1480 B, tx 9 pkts 1332 B, drops cookie=1 kernel=3, tx_stalls 2 (1ms)" ` +
		`vm_connections=1 vm_bad_length=0 vm_stalls=4 vm_stall_ms=12`
	m := parseCounters(line)
	want := map[string]uint64{"rx_packets": 10, "tx_packets": 9, "drop_cookie": 1, "drop_kernel": 3,
		"tx_stalls": 2, "vm_connections": 1, "vm_bad_length": 0, "vm_stalls": 4, "vm_stall_ms": 12}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %d, want %d (all: %v)", k, m[k], v, m)
		}
	}
	if n := (dutReport{Counters: m}).internalDrops(); n != 1 {
		t.Errorf("internalDrops = %d, want 1 (kernel drops are counted apart)", n)
	}
}
