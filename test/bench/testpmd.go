package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// pathTestpmd is the sidecar behind vhost-user with DPDK's testpmd as the
// front end (virtio-user PMD, guest memory without hugepages): a
// vhost-user driver we did not write, in place of vhosttest. encap is
// testpmd txonly → sidecar → our UDP sink (which then counts any frame of
// the right session and size: testpmd's frames are its own), decap is our
// blaster → sidecar → testpmd rxonly; testpmd's own port counters are the
// VM side's counts. Blast trials only: each trial starts testpmd afresh,
// too slow for the lossless search.
const pathTestpmd = "testpmd"

// testpmdWait bounds waiting for testpmd: its start (EAL init, vhost-user
// negotiation) and each answer on its command line.
const testpmdWait = 30 * time.Second

// testpmdSidecar is the sidecar with --vhost-user, listening, and testpmd
// connected to it as the front end with one queue pair.
type testpmdSidecar struct {
	sidecar
	pmdBin   string
	mbufSize int
	pmd      *testpmd
}

// start launches the sidecar, then testpmd, and waits until the sidecar
// has started the queue pair.
func (s *testpmdSidecar) start(sock string, dutPort, netPort int) (net.Conn, error) {
	if err := s.launch([]string{"--vhost-user", sock + ",mtu=9000"}, dutPort, netPort); err != nil {
		return nil, err
	}
	var err error
	if s.pmd, err = startTestpmd(s.pmdBin, sock, s.mbufSize); err == nil {
		err = s.waitQueuePair()
	}
	if err != nil {
		if s.pmd != nil {
			s.pmd.quit()
		}
		s.p.terminate()
		return nil, err
	}
	return nil, nil // no VM-side connection for the trial to own
}

// waitQueuePair waits for the sidecar's "VM queue pair started" (the front
// end has set up and kicked its rings), as the e2e test does.
func (s *testpmdSidecar) waitQueuePair() error {
	for deadline := time.Now().Add(testpmdWait); ; {
		if strings.Contains(s.p.output(), "VM queue pair started") {
			return nil
		}
		select {
		case <-s.pmd.done:
			return fmt.Errorf("testpmd exited at start (%v): %s", s.pmd.err, s.pmd.tail(5))
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("testpmd started no queue pair within %v: %s", testpmdWait, s.pmd.tail(5))
		}
	}
}

// stop quits testpmd, then ends the sidecar and reads its counters.
func (s *testpmdSidecar) stop() dutReport {
	var pmdErr error
	if s.pmd != nil {
		pmdErr = s.pmd.quit()
	}
	r := s.sidecar.stop()
	if pmdErr != nil {
		r.ExitErr = strings.TrimPrefix(r.ExitErr+"; testpmd: "+pmdErr.Error(), "; ")
	}
	return r
}

// vmSource is testpmd txonly (encap).
func (s *testpmdSidecar) vmSource(size int) source {
	return &pmdSource{pmd: s.pmd, size: size, stopping: make(chan struct{})}
}

// vmSink is testpmd rxonly (decap).
func (s *testpmdSidecar) vmSink(size int) sink {
	return &pmdSink{pmd: s.pmd, stopping: make(chan struct{})}
}

// testpmdArgs is the command line of the e2e test (test/e2e/dpdk_test.go)
// with one queue pair, as vhosttest starts, and the interactive command
// line in place of --auto-start, so that the harness reads testpmd's port
// counters while it forwards. -l 0-1: the main lcore (the command line,
// idle) on CPU 0, the forwarding lcore on CPU 1, where it busy-polls
// whether or not there is work: on this 2-core machine it leaves the
// sidecar and the harness one core, where our own front end sleeps on its
// eventfds when idle.
func testpmdArgs(sock string, mbufSize int) []string {
	args := []string{"-l", "0-1", "--no-pci", "--no-huge", "-m", "512", "--no-shconf",
		"--file-prefix", testpmdPrefix(),
		"--vdev", "net_virtio_user0,path=" + sock + ",queues=1",
		"--", "-i", "--total-num-mbufs=16384", "--rxq=1", "--txq=1"}
	if mbufSize > 0 {
		args = append(args, "--mbuf-size="+strconv.Itoa(mbufSize))
	}
	return args
}

