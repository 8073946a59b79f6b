package e2e

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/l2tp"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/test/guest"
)

// procSample is what a process holds at one moment, read from /proc.
type procSample struct {
	fds        int           // open file descriptors
	memfdMaps  int           // mappings of memfd files (vhost-user guest memory)
	threads    int           // OS threads
	cpu        time.Duration // user + system CPU time so far
	rssKiB     int
	goroutines int // from the counters line (SIGUSR1); -1 if not asked
}

// String is a one-line summary for logs.
func (p procSample) String() string {
	return fmt.Sprintf("fds=%d memfd_maps=%d threads=%d goroutines=%d rss=%dKiB", p.fds, p.memfdMaps, p.threads, p.goroutines, p.rssKiB)
}

// clockTick is USER_HZ, the unit of /proc/PID/stat times (100 on Linux).
const clockTick = 10 * time.Millisecond

// sampleProc reads pid's fds, memfd mappings, threads, CPU time and RSS.
func sampleProc(t testing.TB, pid int) procSample {
	t.Helper()
	var p procSample
	p.goroutines = -1
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	p.fds = len(fds)
	maps, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	p.memfdMaps = strings.Count(string(maps), "/memfd:")
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(stat)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:]) // f[0] is field 3 (state)
	utime, _ := strconv.Atoi(f[11])
	stime, _ := strconv.Atoi(f[12])
	p.threads, _ = strconv.Atoi(f[17])
	rss, _ := strconv.Atoi(f[21])
	p.cpu = time.Duration(utime+stime) * clockTick
	p.rssKiB = rss * os.Getpagesize() / 1024
	return p
}

// sample reads the sidecar's /proc figures and its goroutine count (from
// the counters line SIGUSR1 prints).
func (s *sidecar) sample() procSample {
	p := sampleProc(s.t, s.cmd.Process.Pid)
	if m := regexp.MustCompile(`goroutines=(\d+)`).FindStringSubmatch(s.counters()); m != nil {
		p.goroutines, _ = strconv.Atoi(m[1])
	}
	return p
}

// cpuLoad samples the sidecar's CPU use over d, as a share of one core.
func (s *sidecar) cpuLoad(d time.Duration) float64 {
	before := sampleProc(s.t, s.cmd.Process.Pid)
	start := time.Now()
	time.Sleep(d)
	after := sampleProc(s.t, s.cmd.Process.Pid)
	return float64(after.cpu-before.cpu) / float64(time.Since(start))
}

// logCount counts the sidecar's log lines matching the regexp re.
func (s *sidecar) logCount(re string) int {
	return len(regexp.MustCompile(re).FindAllStringIndex(s.stderr.String(), -1))
}

