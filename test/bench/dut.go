package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Sessions of the pseudowire under test, as the device sees them.
const (
	txSession = 1 // the device sends with this session ID (encap)
	rxSession = 2 // the device accepts this session ID (decap)
)

// Bounds on waiting for a device.
const (
	startTimeout = 10 * time.Second
	stopTimeout  = 5 * time.Second
)

// device is one device under test, started afresh for each trial.
type device interface {
	// start launches the device with its L2TPv3 socket on port dutPort,
	// peering with port netPort, and returns the VM-side stream.
	start(sock string, dutPort, netPort int) (net.Conn, error)
	// stop ends the device and returns what it said about itself.
	stop() dutReport
}

// dutReport is what a device reported when it stopped.
type dutReport struct {
	Counters     map[string]uint64 `json:"counters,omitempty"`
	CountersLine string            `json:"counters_line,omitempty"`
	Killed       bool              `json:"killed,omitempty"`
	ExitErr      string            `json:"exit_error,omitempty"`
}

// l2tpv3Opts is the pseudowire both devices are given, in QEMU's syntax.
func l2tpv3Opts(dutPort, netPort int) string {
	return fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=%d,txsession=%d,rxsession=%d",
		dutPort, netPort, txSession, rxSession)
}

// proc is a child process whose stderr lines are kept and watched.
type proc struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []string
	match chan struct{}
	done  chan struct{}
	err   error
}

// pinned is the command that runs bin with args on the CPUs of list:
// taskset (which execs bin, so the process is bin's), or bin itself when
// list is empty.
func pinned(list, bin string, args []string) (string, []string) {
	if list == "" {
		return bin, args
	}
	return "taskset", append([]string{"-c", list, bin}, args...)
}

// startProc runs bin with args, closing match once a stderr line contains
// want (never if want is empty).
func startProc(want, bin string, args ...string) (*proc, error) {
	p := &proc{cmd: exec.Command(bin, args...), match: make(chan struct{}), done: make(chan struct{})}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		p.scan(stderr, want)
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// scan keeps r's lines, signalling the first that contains want.
func (p *proc) scan(r io.Reader, want string) {
	sc := bufio.NewScanner(r)
	matched := false
	for sc.Scan() {
		line := sc.Text()
		p.mu.Lock()
		p.lines = append(p.lines, line)
		p.mu.Unlock()
		if !matched && want != "" && strings.Contains(line, want) {
			matched = true
			close(p.match)
		}
	}
}

// output returns the stderr lines so far, joined.
func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// terminate sends SIGTERM, waits, and kills the process if it hangs; it
// reports whether it had to kill it.
func (p *proc) terminate() (killed bool) {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return false
	case <-time.After(stopTimeout):
		p.cmd.Process.Kill()
		<-p.done
		return true
	}
}

// report turns how the process ended into a dutReport.
func (p *proc) report(killed bool) dutReport {
	r := dutReport{Killed: killed}
	if p.err != nil && !killed {
		r.ExitErr = fmt.Sprintf("%v: %s", p.err, lastLines(p.output(), 3))
	}
	return r
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], " | ")
}

// sidecar is the l2tpv3-netdev binary: it listens on the stream socket and
// the harness connects, as QEMU would with server=off.
type sidecar struct {
	bin   string
	batch int
	cpus  string // taskset CPU list; "" = any CPU
	p     *proc
}

// pin restricts the sidecar to the CPUs of list (taskset syntax).
func (s *sidecar) pin(list string) { s.cpus = list }

// launch starts the sidecar with the front-end flags and waits for
// msg=ready.
func (s *sidecar) launch(frontEnd []string, dutPort, netPort int) error {
	var err error
	args := append(frontEnd, "--l2tpv3", l2tpv3Opts(dutPort, netPort),
		"--batch", strconv.Itoa(s.batch), "--log-level", "info")
	bin, args := pinned(s.cpus, s.bin, args)
	if s.p, err = startProc("msg=ready", bin, args...); err != nil {
		return fmt.Errorf("sidecar: %w", err)
	}
	select {
	case <-s.p.match:
		return nil
	case <-s.p.done:
		return fmt.Errorf("sidecar exited before ready: %s", lastLines(s.p.output(), 3))
	case <-time.After(startTimeout):
		s.p.terminate()
		return errors.New("sidecar: no msg=ready within " + startTimeout.String())
	}
}

