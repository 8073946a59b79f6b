package load

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/backend"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/l2tp"
)

// Environment of the soak: L2TPV3_SOAK=1 runs it; the duration, sample
// interval and number of ports may be changed.
const (
	soakDurationEnv = "L2TPV3_SOAK_DURATION" // default 10m
	soakPortsEnv    = "L2TPV3_SOAK_PORTS"    // default 64
)

// soakWindow bounds the VM → peer frames in flight per port: the peer's
// socket never overflows, so that direction must arrive whole (and its
// equal-size frames leave the port as UDP GSO runs). Peer → VM runs flat
// out, and every frame missing there must be one the port's socket dropped.
const soakWindow = 512

// soakPort is one port of the soak with its VM, peer and traffic.
type soakPort struct {
	port *backend.Port
	peer *l2tp.Tunnel
	link *goodLink
}

// soakSample is the process at one moment of the soak.
type soakSample struct {
	at                time.Duration
	fds, goroutines   int
	rssKiB, heapKiB   int
	toVM, toNet       uint64 // frames delivered so far, all ports
	kernel            uint64 // kernel drops so far (the sidecar's sockets and the peers')
	inProcessDropped  uint64 // every other drop the ports counted
	portsFailed       int
	stallsVM, stallsN uint64 // times the VM side and the socket made the port wait
}

// sampleSoak reads the process figures and the ports' counters.
func sampleSoak(at time.Duration, ports []*soakPort) soakSample {
	s := soakSample{at: at, goroutines: runtime.NumGoroutine()}
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		s.fds = len(fds)
	}
	s.rssKiB = procStatusKiB("VmRSS")
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s.heapKiB = int(ms.HeapInuse / 1024)
	for _, p := range ports {
		c := p.link.counts()
		s.toVM += c.toVMGot
		s.toNet += c.toNetGot
		st := p.port.Status()
		s.kernel += st.Session.Drops[l2tp.DropKernel] + p.peer.Stats().Snapshot().Drops[l2tp.DropKernel]
		s.inProcessDropped += st.Session.Dropped() - st.Session.Drops[l2tp.DropKernel]
		s.stallsVM += st.FrontEnd.Waits
		s.stallsN += st.Session.TxStalls
		if st.State != backend.PortRunning {
			s.portsFailed++
		}
	}
	return s
}

// procStatusKiB reads a "kB" line of /proc/self/status.
func procStatusKiB(key string) int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && k == key {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	return -1
}

// softnetDrops sums the kernel's per-CPU backlog drops (/proc/net/softnet_stat,
// second column): loss on the loopback path that no socket counts.
func softnetDrops() uint64 {
	b, err := os.ReadFile("/proc/net/softnet_stat")
	if err != nil {
		return 0
	}
	var n uint64
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if f := strings.Fields(l); len(f) > 1 {
			v, _ := strconv.ParseUint(f[1], 16, 64)
			n += v
		}
	}
	return n
}

