package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/internal/testlog"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/test/guest"
)

// TestTwoSidecarsBackToBack: VM A ↔ sidecar ↔ L2TPv3/UDP ↔ sidecar ↔ VM B
// with cookies and RFC 4719 sequencing both ways, jumbo frames (MTU 9000,
// ping -s 8000: QEMU's own l2tpv3 truncates anything over 2048 bytes), a
// capture that tshark decodes as L2TPv3 with the right session and cookie,
// and a kill -9 / restart of one sidecar under the running VMs.
func TestTwoSidecarsBackToBack(t *testing.T) {
	guest.Require(t)
	dir := guest.SocketDir(t)
	sockA, sockB := filepath.Join(dir, "a.sock"), filepath.Join(dir, "b.sock")
	a := guest.Start(t, guest.Options{Name: "vmA", IPs: []string{"169.254.100.1/24"}, MTUs: []int{9000},
		Args: append(qemuStreamServer("n0", sockA), guest.NIC("n0", 1)...)})
	b := guest.Start(t, guest.Options{Name: "vmB", IPs: []string{"169.254.100.2/24"}, MTUs: []int{9000},
		Args: append(qemuStreamServer("n0", sockB), guest.NIC("n0", 2)...)})
	p1, p2 := guest.FreeUDPPort(), guest.FreeUDPPort()
	optsA := fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=%d,txsession=0x1001,rxsession=0x2002,"+
		"txcookie=0xa1a2a3a4,rxcookie=0xb1b2b3b4,seq=both", p1, p2)
	optsB := fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=%d,txsession=0x2002,rxsession=0x1001,"+
		"txcookie=0xb1b2b3b4,rxcookie=0xa1a2a3a4,seq=both", p2, p1)
	streamA := "unix:" + sockA + ",server=off,reconnect-ms=100"
	sa := startSidecar(t, "--stream", streamA, "--l2tpv3", optsA)
	sb := startSidecar(t, "--stream", "unix:"+sockB+",server=off,reconnect-ms=100", "--l2tpv3", optsB)
	a.MustWaitReady(bootTimeout)
	b.MustWaitReady(bootTimeout)

	capture := startCapture(t, fmt.Sprintf("udp port %d", p1))
	if err := a.Ping("169.254.100.2", 3, pingTimeout); err != nil {
		t.Fatalf("A→B: %v\nA: %s\nB: %s", err, sa.counters(), sb.counters())
	}
	if err := b.Ping("169.254.100.1", 2, pingTimeout); err != nil {
		t.Fatal(err)
	}
	checkCapture(t, capture.stop(), p1)

	t.Run("jumbo", func(t *testing.T) {
		out, err := a.Run("ping -c 3 -s 8000 -w 20 169.254.100.2", pingTimeout)
		if err != nil || !strings.Contains(out, "8008 bytes from") {
			t.Fatalf("ping -s 8000: %v\n%s", err, out)
		}
	})

	for _, s := range []*sidecar{sa, sb} {
		c := s.counters()
		t.Logf("counters: %s", c)
		if strings.Contains(c, "drops") {
			t.Errorf("unexpected drops: %s", c)
		}
	}

	// The restarted sender starts its sequence at 0 again: the surviving
	// end drops those as old until five arrive in order, then resyncs (the
	// Linux kernel's rule), so ping needs a few packets to come back.
	t.Run("restart", func(t *testing.T) {
		sa.cmd.Process.Signal(syscall.SIGKILL)
		<-sa.done
		if err := a.Ping("169.254.100.2", 1, 3*time.Second); err == nil {
			t.Fatal("ping went through with the sidecar killed")
		}
		start := time.Now()
		sa = startSidecar(t, "--stream", streamA, "--l2tpv3", optsA)
		if err := a.Ping("169.254.100.2", 10, pingTimeout); err != nil {
			t.Fatalf("after restart: %v\nA: %s\nB: %s", err, sa.counters(), sb.counters())
		}
		t.Logf("ping resumed %v after the restart, VM A not rebooted; B: %s",
			time.Since(start).Round(time.Millisecond), sb.counters())
	})
}

// tsharkCapture is a running tshark writing a pcap of the loopback.
type tsharkCapture struct {
	cmd  *exec.Cmd
	file string
}

// startCapture starts tshark on lo with a capture filter and waits until
// it captures.
func startCapture(t *testing.T, filter string) *tsharkCapture {
	t.Helper()
	if _, err := exec.LookPath("tshark"); err != nil {
		t.Fatalf("tshark not installed (make test installs it): %v", err)
	}
	c := &tsharkCapture{file: filepath.Join(t.TempDir(), "cap.pcap")}
	os.WriteFile(c.file, nil, 0o644) // tshark as root drops privileges; let it write
	os.Chmod(filepath.Dir(c.file), 0o777)
	log := new(testlog.Buffer)
	c.cmd = exec.Command("tshark", "-q", "-i", "lo", "-f", filter, "-w", c.file)
	c.cmd.Stderr = log
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.cmd.Process.Kill(); c.cmd.Wait() })
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(log.String(), "Capturing on") {
		if time.Now().After(deadline) {
			t.Fatalf("tshark did not start: %s", log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return c
}

// stop ends the capture and returns the pcap's path.
func (c *tsharkCapture) stop() string {
	time.Sleep(200 * time.Millisecond) // let the last packets be written
	c.cmd.Process.Signal(syscall.SIGINT)
	c.cmd.Wait()
	return c.file
}

// checkCapture decodes the pcap as L2TPv3 and checks the session, cookie
// and the ICMP inside for the packets the first sidecar sent.
func checkCapture(t *testing.T, file string, port int) {
	t.Helper()
	cmd := exec.Command("tshark", "-r", file, "-d", fmt.Sprintf("udp.port==%d,l2tp", port),
		"-d", "l2tp.pw_type==0,eth", // static sessions announce no pseudowire type
		"-o", "l2tp.cookie_size:4 Byte Cookie", "-o", "l2tp.l2_specific:Default L2-Specific",
		"-Y", fmt.Sprintf("udp.srcport==%d && icmp", port),
		"-T", "fields", "-E", "separator=,", "-e", "l2tp.sid", "-e", "l2tp.cookie", "-e", "icmp.type")
	errs := new(testlog.Buffer)
	cmd.Stderr = errs
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark -r: %v\n%s%s", err, out, errs)
	}
	lines := strings.Fields(strings.TrimSpace(string(out)))
	if len(lines) == 0 {
		t.Fatalf("no L2TPv3-decoded ICMP in the capture:\n%s", out)
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "0x00001001,a1a2a3a4,") {
			t.Fatalf("decoded %q, want session 4097 (0x1001) and cookie a1a2a3a4", l)
		}
	}
	t.Logf("tshark decoded %d L2TPv3 packets with ICMP inside, e.g. %s", len(lines), lines[0])
}
