package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// modeTrafgen is a decap (or limit) trial whose network side is
// netsniff-ng's trafgen, a generator we did not write, sending flat out
// instead of our sendmmsg blaster: it confirms the decap ratios.
const modeTrafgen = "trafgen"

// trafgenDev is where trafgen injects: lo, whose "Ethernet" header is 14
// bytes with all-zero addresses (lo's own address, so the frame is for
// this host).
const trafgenDev = "lo"

// trafgenPacket is the one packet a trafgen config sends: an L2TPv3 data
// packet over UDP/IPv4 on loopback, as the device under test expects it.
type trafgenPacket struct {
	srcPort, dstPort int
	session          uint32
	frameSize        int
}

// trafgenConfig renders p in trafgen's packet language. The L2TPv3 header
// and the inner frame are the bytes our blaster sends (buildL2TP, sequence
// number 0: trafgen has no 64-bit runtime counter, so every frame carries
// 0 and the sinks' order checks mean nothing for these trials); trafgen
// computes the IPv4 header checksum itself (csumip) and the UDP checksum is
// 0 (none, which IPv4 allows; Linux's L2TP default).
func trafgenConfig(p trafgenPacket) string {
	payload := buildL2TP(make([]byte, l2tpHeaderLen+p.frameSize), p.session, p.frameSize, 0)
	udpLen := 8 + len(payload)
	var b strings.Builder
	fmt.Fprintf(&b, "# l2tpv3-netdev bench (test/bench): L2TPv3/UDP/IPv4 data packet, %d-byte inner frame\n", p.frameSize)
	fmt.Fprintf(&b, "# 127.0.0.1:%d -> 127.0.0.1:%d, session %d, no cookie, no L2-Specific Sublayer\n", p.srcPort, p.dstPort, p.session)
	b.WriteString("{\n")
	b.WriteString("  # Ethernet on lo: zero addresses, IPv4\n")
	b.WriteString("  fill(0x00, 12), c16(0x0800),\n")
	b.WriteString("  # IPv4: version 4, IHL 5, TOS 0, total length, ID 0, DF, TTL 64, UDP, header checksum (bytes 14..33)\n")
	fmt.Fprintf(&b, "  0x45, 0x00, c16(%d), c16(0), c16(0x4000), 64, 17, csumip(14, 33),\n", 20+udpLen)
	b.WriteString("  127, 0, 0, 1,  127, 0, 0, 1,\n")
	b.WriteString("  # UDP: source and destination port, length, checksum 0 (none)\n")
	fmt.Fprintf(&b, "  c16(%d), c16(%d), c16(%d), c16(0),\n", p.srcPort, p.dstPort, udpLen)
	b.WriteString("  # L2TPv3: 00 03 00 00 (data, version 3), session ID\n")
	fmt.Fprintf(&b, "  %s,\n", hexBytes(payload[:l2tpHeaderLen]))
	b.WriteString("  # inner Ethernet frame: dst MAC, src MAC, EtherType 0x88b5, \"L2B1\", sequence number 0\n")
	fmt.Fprintf(&b, "  %s,\n", hexBytes(payload[l2tpHeaderLen:l2tpHeaderLen+minFrameSize]))
	if pad := p.frameSize - minFrameSize; pad > 0 {
		fmt.Fprintf(&b, "  # zero padding to %d bytes\n", p.frameSize)
		fmt.Fprintf(&b, "  fill(0x00, %d),\n", pad)
	}
	b.WriteString("}\n")
	return b.String()
}

// hexBytes writes b as trafgen byte literals.
func hexBytes(b []byte) string {
	s := make([]string, len(b))
	for i, x := range b {
		s[i] = fmt.Sprintf("0x%02x", x)
	}
	return strings.Join(s, ", ")
}

// trafgenDUTCPUs is where a trafgen trial pins the device (taskset),
// away from trafgen's worker on CPU 0 (see trafgenArgs).
const trafgenDUTCPUs = "1"

// trafgenArgs are trafgen's options for every run: one worker (--cpus 1,
// which trafgen pins to CPU 0; the kernel's loopback receive path, up to
// the device's socket queue, runs in that worker's context there too),
// and nothing of the system's tuned: --no-sock-mem leaves rmem_default and
// friends alone (the devices' socket buffers must be what they are in the
// other trials), --notouch-irq leaves IRQ affinity alone. The device, QEMU
// or the sidecar alike, is pinned to CPU 1 (trafgenDUTCPUs): unpinned, a
// device that works harder (the sidecar) takes more of trafgen's CPU and
// so is offered less than one that drops (QEMU). So in trafgen trials the
// generator has one core and the device the other (the harness's VM side
// floats over both); the same for every device, so the ratios hold, but the
// absolute rates are not those of the blaster trials, where the scheduler
// places everything freely (and the sidecar may use both cores).
func trafgenArgs(cfg string) []string {
	return []string{"--dev", trafgenDev, "--conf", cfg, "--cpus", "1", "--no-sock-mem", "--notouch-irq"}
}

var trafgenSentRE = regexp.MustCompile(`(?m)^\s*(\d+) packets outgoing`)

// parseTrafgenSent reads the packet count trafgen prints when it ends.
func parseTrafgenSent(out string) (uint64, bool) {
	m := trafgenSentRE.FindAllStringSubmatch(out, -1)
	if m == nil {
		return 0, false
	}
	n, err := strconv.ParseUint(m[len(m)-1][1], 10, 64)
	return n, err == nil
}

