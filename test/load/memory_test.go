package load

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/internal/testport"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/l2tp"
)

// Environment of the memory test: the port counts measured (the first is
// the base the others are compared with), and the frames each port must
// carry each way and the time traffic must run before the "after traffic"
// sample.
const (
	memoryPortsEnv   = "L2TPV3_MEMORY_PORTS"   // default "1,16,64"
	memoryFramesEnv  = "L2TPV3_MEMORY_FRAMES"  // default 20000
	memoryTrafficEnv = "L2TPV3_MEMORY_TRAFFIC" // default 10s
)

// memoryWindow bounds the frames in flight each way per port, so nothing
// is lost and the peer's equal-size frames leave as UDP GSO runs that the
// daemon's socket receives coalesced (UDP_GRO), filling its receive slots
// as a real peer's would.
const memoryWindow = 256

// memorySample is the daemon's memory at one moment (KiB; -1: unread).
type memorySample struct {
	rss, hwm  int // VmRSS, VmHWM
	heapInuse int // Go heap in use (go_memstats_heap_inuse_bytes)
}

// memoryRun is one daemon with n ports, measured three times.
type memoryRun struct {
	n                          int
	listening, connected, used memorySample
	frames                     uint64 // frames carried, both ways, all ports
	took                       time.Duration
}

// TestMemoryPerPort measures the daemon's memory per port: the real
// binary with --config files of 1, 16 and 64 stream ports (sockets in a
// temporary directory, UDP on 127.0.0.1), sampled from /proc/PID/status
// while listening, once a Go VM is connected to every port, and after
// every port has carried 1500-byte frames both ways. Per port is
// (RSS(N) − RSS(1)) / (N − 1); issue 5's bar is 16 MiB.
func TestMemoryPerPort(t *testing.T) {
	if !soak() {
		t.Skip("the memory test runs with " + soakEnv + "=1")
	}
	holdMachine(t)
	counts := envCounts(t, memoryPortsEnv, []int{1, 16, 64}, 1<<16)
	frames := uint64(envInt(t, memoryFramesEnv, 20000))
	traffic := 10 * time.Second
	if s := os.Getenv(memoryTrafficEnv); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("%s=%q: %v", memoryTrafficEnv, s, err)
		}
		traffic = d
	}
	bin := buildDaemon(t)
	runs := measureEach(t, "ports", counts, func(t *testing.T, n int) memoryRun {
		return measureMemory(t, bin, n, frames, traffic)
	})
	if runs == nil {
		return
	}
	t.Log("\n" + memoryTable(runs))
	base, last := runs[0], runs[len(runs)-1]
	if per := perUnitMiB(base.n, base.used.rss, last.n, last.used.rss); per > 16 {
		t.Errorf("%.1f MiB RSS per port after traffic: over issue 5's 16 MiB", per)
	}
}

// measureEach runs measure as a subtest "label=n" for every count, in
// order, and returns the results, or nil once one fails.
func measureEach[R any](t *testing.T, label string, counts []int, measure func(t *testing.T, n int) R) []R {
	var runs []R
	for _, n := range counts {
		t.Run(fmt.Sprintf("%s=%d", label, n), func(t *testing.T) {
			runs = append(runs, measure(t, n))
		})
		if t.Failed() {
			return nil
		}
	}
	return runs
}

// perUnitMiB is the RSS growth per unit (port, queue pair) from the base
// run of baseN units to a run of n, in MiB; 0 when n is not larger.
func perUnitMiB(baseN, baseKiB, n, kiB int) float64 {
	if n <= baseN {
		return 0
	}
	return mib(kiB-baseKiB) / float64(n-baseN)
}

// envCounts reads the environment variable name as a comma-separated list
// of counts 1..most, the smallest first, or returns def when it is unset.
func envCounts(t *testing.T, name string, def []int, most int) []int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	var counts []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > most || (len(counts) > 0 && n <= counts[len(counts)-1]) {
			t.Fatalf("%s=%q: want counts 1..%d, the smallest first", name, s, most)
		}
		counts = append(counts, n)
	}
	return counts
}

