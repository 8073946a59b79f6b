package e2e

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/internal/testlog"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/l2tp"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/test/guest"
)

// testpmdRun is how long each testpmd mode forwards.
const testpmdRun = 3 * time.Second

// TestVhostUserDPDKTestpmd: a vhost-user front end written by others, DPDK
// 22.11's testpmd with its virtio-user PMD (guest memory without
// hugepages: --no-huge), drives the sidecar (queues=2) at full speed:
// txonly (frames arrive at the UDP peer), rxonly (the peer blasts, testpmd
// counts) and io (the peer's frames come back through testpmd). No
// protocol error or ring violation may be counted, both queue pairs carry
// frames, and what one side counts the other side saw.
func TestVhostUserDPDKTestpmd(t *testing.T) {
	guest.Require(t) // for E2E and root, and the machine lock: this runs flat out
	bin, err := exec.LookPath("dpdk-testpmd")
	if err != nil {
		t.Skip("dpdk-testpmd not installed (Debian: apt-get install dpdk-dev; test/install-deps.sh does)")
	}
	sock := filepath.Join(guest.SocketDir(t), "vu.sock")
	ps, pn := guest.FreeUDPPort(), guest.FreeUDPPort()
	opts := fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=%d,txsession=0x61,rxsession=0x62", ps, pn)
	sc := startSidecar(t, "--vhost-user", sock+",queues=2", "--l2tpv3", opts)
	peer := openPeer(t, fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=%d,txsession=0x62,rxsession=0x61", pn, ps))

	t.Run("txonly", func(t *testing.T) {
		before := peer.got.Load()
		st := runTestpmd(t, sc, bin, sock, "txonly", nil)
		time.Sleep(200 * time.Millisecond)
		c := sc.counters()
		sent := sessionCount(c, "tx")
		t.Logf("testpmd sent %d, sidecar sent %d, peer got %d; %s", st.tx, sent, peer.got.Load()-before, c)
		checkClean(t, c)
		if st.tx == 0 || sent < st.tx*99/100 || peer.got.Load() == before {
			t.Errorf("testpmd handed over %d frames, the sidecar sent %d, the peer got %d", st.tx, sent, peer.got.Load()-before)
		}
		checkQueues(t, c, true)
	})
	t.Run("rxonly", func(t *testing.T) {
		var blasted atomic.Uint64
		st := runTestpmd(t, sc, bin, sock, "rxonly", func(stop <-chan struct{}) { peer.blast(stop, &blasted) })
		c := sc.counters()
		t.Logf("peer blasted %d, testpmd received %d; %s", blasted.Load(), st.rx, c)
		checkClean(t, c)
		if st.rx == 0 {
			t.Error("testpmd received nothing")
		}
		checkQueues(t, c, false)
	})
	t.Run("io", func(t *testing.T) {
		before := peer.got.Load()
		var sent atomic.Uint64
		st := runTestpmd(t, sc, bin, sock, "io", func(stop <-chan struct{}) { peer.paced(stop, &sent, &peer.got) })
		time.Sleep(200 * time.Millisecond)
		back := peer.got.Load() - before
		c := sc.counters()
		t.Logf("peer sent %d, testpmd forwarded %d (dropped %d), %d came back; %s", sent.Load(), st.tx, st.txDropped, back, c)
		checkClean(t, c)
		if back == 0 || back+st.txDropped < sent.Load()*99/100 {
			t.Errorf("sent %d, back %d, testpmd dropped %d", sent.Load(), back, st.txDropped)
		}
	})
}

// testpmdStats are testpmd's accumulated forward statistics.
type testpmdStats struct{ rx, tx, txDropped uint64 }

// runTestpmd runs testpmd in one forwarding mode against the sidecar's
// socket for testpmdRun once both queue pairs started, with during running
// meanwhile (until its stop channel closes), and returns its statistics.
// It skips the test if testpmd cannot start its EAL here.
func runTestpmd(t *testing.T, sc *sidecar, bin, sock, mode string, during func(stop <-chan struct{})) testpmdStats {
	t.Helper()
	pairs := strings.Count(sc.stderr.String(), "VM queue pair started")
	cmd := exec.Command("stdbuf", "-oL", bin, "-l", "0-1", "--no-pci", "--no-huge", "-m", "512", "--no-shconf",
		"--file-prefix", fmt.Sprintf("l2tpv3e2e%d", os.Getpid()),
		"--vdev", "net_virtio_user0,path="+sock+",queues=2",
		"--", "--total-num-mbufs=16384", "--rxq=2", "--txq=2", "--forward-mode="+mode,
		"--txonly-multi-flow", "--auto-start")
	stdin, err := cmd.StdinPipe() // testpmd forwards until a line arrives here
	if err != nil {
		t.Fatal(err)
	}
	out := new(testlog.Buffer)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	for deadline := time.Now().Add(30 * time.Second); strings.Count(sc.stderr.String(), "VM queue pair started") < pairs+2; {
		select {
		case err := <-exited:
			t.Skipf("dpdk-testpmd cannot run here (%v):\n%s", err, out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("testpmd started no queue pairs within 30 s:\n%s", out.String())
		}
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		if during != nil {
			during(stop)
		}
	}()
	time.Sleep(testpmdRun)
	close(stop)
	<-done
	io.WriteString(stdin, "\n")
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		cmd.Process.Signal(syscall.SIGINT)
		<-exited
	}
	st, ok := parseTestpmd(out.String())
	if !ok {
		t.Fatalf("no statistics from testpmd:\n%s", out.String())
	}
	return st
}

// parseTestpmd reads the accumulated statistics at the end of testpmd's output.
func parseTestpmd(out string) (testpmdStats, bool) {
	i := strings.LastIndex(out, "Accumulated forward statistics")
	if i < 0 {
		return testpmdStats{}, false
	}
	field := func(name string) uint64 {
		m := regexp.MustCompile(name + `:\s+(\d+)`).FindStringSubmatch(out[i:])
		if m == nil {
			return 0
		}
		n, _ := strconv.ParseUint(m[1], 10, 64)
		return n
	}
	return testpmdStats{rx: field("RX-packets"), tx: field("TX-packets"), txDropped: field("TX-dropped")}, true
}

// sessionCount reads the sidecar's session packet count for dir ("rx", "tx").
func sessionCount(counters, dir string) uint64 {
	m := regexp.MustCompile(`\b` + dir + ` (\d+) pkts`).FindStringSubmatch(counters)
	if m == nil {
		return 0
	}
	n, _ := strconv.ParseUint(m[1], 10, 64)
	return n
}

// checkClean fails on a counted protocol error or ring violation.
func checkClean(t *testing.T, counters string) {
	t.Helper()
	for _, bad := range []string{"vm_protocol_errors", "vm_ring_violations"} {
		if !strings.Contains(counters, bad+"=0") {
			t.Errorf("%s counted: %s", bad, counters)
		}
	}
}

// checkQueues fails unless both queue pairs carried frames from the VM
// (fromVM) or to it.
func checkQueues(t *testing.T, counters string, fromVM bool) {
	t.Helper()
	from, to := queueCounts(counters)
	n := to
	if fromVM {
		n = from
	}
	if len(n) != 2 || n[0] == 0 || n[1] == 0 {
		t.Errorf("frames per queue pair (from VM %v): %v", fromVM, n)
	}
}

// udpPeer is the far end of the sidecar's session in this process.
type udpPeer struct {
	tun *l2tp.Tunnel
	got atomic.Uint64
}

// openPeer opens the peer tunnel and counts what it receives.
func openPeer(t *testing.T, opts string) *udpPeer {
	t.Helper()
	c, err := l2tp.ParseOptions(opts)
	if err != nil {
		t.Fatal(err)
	}
	p := &udpPeer{}
	if p.tun, err = l2tp.Open(c, l2tp.TunnelOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.tun.Close() })
	go func() {
		frames := make([][]byte, p.tun.BatchSize())
		for {
			n, err := p.tun.ReadFrames(frames)
			if err != nil {
				return
			}
			p.got.Add(uint64(n))
		}
	}()
	return p
}

