package load

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/l2tp"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/vhostuser/vhosttest"
)

// memoryQueuesEnv lists the queue-pair counts TestMemoryPerQueue measures,
// the smallest first (default "1,4,16").
const memoryQueuesEnv = "L2TPV3_MEMORY_QUEUES"

// queueRun is one daemon with one vhost-user port of n queue pairs,
// sampled listening, with the guest's rings started, and after traffic.
type queueRun struct {
	n                          int
	listening, connected, used queueSample
	toNet, toVM                uint64 // frames carried each way
	pairsRX                    int    // pairs that received frames
}

// queueSample is memorySample with VmRSS split: RssAnon is the daemon's
// own memory, RssShmem the guest memory (the test's memfd) it touched.
type queueSample struct {
	memorySample
	anon, shmem int // KiB
}

// TestMemoryPerQueue measures what a vhost-user queue pair costs: the real
// binary with one --vhost-user port of 1, 4 and 16 queue pairs, driven by
// the in-process vhosttest guest (256-entry rings, 2 KiB buffers), every
// pair sending 1500-byte frames to a Go L2TPv3 peer and the peer sending
// frames of many flows back, which the daemon steers over the pairs. Per
// pair is (RSS(N) − RSS(1)) / (N − 1), for VmRSS and for RssAnon (the
// daemon's own pages; VmRSS also holds the guest pages it touched).
func TestMemoryPerQueue(t *testing.T) {
	if !soak() {
		t.Skip("the memory test runs with " + soakEnv + "=1")
	}
	holdMachine(t)
	counts := envCounts(t, memoryQueuesEnv, []int{1, 4, 16}, 16)
	frames := uint64(envInt(t, memoryFramesEnv, 20000))
	bin := buildDaemon(t)
	runs := measureEach(t, "queues", counts, func(t *testing.T, n int) queueRun {
		return measureQueues(t, bin, n, frames)
	})
	if runs == nil {
		return
	}
	t.Log("\n" + queueTable(runs))
	base, last := runs[0], runs[len(runs)-1]
	if per := perUnitMiB(base.n, base.used.rss, last.n, last.used.rss); per > 16 {
		t.Errorf("%.1f MiB RSS per queue pair after traffic: over issue 5's 16 MiB per port", per)
	}
}

// measureQueues runs the daemon with one port of n queue pairs and samples
// it listening, once the guest started its rings, and after every pair
// sent frames frames and the VM received as many in all.
func measureQueues(t *testing.T, bin string, n int, frames uint64) queueRun {
	run := queueRun{n: n}
	dir := sockDir(t)
	metrics := freeTCPAddr(t)
	sock := filepath.Join(dir, "vm.sock")
	side, peerCfg, _ := udpPair(t, 0x4000, 0x4001, "", "")
	conf := filepath.Join(dir, "l2tpv3-netdev.toml")
	cfg := fmt.Sprintf("metrics = %q\nlog-level = \"warn\"\n\n[[port]]\nname = \"vm\"\nvhost-user = \"%s,queues=%d\"\nl2tpv3 = %q\n",
		metrics, sock, n, side)
	if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	pid := startDaemon(t, bin, conf)
	if !waitFor(20*time.Second, func() bool { _, err := os.Stat(sock); _, merr := scrape(metrics); return err == nil && merr == nil }) {
		t.Fatalf("queues=%d: the daemon did not listen on %s and %s", n, sock, metrics)
	}
	time.Sleep(time.Second)
	run.listening = sampleQueues(t, pid, metrics)

	fe, err := vhosttest.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	g, err := vhosttest.NewGuest(fe, vhosttest.GuestOptions{Pairs: n})
	if err != nil {
		fe.Close()
		t.Fatalf("queues=%d: %v", n, err)
	}
	defer g.Close()
	time.Sleep(time.Second)
	run.connected = sampleQueues(t, pid, metrics)

	peer := openPeer(t, peerCfg)
	var toNet, toVM, netSent, peerSent atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	go countPeer(peer, &toNet) // the peer counts what the pairs send
	rxByPair := make([]atomic.Uint64, n)
	for i, p := range g.Pairs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			drivePair(p, uint32(i), frames, stop, &netSent, &toNet, &rxByPair[i], &toVM)
		}()
	}
	wg.Add(1)
	go func() { // the peer sends flows 0..63 back, at most memoryWindow in flight
		defer wg.Done()
		peerToVM(t, peer, frames, &peerSent, &toVM, stop)
	}()
	done := waitFor(2*time.Minute, func() bool {
		return toNet.Load() >= uint64(n)*frames && toVM.Load() >= frames
	})
	close(stop)
	wg.Wait()
	if !done {
		t.Fatalf("queues=%d: %d of %d frames reached the peer, %d of %d the VM (peer sent %d)",
			n, toNet.Load(), uint64(n)*frames, toVM.Load(), frames, peerSent.Load())
	}
	time.Sleep(time.Second)
	run.used = sampleQueues(t, pid, metrics)
	run.toNet, run.toVM = toNet.Load(), toVM.Load()
	for i := range rxByPair {
		if rxByPair[i].Load() > 0 {
			run.pairsRX++
		}
	}
	t.Logf("queues=%d: %d frames to the peer, %d to the VM over %d pairs; RSS %.1f → %.1f → %.1f MiB (anon %.1f, guest pages %.1f)",
		n, run.toNet, run.toVM, run.pairsRX, mib(run.listening.rss), mib(run.connected.rss), mib(run.used.rss),
		mib(run.used.anon), mib(run.used.shmem))
	return run
}