// buildDaemon compiles ./cmd/l2tpv3-netdev into a temporary directory.
func buildDaemon(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "l2tpv3-netdev")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/l2tpv3-netdev/l2tpv3-netdev/cmd/l2tpv3-netdev")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// measureMemory starts the daemon with n ports and samples it listening,
// connected, and after each port carried frames frames each way and
// traffic ran for at least the given time.
func measureMemory(t *testing.T, bin string, n int, frames uint64, traffic time.Duration) memoryRun {
	run := memoryRun{n: n}
	dir := sockDir(t)
	metrics := freeTCPAddr(t)
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "metrics = %q\nlog-level = \"warn\"\n", metrics)
	socks := make([]string, n)
	peerCfgs := make([]l2tp.Config, n)
	for i := range n {
		var side string
		side, peerCfgs[i], _ = udpPair(t, uint32(0x3000+2*i), uint32(0x3001+2*i), "", "")
		socks[i] = fmt.Sprintf("%s/p%d.sock", dir, i)
		fmt.Fprintf(&cfg, "\n[[port]]\nname = \"p%d\"\nstream = \"unix:%s\"\nl2tpv3 = %q\n", i, socks[i], side)
	}
	conf := filepath.Join(dir, "l2tpv3-netdev.toml")
	if err := os.WriteFile(conf, []byte(cfg.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	pid := startDaemon(t, bin, conf)
	ready := func() bool {
		for _, s := range socks {
			if _, err := os.Stat(s); err != nil {
				return false
			}
		}
		_, err := scrape(metrics)
		return err == nil
	}
	if !waitFor(20*time.Second, ready) {
		t.Fatalf("%d ports: the daemon did not listen on every socket and %s", n, metrics)
	}
	time.Sleep(time.Second)
	run.listening = sampleMemory(t, pid, metrics)

	vms, tuns := make([]*vmConn, n), make([]*l2tp.Tunnel, n)
	for i := range n {
		vms[i], tuns[i] = dialVM(t, socks[i]), openPeer(t, peerCfgs[i])
	}
	connected := func() bool {
		m, err := scrape(metrics)
		return err == nil && m["l2tpv3_netdev_frontend_connected"] == float64(n)
	}
	if !waitFor(20*time.Second, connected) {
		t.Fatalf("%d ports: not every VM connection was taken", n)
	}
	time.Sleep(time.Second) // Connected is set just before the pump attaches the connection
	run.connected = sampleMemory(t, pid, metrics)

	links := make([]*goodLink, n)
	for i := range links {
		links[i] = startGoodLink(vms[i], tuns[i], uint32(i), 1500, memoryWindow, memoryWindow, bothWays)
	}
	start := time.Now()
	carried := func() bool {
		if time.Since(start) < traffic {
			return false
		}
		for _, l := range links {
			if c := l.counts(); c.toVMGot < frames || c.toNetGot < frames {
				return false
			}
		}
		return true
	}
	done := waitFor(traffic+5*time.Minute, carried)
	run.took = time.Since(start)
	for _, l := range links {
		l.halt()
	}
	for _, l := range links {
		if err := l.drain(30 * time.Second); err != nil {
			t.Error(err)
		}
		c := l.requireAll(t)
		run.frames += c.toVMGot + c.toNetGot
	}
	if !done {
		t.Fatalf("%d ports: not every port carried %d frames each way in %v", n, frames, run.took.Round(time.Second))
	}
	time.Sleep(time.Second)
	run.used = sampleMemory(t, pid, metrics)
	t.Logf("%d ports: %d frames in %v; RSS listening %.1f MiB, connected %.1f MiB, after traffic %.1f MiB (peak %.1f MiB)",
		n, run.frames, run.took.Round(time.Millisecond), mib(run.listening.rss), mib(run.connected.rss),
		mib(run.used.rss), mib(run.used.hwm))
	return run
}

// startDaemon runs bin --config conf and returns its pid; it is stopped
// with SIGTERM (and waited for) when the test ends.
func startDaemon(t *testing.T, bin, conf string) int {
	t.Helper()
	return runDaemon(t, new(logSink), bin, "--config", conf)
}

// runDaemon runs the command name args (the daemon, or ip netns exec
// running it), logging into logs, and returns its pid; it is stopped with
// SIGTERM (and waited for) when the test ends.
func runDaemon(t *testing.T, logs *logSink, name string, args ...string) int {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("daemon: %v\n%s", err, logs)
			}
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			t.Errorf("daemon: no exit 10 s after SIGTERM\n%s", logs)
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", logs)
		}
	})
	return cmd.Process.Pid
}