// testpmdFreeCPUs is where a testpmd trial pins the sidecar (taskset):
// the CPU that testpmdArgs leaves to testpmd's idle main lcore, away from
// the forwarding lcore's busy-polling CPU 1, as DPDK deployments keep
// other work off their PMD cores. Unpinned, the scheduler now and then
// put the sidecar beside the poller, which halved its share of CPU 1:
// decap 64 B fell to 0.25 Mpps (0.30 pinned) and, pinned to CPU 1, to 0.21
// with half the frames lost.
const testpmdFreeCPUs = "0"

// testpmdPrefix is the EAL file prefix of the harness's testpmd runs.
func testpmdPrefix() string { return fmt.Sprintf("l2tpv3bench%d", os.Getpid()) }

// removeRuntimeDir removes the (empty) runtime directory EAL leaves for
// our prefix even with --no-shconf: /var/run/dpdk/PREFIX as root, else
// under $XDG_RUNTIME_DIR.
func removeRuntimeDir() {
	base := "/var/run/dpdk"
	if os.Geteuid() != 0 {
		base = filepath.Join(os.Getenv("XDG_RUNTIME_DIR"), "dpdk")
	}
	os.Remove(filepath.Join(base, testpmdPrefix()))
}

// testpmdMbufSize is the mbuf size (data room, 128 bytes of headroom
// included) for frames up to maxFrame bytes, or 0 where DPDK's default of
// 2176 holds them.
func testpmdMbufSize(maxFrame int) int {
	if maxFrame+128 <= 2176 {
		return 0
	}
	return maxFrame + 128
}

// portStats are the counters of testpmd's "show port stats 0".
type portStats struct{ rx, tx uint64 }

// testpmd is a running interactive testpmd: commands go to its stdin, its
// stdout is scanned for port statistics.
type testpmd struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	stats chan portStats // one per "show port stats" answered
	cmdMu sync.Mutex     // one command exchange at a time
	last  portStats      // the latest stats read (under cmdMu)

	mu    sync.Mutex
	lines []string
	done  chan struct{}
	err   error
}

// testpmdKeepLines bounds the output lines kept for error messages.
const testpmdKeepLines = 200

// startTestpmd runs bin (dpdk-testpmd) on the vhost-user socket sock
// through stdbuf, so that its stdout reaches the harness line by line.
func startTestpmd(bin, sock string, mbufSize int) (*testpmd, error) {
	t := &testpmd{cmd: exec.Command("stdbuf", append([]string{"-oL", bin}, testpmdArgs(sock, mbufSize)...)...),
		stats: make(chan portStats, 4), done: make(chan struct{})}
	var err error
	if t.stdin, err = t.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	out, err := t.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	t.cmd.Stderr = t.cmd.Stdout
	if err := t.cmd.Start(); err != nil {
		return nil, fmt.Errorf("testpmd: %w", err)
	}
	go func() {
		t.scan(out)
		t.err = t.cmd.Wait()
		close(t.done)
	}()
	return t, nil
}

// scan keeps testpmd's output lines and sends the counters of each "NIC
// statistics" block when the block ends.
func (t *testpmd) scan(r io.Reader) {
	sc := bufio.NewScanner(r)
	var st statsParse
	for sc.Scan() {
		line := sc.Text()
		t.mu.Lock()
		t.lines = append(t.lines, line)
		if len(t.lines) > testpmdKeepLines {
			t.lines = t.lines[len(t.lines)-testpmdKeepLines:]
		}
		t.mu.Unlock()
		if ps, ok := st.feed(line); ok {
			select {
			case t.stats <- ps:
			default: // nobody asked (do drains stale answers anyway)
			}
		}
	}
}

// statsParse follows testpmd's output through "show port stats" blocks.
type statsParse struct {
	in bool
	ps portStats
}

var (
	pmdRxPackets = regexp.MustCompile(`RX-packets:\s+(\d+)`)
	pmdTxPackets = regexp.MustCompile(`TX-packets:\s+(\d+)`)
)

// feed takes one output line and returns a block's counters at its last
// line: a "NIC statistics for port" header, RX-packets and TX-packets
// lines, and a closing line of '#' (the forward statistics "stop" prints
// also count RX-packets, but in a block of '+' and '-').
func (p *statsParse) feed(line string) (portStats, bool) {
	switch {
	case strings.Contains(line, "NIC statistics for port"):
		p.in, p.ps = true, portStats{}
	case !p.in:
	case strings.Trim(line, " #") == "" && strings.Contains(line, "###"):
		p.in = false
		return p.ps, true
	default:
		if m := pmdRxPackets.FindStringSubmatch(line); m != nil {
			p.ps.rx, _ = strconv.ParseUint(m[1], 10, 64)
		}
		if m := pmdTxPackets.FindStringSubmatch(line); m != nil {
			p.ps.tx, _ = strconv.ParseUint(m[1], 10, 64)
		}
	}
	return portStats{}, false
}

