package load

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/l2tp"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/vhostuser/vhosttest"
	"golang.org/x/sys/unix"
)

// faultFrames is how many frames the bystander port carries each way: enough to be still
// flowing when the victim faults, even under the race detector.
const faultFrames = 60000

// TestGuestMemoryFaultDaemon runs the real daemon with two vhost-user ports. The front end
// of one truncates its guest memory (its memfd, to 0 bytes) and the daemon then writes a
// frame from the peer into it: the daemon must survive, that connection end with the fault
// counted once (l2tpv3_netdev_frontend_memory_faults_total) and logged once, the port take
// the next front end, and the other port, carrying frames both ways meanwhile, lose none.
func TestGuestMemoryFaultDaemon(t *testing.T) {
	bin := buildDaemon(t)
	dir := sockDir(t)
	metrics := freeTCPAddr(t)
	victimSide, victimPeer, _ := udpPair(t, 0x5000, 0x5001, "", "")
	bySide, byPeer, _ := udpPair(t, 0x5002, 0x5003, "", "")
	victimSock, bySock := filepath.Join(dir, "victim.sock"), filepath.Join(dir, "by.sock")
	conf := filepath.Join(dir, "l2tpv3-netdev.toml")
	cfg := fmt.Sprintf("metrics = %q\nlog-level = \"info\"\n\n"+ // info: connections and pairs in the log a failure prints
		"[[port]]\nname = \"victim\"\nvhost-user = %q\nl2tpv3 = %q\n\n"+
		"[[port]]\nname = \"bystander\"\nvhost-user = %q\nl2tpv3 = %q\n",
		metrics, victimSock, victimSide, bySock, bySide)
	if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	logs := new(logSink)
	pid := runDaemon(t, logs, bin, "--config", conf)
	if !waitFor(20*time.Second, func() bool {
		_, e1 := os.Stat(victimSock)
		_, e2 := os.Stat(bySock)
		_, e3 := scrape(metrics)
		return e1 == nil && e2 == nil && e3 == nil
	}) {
		t.Fatalf("the daemon did not listen:\n%s", logs)
	}

	// The bystander carries frames both ways throughout, once a frame each way showed its
	// queue pair attached (frames from the peer before that are counted vm_down).
	by := connect(t, bySock)
	defer by.Close() // also keeps its front end reachable: the workers hold only by.Pairs[0], and a collected net.UnixConn closes the connection
	byTun := openPeer(t, byPeer)
	var toNet, toVM, netSent, peerSent, rx atomic.Uint64
	go countPeer(byTun, &toNet)
	oneEachWay(t, by, byTun, &toNet)
	quiet(by.Pairs[0], 300*time.Millisecond)
	base := toNet.Load()
	netSent.Store(base)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); drivePair(by.Pairs[0], 0, faultFrames, stop, &netSent, &toNet, &rx, &toVM) }()
	go func() { defer wg.Done(); peerToVM(t, byTun, faultFrames, &peerSent, &toVM, stop) }()
	defer func() { close(stop); wg.Wait() }()
	if !waitFor(30*time.Second, func() bool { return toNet.Load() >= 1000 && toVM.Load() >= 1000 }) {
		t.Fatalf("bystander: %d frames to the peer, %d to the VM", toNet.Load(), toVM.Load())
	}

	// The victim moves a frame each way, shrinks its memory, and the peer sends it one more.
	victim := connect(t, victimSock)
	victimTun := openPeer(t, victimPeer)
	var victimGot atomic.Uint64
	go countPeer(victimTun, &victimGot)
	oneEachWay(t, victim, victimTun, &victimGot)
	if err := unix.Ftruncate(victim.Mem.FD, 0); err != nil {
		t.Fatal(err)
	}
	atFault := toNet.Load()
	if atFault >= faultFrames {
		t.Fatal("the bystander finished before the fault: raise faultFrames")
	}
	b := newFrameBatch(1, victimTun.Headroom(), 100)
	if err := b.sendSeq(victimTun, 9, 1, 1); err != nil {
		t.Fatal(err)
	}
	var m map[string]float64
	dead := false
	if !waitFor(10*time.Second, func() bool {
		m, _ = scrape(metrics)
		dead = syscall.Kill(pid, 0) != nil
		return dead || m["l2tpv3_netdev_frontend_memory_faults_total"] == 1
	}) || dead {
		t.Fatalf("daemon dead: %v; memory faults %v, want 1", dead, m["l2tpv3_netdev_frontend_memory_faults_total"])
	}
	victim.Close()

	// The port takes the next front end (QEMU reconnecting) and moves frames again.
	again := connect(t, victimSock)
	defer again.Close()
	oneEachWay(t, again, victimTun, &victimGot)

	// The bystander finishes, having lost nothing.
	if !waitFor(60*time.Second, func() bool {
		return toNet.Load() >= faultFrames && toVM.Load() >= peerSent.Load() && peerSent.Load() >= faultFrames
	}) {
		t.Fatalf("bystander: %d of %d frames to the peer, %d of %d to the VM", toNet.Load(), netSent.Load(), toVM.Load(), peerSent.Load())
	}
	if toNet.Load() != netSent.Load() || toVM.Load() != peerSent.Load() {
		t.Errorf("bystander: guest sent %d, peer got %d; peer sent %d, guest got %d", netSent.Load(), toNet.Load(), peerSent.Load(), toVM.Load())
	}
	if n := strings.Count(logs.String(), "guest memory fault"); n != 1 {
		t.Errorf("the fault logged %d times, want once:\n%s", n, logs)
	}
	m, _ = scrape(metrics)
	t.Logf("daemon alive; memory faults %v, protocol errors %v, ring violations %v; bystander: %d frames each way (%d of them after the fault), 0 lost",
		m["l2tpv3_netdev_frontend_memory_faults_total"], m["l2tpv3_netdev_frontend_protocol_errors_total"],
		m["l2tpv3_netdev_frontend_ring_violations_total"], min(toNet.Load()-base, toVM.Load()), toNet.Load()-atFault)
}