// waitCount waits until the sidecar's log matches re at least n times.
func (s *sidecar) waitCount(re string, n int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if s.logCount(re) >= n {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// stopTimed sends SIGTERM and returns how long the sidecar took to exit and
// its exit status (-1 if it had to be killed after 5 s).
func (s *sidecar) stopTimed() (time.Duration, int) {
	start := time.Now()
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
		return time.Since(start), -1
	}
	return time.Since(start), s.cmd.ProcessState.ExitCode()
}

// checkSIGTERM stops the sidecar (under whatever load is running) and
// checks it exits within 1 s, with status 0, counters printed.
func checkSIGTERM(t *testing.T, s *sidecar) {
	t.Helper()
	took, code := s.stopTimed()
	log := s.stderr.String()
	last := log[strings.LastIndex(log, "msg=exiting"):]
	if took > time.Second || code != 0 || !strings.Contains(last, "msg=counters") {
		t.Errorf("SIGTERM under load: exit %d after %v, counters printed: %v; want 0 within 1 s with counters",
			code, took.Round(time.Millisecond), strings.Contains(last, "msg=counters"))
	}
	t.Logf("SIGTERM under load: exit status %d after %v; %s", code, took.Round(time.Millisecond),
		strings.TrimSpace(regexp.MustCompile(`(?m)^.*msg=counters.*$`).FindString(last)))
}

// faultFrontEnd describes one front end for the QEMU-kill test: the
// sidecar's flag and the QEMU arguments of a VM on it.
type faultFrontEnd struct {
	name   string
	flag   func(sock string) []string
	vm     func(sock string) []string
	shared bool   // guest RAM must be shared (vhost-user)
	gone   string // a regexp of the sidecar's log line when a VM has left
}

// faultFrontEnds are the stream (the sidecar listens, QEMU connects with
// server=off) and vhost-user (allow-uid=0: QEMU runs as root here) cases.
var faultFrontEnds = []faultFrontEnd{
	{
		name: "stream",
		flag: func(sock string) []string { return []string{"--stream", "unix:" + sock} },
		vm:   func(sock string) []string { return append(guest.StreamNetdev("n0", sock), guest.NIC("n0", 1)...) },
		gone: `msg="VM (disconnected|connection closed)"`,
	},
	{
		name: "vhost-user",
		flag: func(sock string) []string { return []string{"--vhost-user", sock + ",allow-uid=0"} },
		vm: func(sock string) []string {
			return []string{"-chardev", "socket,id=c0,path=" + sock + ",reconnect=1",
				"-netdev", "vhost-user,id=n0,chardev=c0",
				"-device", guest.VirtioNetDevice("n0", 1, "vectors=0")}
		},
		shared: true,
		gone:   `msg="vhostuser: (front end disconnected|ending connection)"`,
	},
}

// TestFaultQEMUKilled: QEMU is killed (SIGKILL) under traffic (a ping
// flood both ways); the sidecar frees what the VM held — fds, the guest
// memory mappings, goroutines — back to what it had before any VM, then
// serves the next VM, which pings; finally SIGTERM under that VM's
// traffic exits within 1 s with status 0 and the counters. For -netdev
// stream and for vhost-user.
func TestFaultQEMUKilled(t *testing.T) {
	for _, fe := range faultFrontEnds {
		t.Run(fe.name, func(t *testing.T) {
			guest.Require(t)
			sock := filepath.Join(guest.SocketDir(t), "net0.sock")
			ps, pn := guest.FreeUDPPort(), guest.FreeUDPPort()
			opts := fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=%d,txsession=0x81,rxsession=0x82", ps, pn)
			native := fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=%d,txsession=0x82,rxsession=0x81", pn, ps)
			sc := startSidecar(t, append(fe.flag(sock), "--l2tpv3", opts)...)
			time.Sleep(200 * time.Millisecond)
			base := sc.sample()
			b := guest.Start(t, guest.Options{Name: "vmB", IPs: []string{"169.254.120.2/24"},
				Args: append(guest.NativeL2TPv3(native), guest.NIC("n0", 2)...)})
			startA := func(name string) *guest.VM {
				return guest.Start(t, guest.Options{Name: name, IPs: []string{"169.254.120.1/24"},
					SharedMemory: fe.shared, Args: fe.vm(sock)})
			}
			a := startA("vmA")
			a.MustWaitReady(bootTimeout)
			b.MustWaitReady(bootTimeout)
			if err := a.Ping("169.254.120.2", 3, pingTimeout); err != nil {
				t.Fatalf("A→B: %v\n%s", err, sc.counters())
			}
			a.MustRun("ping -q -i 0.002 169.254.120.2 >/dev/null 2>&1 &", 10*time.Second)
			b.MustRun("ping -q -i 0.002 169.254.120.1 >/dev/null 2>&1 &", 10*time.Second)
			time.Sleep(2 * time.Second)
			during := sc.sample()
			before := sc.logCount(fe.gone)

			a.Kill()
			if !sc.waitCount(fe.gone, before+1, 10*time.Second) {
				t.Fatalf("the sidecar did not notice QEMU's death (no %q)", fe.gone)
			}
			time.Sleep(time.Second)
			after := sc.sample()
			t.Logf("sidecar before any VM: %s", base)
			t.Logf("with the VM, under traffic: %s", during)
			t.Logf("after QEMU was killed:   %s", after)
			if after.fds != base.fds || after.memfdMaps != 0 || after.goroutines != base.goroutines {
				t.Errorf("leak after QEMU died: %s, before any VM: %s", after, base)
			}
			if fe.shared && during.memfdMaps == 0 {
				t.Errorf("no guest memory mapped while the VM ran: the check proves nothing")
			}

			a2 := startA("vmA2")
			a2.MustWaitReady(bootTimeout)
			if err := a2.Ping("169.254.120.2", 5, pingTimeout); err != nil {
				t.Fatalf("the next VM: %v\n%s", err, sc.counters())
			}
			a2.MustRun("ping -q -i 0.002 169.254.120.2 >/dev/null 2>&1 &", 10*time.Second)
			time.Sleep(time.Second)
			t.Logf("the next VM pings; %s", sc.sample())
			checkSIGTERM(t, sc)
		})
	}
}

// TestFaultPeerGone: the L2TPv3 peer (a VM on QEMU's own l2tpv3) is killed,
// so every frame the sidecar sends earns an ICMP port unreachable; under a
// guest ping flood toward it the sidecar stays near idle (< 20 % of one
// core), logs no error and keeps running; the peer comes back on the same
// port and the ping resumes.
func TestFaultPeerGone(t *testing.T) {
	guest.Require(t)
	sock := filepath.Join(guest.SocketDir(t), "net0.sock")
	ps, pn := guest.FreeUDPPort(), guest.FreeUDPPort()
	opts := fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=%d,txsession=0x91,rxsession=0x92", ps, pn)
	native := fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=%d,txsession=0x92,rxsession=0x91", pn, ps)
	sc := startSidecar(t, "--stream", "unix:"+sock, "--l2tpv3", opts)
	startB := func(name string) *guest.VM {
		return guest.Start(t, guest.Options{Name: name, IPs: []string{"169.254.121.2/24"},
			Args: append(guest.NativeL2TPv3(native), guest.NIC("n0", 2)...)})
	}
	a := guest.Start(t, guest.Options{Name: "vmA", IPs: []string{"169.254.121.1/24"},
		Args: append(guest.StreamNetdev("n0", sock), guest.NIC("n0", 1)...)})
	b := startB("vmB")
	a.MustWaitReady(bootTimeout)
	b.MustWaitReady(bootTimeout)
	if err := a.Ping("169.254.121.2", 3, pingTimeout); err != nil {
		t.Fatalf("A→B: %v\n%s", err, sc.counters())
	}
	a.MustRun("ping -q -i 0.001 169.254.121.2 >/dev/null 2>&1 &", 10*time.Second)
	time.Sleep(time.Second)
	alive := sc.cpuLoad(5 * time.Second)
	txAlive := txPackets(sc.counters())

	b.Kill()
	time.Sleep(time.Second)
	tx0 := txPackets(sc.counters())
	dead := sc.cpuLoad(5 * time.Second)
	tx1 := txPackets(sc.counters())
	t.Logf("guest ping flood (-i 0.001): sidecar CPU %.1f%% of one core with the peer alive, %.1f%% with it gone "+
		"(%d frames sent into the void in 5 s; %d sent in all while it was alive)",
		alive*100, dead*100, tx1-tx0, txAlive)
	if dead > 0.20 {
		t.Errorf("sidecar CPU %.1f%% of one core while the peer is gone, want < 20%%", dead*100)
	}
	if tx1 <= tx0 {
		t.Errorf("the sidecar stopped sending while the peer was gone (%d → %d)", tx0, tx1)
	}
	if strings.Contains(sc.stderr.String(), "level=ERROR") || strings.Contains(sc.stderr.String(), "send_error") {
		t.Errorf("errors while the peer was gone:\n%s", sc.stderr.String())
	}

	b2 := startB("vmB2")
	b2.MustWaitReady(bootTimeout)
	start := time.Now()
	if err := a.Ping("169.254.121.2", 1, pingTimeout); err != nil {
		t.Fatalf("after the peer returned: %v\n%s", err, sc.counters())
	}
	t.Logf("first ping answered %v after the peer was back; %s", time.Since(start).Round(time.Millisecond), sc.counters())
}

// txPackets reads "tx N pkts" from a counters line.
func txPackets(line string) uint64 {
	m := regexp.MustCompile(`tx (\d+) pkts`).FindStringSubmatch(line)
	if m == nil {
		return 0
	}
	n, _ := strconv.ParseUint(m[1], 10, 64)
	return n
}

// TestFaultSIGTERMUnderGoLoad: no VM, but more load than a TCG guest makes:
// a Go "VM" on the stream socket and a Go L2TPv3 peer send flat out both
// ways; SIGTERM ends the sidecar within 1 s, exit status 0, counters
// printed. (TestFaultQEMUKilled does the same under real VMs.)
func TestFaultSIGTERMUnderGoLoad(t *testing.T) {
	dir := guest.SocketDir(t)
	sock := filepath.Join(dir, "s.sock")
	ps, pp := guest.FreeUDPPort(), guest.FreeUDPPort()
	opts := fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=%d,txsession=0xa1,rxsession=0xa2", ps, pp)
	peerCfg, err := l2tp.ParseOptions(fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=%d,txsession=0xa2,rxsession=0xa1", pp, ps))
	if err != nil {
		t.Fatal(err)
	}
	sc := startSidecar(t, "--stream", "unix:"+sock, "--l2tpv3", opts)
	peer, err := l2tp.Open(peerCfg, l2tp.TunnelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	vm, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	go io.Copy(io.Discard, vm)
	go func() { // the peer's receiver
		frames := make([][]byte, peer.BatchSize())
		for {
			if _, err := peer.ReadFrames(frames); err != nil {
				return
			}
		}
	}()
	go func() { // the VM's sender: 64 frames of 1000 bytes a write
		var b []byte
		for range 64 {
			b = binary.BigEndian.AppendUint32(b, 1000)
			b = append(b, make([]byte, 1000)...)
		}
		for {
			if _, err := vm.Write(b); err != nil {
				return
			}
		}
	}()
	go func() { // the peer's sender
		off := peer.Headroom()
		bufs, sizes := make([][]byte, 64), make([]int, 64)
		for i := range bufs {
			bufs[i], sizes[i] = make([]byte, off+1000), 1000
		}
		for peer.WriteFrames(bufs, sizes, off) == nil {
		}
	}()
	time.Sleep(1500 * time.Millisecond)
	before := txPackets(sc.counters())
	time.Sleep(500 * time.Millisecond)
	if after := txPackets(sc.counters()); after <= before {
		t.Fatalf("no load: tx %d → %d", before, after)
	}
	checkSIGTERM(t, sc)
}