// start launches the sidecar, waits for msg=ready and connects.
func (s *sidecar) start(sock string, dutPort, netPort int) (net.Conn, error) {
	if err := s.launch([]string{"--stream", "unix:" + sock + ",server=on"}, dutPort, netPort); err != nil {
		return nil, err
	}
	c, err := net.Dial("unix", sock)
	if err != nil {
		s.p.terminate()
		return nil, fmt.Errorf("sidecar: %w", err)
	}
	return c, nil
}

// stop sends SIGTERM and reads the msg=counters line the sidecar logs.
func (s *sidecar) stop() dutReport {
	r := s.p.report(s.p.terminate())
	for _, line := range strings.Split(s.p.output(), "\n") {
		if strings.Contains(line, "msg=counters") {
			r.CountersLine = line
			r.Counters = parseCounters(line)
		}
	}
	return r
}

// qemu is QEMU's own -netdev l2tpv3 on a hub with -netdev stream, no
// machine at all: the harness listens and QEMU connects.
type qemu struct {
	bin  string
	cpus string // taskset CPU list; "" = any CPU
	p    *proc
}

// pin restricts QEMU to the CPUs of list (taskset syntax).
func (q *qemu) pin(list string) { q.cpus = list }

// start listens on sock, launches QEMU and accepts its connection.
func (q *qemu) start(sock string, dutPort, netPort int) (net.Conn, error) {
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	defer ln.Close()
	bin, args := pinned(q.cpus, q.bin, []string{"-M", "none", "-nographic", "-nodefaults",
		"-netdev", "stream,id=s0,server=off,addr.type=unix,addr.path=" + sock,
		"-netdev", "hubport,id=h0,hubid=0,netdev=s0",
		"-netdev", "l2tpv3,id=l0," + l2tpv3Opts(dutPort, netPort),
		"-netdev", "hubport,id=h1,hubid=0,netdev=l0"})
	q.p, err = startProc("", bin, args...)
	if err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	go func() {
		select {
		case <-q.p.done:
		case <-time.After(startTimeout):
		}
		ln.Close() // unblocks Accept if QEMU died or never came
	}()
	c, err := ln.Accept()
	if err != nil {
		q.p.terminate()
		return nil, fmt.Errorf("qemu did not connect: %v: %s", err, lastLines(q.p.output(), 3))
	}
	return c, nil
}

// stop sends SIGTERM; QEMU has no counters to report.
func (q *qemu) stop() dutReport {
	return q.p.report(q.p.terminate())
}

var (
	countersL2TP  = regexp.MustCompile(`l2tpv3="([^"]*)"`)
	countersPkts  = regexp.MustCompile(`\b(rx|tx) (\d+) pkts`)
	countersPairs = regexp.MustCompile(`\b([a-z_]+)[= ](\d+)\b`)
)

// parseCounters reads the numbers of a sidecar msg=counters line:
// top-level vm_* fields, and in its l2tpv3 summary the rx/tx packet
// counts and each drop reason (as drop_REASON) and tx_stalls.
func parseCounters(line string) map[string]uint64 {
	m := map[string]uint64{}
	summary := ""
	if sm := countersL2TP.FindStringSubmatch(line); sm != nil {
		summary = sm[1]
		line = strings.Replace(line, sm[0], "", 1)
	}
	for _, kv := range countersPairs.FindAllStringSubmatch(line, -1) {
		if strings.HasPrefix(kv[1], "vm_") {
			m[kv[1]], _ = strconv.ParseUint(kv[2], 10, 64)
		}
	}
	for _, kv := range countersPkts.FindAllStringSubmatch(summary, -1) {
		m[kv[1]+"_packets"], _ = strconv.ParseUint(kv[2], 10, 64)
	}
	if i := strings.Index(summary, "drops "); i >= 0 {
		drops, _, _ := strings.Cut(summary[i+len("drops "):], ",")
		for _, kv := range countersPairs.FindAllStringSubmatch(drops, -1) {
			m["drop_"+kv[1]], _ = strconv.ParseUint(kv[2], 10, 64)
		}
	}
	for _, kv := range countersPairs.FindAllStringSubmatch(summary, -1) {
		if kv[1] == "tx_stalls" || kv[1] == "seq_lost" {
			m[kv[1]], _ = strconv.ParseUint(kv[2], 10, 64)
		}
	}
	return m
}

// internalDrops sums the sidecar's drop counters except the kernel's
// socket-overflow count, which the harness reads itself.
func (r dutReport) internalDrops() uint64 {
	var n uint64
	for k, v := range r.Counters {
		if strings.HasPrefix(k, "drop_") && k != "drop_kernel" {
			n += v
		}
	}
	return n
}