// tail returns the last n output lines, joined.
func (t *testpmd) tail(n int) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines[max(len(t.lines)-n, 0):], " | ")
}

// do sends commands, then "show port stats 0", and returns the counters
// that answers: testpmd runs its commands in order, so by then the others
// have taken effect.
func (t *testpmd) do(cmds ...string) (portStats, error) {
	t.cmdMu.Lock()
	defer t.cmdMu.Unlock()
	for len(t.stats) > 0 {
		<-t.stats // an answer that came after its query gave up
	}
	text := strings.Join(append(cmds, "show port stats 0"), "\n") + "\n"
	if _, err := io.WriteString(t.stdin, text); err != nil {
		return t.last, fmt.Errorf("testpmd: %w", err)
	}
	select {
	case t.last = <-t.stats:
		return t.last, nil
	case <-t.done:
		return t.last, fmt.Errorf("testpmd exited (%v): %s", t.err, t.tail(5))
	case <-time.After(testpmdWait):
		return t.last, fmt.Errorf("testpmd did not answer %q within %v", cmds, testpmdWait)
	}
}

// quit asks testpmd to stop forwarding and exit, and kills it if it does
// not.
func (t *testpmd) quit() error {
	io.WriteString(t.stdin, "stop\nquit\n")
	t.stdin.Close()
	defer removeRuntimeDir()
	select {
	case <-t.done:
	case <-time.After(stopTimeout):
		t.cmd.Process.Kill() // stdbuf execs testpmd: this is testpmd
		<-t.done
		return errors.New("testpmd did not quit and was killed")
	}
	if t.err != nil {
		return fmt.Errorf("%v: %s", t.err, t.tail(3))
	}
	return nil
}

// pmdSource is testpmd txonly as the encap source: sent is the port's
// TX-packets (frames the virtio-user PMD put on the TX ring).
type pmdSource struct {
	pmd      *testpmd
	size     int
	probed   bool
	stopOnce sync.Once
	stopping chan struct{}
}

// probe sends exactly one frame: "start tx_first" with a burst of 1 in
// rxonly mode sends one txonly burst, then only receives.
func (s *pmdSource) probe() error {
	var cmds []string
	if !s.probed {
		cmds = []string{"set fwd rxonly", "set burst 1", fmt.Sprintf("set txpkts %d", s.size)}
		s.probed = true
	}
	_, err := s.pmd.do(append(cmds, "start tx_first", "stop")...)
	return err
}

// run forwards txonly with testpmd's default burst until stop.
func (s *pmdSource) run() error {
	if _, err := s.pmd.do("set burst 32", "set fwd txonly", "start"); err != nil {
		return err
	}
	<-s.stopping
	_, err := s.pmd.do("stop")
	return err
}

// stop makes run stop testpmd's forwarding and return.
func (s *pmdSource) stop() { s.stopOnce.Do(func() { close(s.stopping) }) }

// close does nothing: the device owns testpmd.
func (s *pmdSource) close() {}

// sent returns the port's TX-packets (the last known count if testpmd
// does not answer).
func (s *pmdSource) sent() uint64 {
	ps, _ := s.pmd.do()
	return ps.tx
}

// pmdSink is testpmd rxonly as the decap sink: delivered is the port's
// RX-packets. testpmd only counts; it cannot tell our frames from others.
type pmdSink struct {
	pmd      *testpmd
	stopOnce sync.Once
	stopping chan struct{}
}

// run forwards rxonly until stop.
func (s *pmdSink) run() error {
	if _, err := s.pmd.do("set fwd rxonly", "start"); err != nil {
		return err
	}
	<-s.stopping
	_, err := s.pmd.do("stop")
	return err
}

// stop makes run stop testpmd's forwarding and return.
func (s *pmdSink) stop() { s.stopOnce.Do(func() { close(s.stopping) }) }

// close does nothing: the device owns testpmd.
func (s *pmdSink) close() {}

// delivered returns the port's RX-packets (the last known count if testpmd
// does not answer).
func (s *pmdSink) delivered() uint64 {
	ps, _ := s.pmd.do()
	return ps.rx
}

// report is empty: testpmd checks no content or order.
func (s *pmdSink) report() sinkReport { return sinkReport{} }