// connect is a vhosttest guest with one queue pair on the vhost-user socket at path.
func connect(t *testing.T, path string) *vhosttest.Guest {
	t.Helper()
	fe, err := vhosttest.Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	g, err := vhosttest.NewGuest(fe, vhosttest.GuestOptions{})
	if err != nil {
		fe.Close()
		t.Fatal(err)
	}
	return g
}

// oneEachWay sends a frame from the guest to the peer and one from the peer into the
// guest, and waits for both.
func oneEachWay(t *testing.T, g *vhosttest.Guest, tun *l2tp.Tunnel, peerGot *atomic.Uint64) {
	t.Helper()
	want := peerGot.Load() + 1
	if !waitFor(10*time.Second, func() bool {
		if g.Pairs[0].Send(1, func(f []byte) int { putFrame(f[:100], kindGood, 8, 0); return 100 }) == 0 {
			return false
		}
		return waitFor(time.Second, func() bool { return peerGot.Load() >= want })
	}) {
		t.Fatal("the guest's frame did not reach the peer")
	}
	b := newFrameBatch(1, tun.Headroom(), 100)
	got := 0
	if !waitFor(10*time.Second, func() bool {
		if err := b.sendSeq(tun, 8, 0, 1); err != nil {
			t.Fatal(err)
		}
		return waitFor(time.Second, func() bool {
			got += g.Pairs[0].Receive(func([]byte) {})
			return got > 0
		})
	}) {
		t.Fatal("the peer's frame did not reach the guest")
	}
}

// quiet discards what p receives until nothing came for d.
func quiet(p *vhosttest.QueuePair, d time.Duration) {
	for last := time.Now(); time.Since(last) < d; time.Sleep(time.Millisecond) {
		if p.Receive(func([]byte) {}) > 0 {
			last = time.Now()
		}
	}
}