// drivePair is one queue pair's guest: it sends frames 1500-byte frames of
// stream id, while all pairs together have at most memoryWindow frames not
// yet at the peer (sent, got), and takes whatever the daemon delivers,
// until stop.
func drivePair(p *vhosttest.QueuePair, id uint32, frames uint64, stop <-chan struct{}, sent, got, rx, rxAll *atomic.Uint64) {
	var seq uint64
	fill := func(f []byte) int {
		putFrame(f[:1500], kindGood, id, seq)
		seq++
		return 1500
	}
	count := func([]byte) { rx.Add(1); rxAll.Add(1) }
	for {
		select {
		case <-stop:
			return
		default:
		}
		k := 0
		if room := int64(memoryWindow) - int64(sent.Load()-got.Load()); seq < frames && room >= 16 {
			k = p.Send(int(min(16, frames-seq)), fill)
			sent.Add(uint64(k))
		}
		if p.Receive(count) == 0 && k == 0 {
			p.WaitRX(time.Millisecond)
		}
	}
}

// peerToVM sends at least frames 1500-byte frames of 64 flows (the source
// MAC differs, so the daemon steers them over the pairs) with at most
// memoryWindow not yet received by the VM, until stop.
func peerToVM(t *testing.T, peer *l2tp.Tunnel, frames uint64, sent, got *atomic.Uint64, stop <-chan struct{}) {
	b := newFrameBatch(64, peer.Headroom(), 1500)
	for seq := uint64(0); sent.Load() < frames; {
		select {
		case <-stop:
			return
		default:
		}
		if sent.Load()-got.Load() > memoryWindow-64 {
			time.Sleep(100 * time.Microsecond)
			continue
		}
		for i := range b.bufs {
			f := b.bufs[i][b.off:]
			putFrame(f[:1500], kindGood, uint32(i), seq)
			f[11] = byte(i) // flow i
		}
		if err := peer.WriteFrames(b.bufs, b.sizes, b.off); err != nil {
			t.Errorf("peer send: %v", err)
			return
		}
		seq++
		sent.Add(uint64(len(b.bufs)))
	}
}

// sampleQueues is sampleMemory plus RssAnon and RssShmem.
func sampleQueues(t *testing.T, pid int, metrics string) queueSample {
	t.Helper()
	s := queueSample{memorySample: sampleMemory(t, pid, metrics)}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	s.anon, s.shmem = statusKiB(st, "RssAnon"), statusKiB(st, "RssShmem")
	return s
}

// queueTable renders the runs as the README's table, then per queue pair
// against the first run.
func queueTable(runs []queueRun) string {
	var b strings.Builder
	fmt.Fprintf(&b, "| queue pairs | RSS listening | RSS rings started | RSS after traffic | of which own (RssAnon) | of which guest pages (RssShmem) | Go heap in use | frames to peer / to VM (pairs receiving) |\n")
	fmt.Fprintf(&b, "|---|---|---|---|---|---|---|---|\n")
	for _, r := range runs {
		fmt.Fprintf(&b, "| %d | %.1f MiB | %.1f MiB | %.1f MiB | %.1f MiB | %.1f MiB | %.1f MiB | %.2f M / %.2f M (%d) |\n", r.n,
			mib(r.listening.rss), mib(r.connected.rss), mib(r.used.rss), mib(r.used.anon), mib(r.used.shmem),
			mib(r.used.heapInuse), float64(r.toNet)/1e6, float64(r.toVM)/1e6, r.pairsRX)
	}
	base := runs[0]
	for _, r := range runs[1:] {
		d := float64(r.n - base.n)
		per := func(a, b int) string { return fmt.Sprintf("%.2f MiB", mib(a-b)/d) }
		fmt.Fprintf(&b, "| per pair (%d vs %d) | %s | %s | %s | %s | %s | %s | |\n", r.n, base.n,
			per(r.listening.rss, base.listening.rss), per(r.connected.rss, base.connected.rss),
			per(r.used.rss, base.used.rss), per(r.used.anon, base.used.anon), per(r.used.shmem, base.used.shmem),
			per(r.used.heapInuse, base.used.heapInuse))
	}
	return b.String()
}