// loInjectSysctls let packets injected on lo by a packet socket reach a
// socket on 127.0.0.1: they come without the route a locally sent packet
// carries, so the kernel routes them as input, where a 127/8 destination
// is martian unless route_localnet, and a source that is a local address
// is refused unless accept_local.
var loInjectSysctls = []string{
	"/proc/sys/net/ipv4/conf/lo/route_localnet",
	"/proc/sys/net/ipv4/conf/lo/accept_local",
}

// allowLoInjection sets loInjectSysctls to 1 and returns what restores
// them.
func allowLoInjection() (restore func(), err error) {
	var old []string
	restore = func() {
		for i, v := range old {
			os.WriteFile(loInjectSysctls[i], []byte(v), 0o644)
		}
	}
	for _, p := range loInjectSysctls {
		b, err := os.ReadFile(p)
		if err == nil {
			old = append(old, strings.TrimSpace(string(b)))
			err = os.WriteFile(p, []byte("1"), 0o644)
		}
		if err != nil {
			restore()
			return nil, fmt.Errorf("trafgen on lo needs %s=1: %w", p, err)
		}
	}
	return restore, nil
}

// loTxPackets reads lo's transmitted-packet counter.
func loTxPackets() uint64 {
	b, _ := os.ReadFile("/sys/class/net/lo/statistics/tx_packets")
	n, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	return n
}

// trafgenSource runs trafgen as the network side: probes are "-n 1" runs,
// run is one flat-out run until stop. While that runs, sent counts from
// lo's tx_packets (any other loopback traffic on the machine included);
// once trafgen has ended, from the count it printed, so Sent and the loss
// are exact and only the window's offered rate is approximate.
type trafgenSource struct {
	bin, cfg string
	restore  func()
	stopOnce sync.Once
	stopping chan struct{}

	mu      sync.Mutex
	done    uint64 // packets of the runs and probes that have ended
	running bool
	lo0     uint64 // lo tx_packets when the current run started
}

// newTrafgenSource writes the config for p into dir and lets lo take
// injected packets.
func newTrafgenSource(bin, dir string, p trafgenPacket) (*trafgenSource, error) {
	cfg := filepath.Join(dir, fmt.Sprintf("trafgen-%d.cfg", p.dstPort))
	if err := os.WriteFile(cfg, []byte(trafgenConfig(p)), 0o644); err != nil {
		return nil, err
	}
	restore, err := allowLoInjection()
	if err != nil {
		return nil, err
	}
	return &trafgenSource{bin: bin, cfg: cfg, restore: restore, stopping: make(chan struct{})}, nil
}

// command builds a trafgen command. It stays in the harness's process
// group, so that a ^C at the terminal reaches its worker too.
func (s *trafgenSource) command(extra ...string) *exec.Cmd {
	return exec.Command(s.bin, append(trafgenArgs(s.cfg), extra...)...)
}

// signalTree sends sig to process pid and to the children it forked:
// trafgen does not pass a signal on to its worker, which keeps sending.
func signalTree(pid int, sig syscall.Signal) {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	for _, f := range strings.Fields(string(b)) {
		if child, err := strconv.Atoi(f); err == nil {
			syscall.Kill(child, sig)
		}
	}
	syscall.Kill(pid, sig)
}

// probe sends one packet.
func (s *trafgenSource) probe() error {
	out, err := s.command("--num", "1").CombinedOutput()
	n, ok := parseTrafgenSent(string(out))
	if err != nil || !ok {
		return fmt.Errorf("trafgen --num 1: %v: %s", err, lastLines(strings.TrimSpace(string(out)), 3))
	}
	s.mu.Lock()
	s.done += n
	s.mu.Unlock()
	return nil
}

// run sends flat out until stop, then stops trafgen with SIGINT (as ^C
// would) and takes its count.
func (s *trafgenSource) run() error {
	var out strings.Builder
	cmd := s.command()
	cmd.Stdout, cmd.Stderr = &out, &out
	s.mu.Lock()
	s.lo0, s.running = loTxPackets(), true
	s.mu.Unlock()
	if err := cmd.Start(); err != nil {
		s.finish(0)
		return fmt.Errorf("trafgen: %w", err)
	}
	exited := goRun(cmd.Wait)
	var err error
	select {
	case werr := <-exited:
		err = fmt.Errorf("trafgen ended before stop: %v", werr)
	case <-s.stopping:
		signalTree(cmd.Process.Pid, syscall.SIGINT)
		select {
		case werr := <-exited:
			if werr != nil {
				err = fmt.Errorf("trafgen: %v", werr)
			}
		case <-time.After(stopTimeout):
			signalTree(cmd.Process.Pid, syscall.SIGKILL)
			<-exited
			err = errors.New("trafgen ignored SIGINT and was killed")
		}
	}
	n, ok := parseTrafgenSent(out.String())
	s.finish(n)
	if err == nil && !ok {
		err = errors.New("trafgen printed no packet count")
	}
	if err != nil {
		return fmt.Errorf("%w: %s", err, lastLines(strings.TrimSpace(out.String()), 3))
	}
	return nil
}

// finish records the count of a run that has ended.
func (s *trafgenSource) finish(n uint64) {
	s.mu.Lock()
	s.done += n
	s.running = false
	s.mu.Unlock()
}

// stop makes run stop trafgen and return.
func (s *trafgenSource) stop() { s.stopOnce.Do(func() { close(s.stopping) }) }

// sent returns the packets sent so far (see trafgenSource).
func (s *trafgenSource) sent() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running {
		return s.done + loTxPackets() - s.lo0
	}
	return s.done
}

// close restores lo's settings and removes the config.
func (s *trafgenSource) close() {
	s.restore()
	os.Remove(s.cfg)
}