// TestSoak64Ports runs 64 stream ports in one process, each with a Go VM
// and a Go peer sending sequence-numbered frames flat out both ways, for
// 10 minutes (L2TPV3_SOAK_DURATION), sampling fds, goroutines and RSS
// every 30 s. It then proves the process lost nothing: every frame that did
// not arrive is one the kernel counted as dropped on a socket (the port's
// for peer → VM, the peer's for VM → peer), and fds, goroutines and RSS end
// where they started.
func TestSoak64Ports(t *testing.T) {
	if !soak() {
		t.Skip("the soak runs with " + soakEnv + "=1 (make soak)")
	}
	holdMachine(t)
	dur := 10 * time.Minute
	if s := os.Getenv(soakDurationEnv); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("%s=%q: %v", soakDurationEnv, s, err)
		}
		dur = d
	}
	every := min(30*time.Second, dur/4)
	n := envInt(t, soakPortsEnv, 64)
	sink := new(logSink)
	ps := newPorts(t, sink)
	dir := sockDir(t)
	softnet0 := softnetDrops()
	ports := make([]*soakPort, n)
	sizes := []int{64, 512, 1500}
	for i := range ports {
		side, peerCfg, _ := udpPair(t, uint32(0x1000+2*i), uint32(0x1001+2*i), "", "")
		sock := fmt.Sprintf("%s/p%d.sock", dir, i)
		p := addPort(t, ps, fmt.Sprintf("p%d", i), sock, side)
		peer := openPeer(t, peerCfg)
		ports[i] = &soakPort{port: p, peer: peer}
		ports[i].link = startGoodLink(attachVM(t, p, sock), peer, uint32(i), sizes[i%len(sizes)], 0, soakWindow, bothWays)
	}
	start := time.Now()
	samples := []soakSample{sampleSoak(0, ports)}
	for time.Since(start) < dur {
		time.Sleep(min(every, dur-time.Since(start)))
		samples = append(samples, sampleSoak(time.Since(start), ports))
		if s := samples[len(samples)-1]; s.portsFailed > 0 {
			t.Fatalf("%d ports failed:\n%s", s.portsFailed, sink.String())
		}
	}
	for _, p := range ports {
		p.link.halt()
	}
	for _, p := range ports {
		if err := p.link.drain(30 * time.Second); err != nil {
			t.Error(err)
		}
	}
	// A last frame each way per port, sent once everything has drained, so
	// each socket's final drop count reaches us (SO_RXQ_OVFL rides on
	// received packets), then the books.
	var sentVM, gotVM, lostVM, kernVM, sentNet, gotNet, lostNet, kernNet uint64
	for i, p := range ports {
		p.link.tail(t)
		c := p.link.counts()
		kp := p.port.Status().Session.Drops[l2tp.DropKernel]
		kq := p.peer.Stats().Snapshot().Drops[l2tp.DropKernel]
		sentVM, gotVM, lostVM, kernVM = sentVM+c.toVMSent, gotVM+c.toVMGot, lostVM+c.toVMLost, kernVM+kp
		sentNet, gotNet, lostNet, kernNet = sentNet+c.toNetSent, gotNet+c.toNetGot, lostNet+c.toNetLost, kernNet+kq
		if c.toVMLost > kp || c.toNetLost > kq {
			t.Errorf("port %d: to VM lost %d (port's socket dropped %d), to network lost %d (peer's socket dropped %d)",
				i, c.toVMLost, kp, c.toNetLost, kq)
		}
		if c.toVMGot+c.toVMLost != c.toVMSent || c.toNetGot+c.toNetLost != c.toNetSent {
			t.Errorf("port %d: frames unaccounted for: %+v", i, c)
		}
	}
	end := sampleSoak(time.Since(start), ports)
	samples = append(samples, end)
	softnet := softnetDrops() - softnet0
	t.Log(soakTable(n, dur, samples))
	t.Logf("peer → VM: %d sent, %d delivered in order, %d missing = %d dropped by the port's socket (kernel, counted)",
		sentVM, gotVM, lostVM, kernVM)
	t.Logf("VM → peer: %d sent, %d delivered in order, %d missing = %d dropped by the peer's socket (kernel, counted)",
		sentNet, gotNet, lostNet, kernNet)
	t.Logf("dropped inside the process: %d; loopback backlog drops (softnet, whole machine): %d; log lines: %d",
		end.inProcessDropped, softnet, sink.count())
	if lostVM != kernVM || lostNet != kernNet || end.inProcessDropped != 0 {
		t.Errorf("loss not explained by the kernel's socket counters (softnet drops meanwhile: %d)", softnet)
	}
	first, last := samples[1], samples[len(samples)-2] // under load, steady state
	if last.fds != first.fds || last.goroutines != first.goroutines {
		t.Errorf("fds %d → %d, goroutines %d → %d: not flat", first.fds, last.fds, first.goroutines, last.goroutines)
	}
	if last.rssKiB > first.rssKiB+first.rssKiB/5+16<<10 {
		t.Errorf("RSS %d → %d KiB: grew", first.rssKiB, last.rssKiB)
	}
}

// soakTable renders the samples as the README's table.
func soakTable(n int, dur time.Duration, s []soakSample) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d ports, %v, flat out both ways:\n", n, dur)
	fmt.Fprintf(&b, "%8s %5s %10s %8s %8s %12s %12s %12s %8s %10s %10s\n",
		"t", "fds", "goroutines", "rss_MiB", "heap_MiB", "to_vm", "to_net", "kernel_drop", "in_proc", "vm_waits", "tx_stalls")
	for _, x := range s {
		fmt.Fprintf(&b, "%8s %5d %10d %8.1f %8.1f %12d %12d %12d %8d %10d %10d\n",
			x.at.Round(time.Second), x.fds, x.goroutines, float64(x.rssKiB)/1024, float64(x.heapKiB)/1024,
			x.toVM, x.toNet, x.kernel, x.inProcessDropped, x.stallsVM, x.stallsN)
	}
	return b.String()
}