// peerFrames builds 32 64-byte IPv4/UDP frames of 32 flows.
func (p *udpPeer) peerFrames() ([][]byte, []int, int) {
	off := p.tun.Headroom()
	bufs, sizes := make([][]byte, 32), make([]int, 32)
	for i := range bufs {
		f := make([]byte, off+64)
		e := f[off:]
		copy(e, []byte{0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00, 0x45})
		e[14+9] = 17
		copy(e[14+12:], []byte{10, 0, 0, 1, 10, 0, 0, 2})
		e[14+20], e[14+21] = byte(i), 7
		bufs[i], sizes[i] = f, 64
	}
	return bufs, sizes, off
}

// blast sends frames flat out until stop.
func (p *udpPeer) blast(stop <-chan struct{}, sent *atomic.Uint64) {
	bufs, sizes, off := p.peerFrames()
	for {
		select {
		case <-stop:
			return
		default:
		}
		if p.tun.WriteFrames(bufs, sizes, off) != nil {
			return
		}
		sent.Add(uint64(len(bufs)))
	}
}

// paced sends frames while fewer than 2048 are unanswered, until stop.
func (p *udpPeer) paced(stop <-chan struct{}, sent, back *atomic.Uint64) {
	bufs, sizes, off := p.peerFrames()
	base := back.Load()
	for {
		select {
		case <-stop:
			return
		default:
		}
		if sent.Load()-(back.Load()-base) > 2048 {
			time.Sleep(100 * time.Microsecond)
			continue
		}
		if p.tun.WriteFrames(bufs, sizes, off) != nil {
			return
		}
		sent.Add(uint64(len(bufs)))
	}
}