// sampleMemory reads the daemon's /proc status and Go heap figures.
func sampleMemory(t *testing.T, pid int, metrics string) memorySample {
	t.Helper()
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := memorySample{rss: statusKiB(st, "VmRSS"), hwm: statusKiB(st, "VmHWM"), heapInuse: -1}
	if m, err := scrape(metrics); err == nil {
		s.heapInuse = int(m["go_memstats_heap_inuse_bytes"] / 1024)
	}
	return s
}

// statusKiB reads a "kB" line of a /proc/PID/status file, or -1.
func statusKiB(status []byte, key string) int {
	for _, l := range strings.Split(string(status), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && k == key {
			n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err == nil {
				return n
			}
		}
	}
	return -1
}

// scrapeClient opens a connection per scrape: a kept-alive one holds a
// goroutine in the daemon for up to 90 s, so how many the client kept (up
// to two) could move go_goroutines, which TestHostileFrontEnds compares.
var scrapeClient = http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// scrape reads the daemon's /metrics, summing each metric over its labels.
func scrape(addr string) (map[string]float64, error) {
	resp, err := scrapeClient.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, resp.Body)
		return nil, fmt.Errorf("/metrics: %s", resp.Status)
	}
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if l == "" || l[0] == '#' {
			continue
		}
		name, rest, _ := strings.Cut(l, " ")
		if i := strings.IndexByte(l, '{'); i >= 0 {
			name, rest = l[:i], l[strings.LastIndexByte(l, '}')+1:]
		}
		if f := strings.Fields(rest); len(f) > 0 {
			if v, err := strconv.ParseFloat(f[0], 64); err == nil {
				m[name] += v
			}
		}
	}
	return m, sc.Err()
}

// freeTCPAddr returns a TCP address on 127.0.0.1 that is free and that no
// outgoing connection will be given meanwhile (internal/testport).
func freeTCPAddr(t *testing.T) string {
	return net.JoinHostPort("127.0.0.1", fmt.Sprint(testport.TCP(t, "127.0.0.1")))
}

// mib converts KiB to MiB.
func mib(kib int) float64 { return float64(kib) / 1024 }

// memoryTable renders the runs as the README's table: each state's RSS
// and Go heap per port count, then per port against the first run.
func memoryTable(runs []memoryRun) string {
	var b strings.Builder
	fmt.Fprintf(&b, "| ports | RSS listening | RSS VMs connected | RSS after traffic | peak RSS (VmHWM) | Go heap in use after traffic | frames carried |\n")
	fmt.Fprintf(&b, "|---|---|---|---|---|---|---|\n")
	for _, r := range runs {
		fmt.Fprintf(&b, "| %d | %.1f MiB | %.1f MiB | %.1f MiB | %.1f MiB | %.1f MiB | %.1f M |\n", r.n,
			mib(r.listening.rss), mib(r.connected.rss), mib(r.used.rss), mib(r.used.hwm),
			mib(r.used.heapInuse), float64(r.frames)/1e6)
	}
	base := runs[0]
	for _, r := range runs[1:] {
		d := float64(r.n - base.n)
		per := func(a, b int) string { return fmt.Sprintf("%.2f MiB", mib(a-b)/d) }
		fmt.Fprintf(&b, "| per port (%d vs %d) | %s | %s | %s | %s | %s | |\n", r.n, base.n,
			per(r.listening.rss, base.listening.rss), per(r.connected.rss, base.connected.rss),
			per(r.used.rss, base.used.rss), per(r.used.hwm, base.used.hwm), per(r.used.heapInuse, base.used.heapInuse))
	}
	return b.String()
}
