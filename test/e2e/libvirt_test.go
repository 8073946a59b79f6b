package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/internal/testlog"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/test/guest"
)

// TestLibvirtDomain: libvirt's own QEMU driver (virsh define + start) runs
// the TCG domain that `l2tpv3-netdev libvirt-xml --domain` prints, its NIC
// served by a running sidecar over vhost-user; it pings a VM on QEMU's own
// -netdev l2tpv3 both ways and sees the MTU the command derived. The
// sidecar runs as the command's advice says. Both socket
// directions: the sidecar listening (libvirt mode='client' with reconnect,
// and a kill -9 + restart of the sidecar under the running domain) and the
// sidecar dialling (libvirt mode='server').
func TestLibvirtDomain(t *testing.T) {
	guest.Require(t)
	requireLibvirt(t)
	for i, server := range []bool{true, false} {
		name := map[bool]string{true: "sidecar-listens", false: "sidecar-dials"}[server]
		t.Run(name, func(t *testing.T) { testLibvirtDomain(t, server, i) })
	}
}

// testLibvirtDomain runs one direction of TestLibvirtDomain; i keeps the
// two runs' addresses apart.
func testLibvirtDomain(t *testing.T, server bool, i int) {
	dir := libvirtDir(t)
	sock := filepath.Join(dir, "net1.sock")
	ps, pn := guest.FreeUDPPort(), guest.FreeUDPPort()
	// underlay-mtu=1500: an Ethernet path (loopback's route says 65536).
	opts := fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=%d,txsession=0x41,rxsession=0x42,underlay-mtu=1500", ps, pn)
	native := fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=%d,txsession=0x42,rxsession=0x41", pn, ps)
	ipA, ipB := fmt.Sprintf("169.254.%d.1", 120+i), fmt.Sprintf("169.254.%d.2", 120+i)

	vhost := sock
	if !server {
		vhost += ",server=off"
	}
	out, advice := libvirtXML(t, "--id", "net1", "--vhost-user", vhost, "--l2tpv3", opts, "--domain", fmt.Sprintf("l2tpv3-e2e-%d-%d", os.Getpid(), i))
	// The sidecar runs exactly as the advice says (socket owner included).
	cmd := regexp.MustCompile(`(?m)^  l2tpv3-netdev (.*)$`).FindStringSubmatch(advice)
	if cmd == nil || !strings.Contains(cmd[1], ",mtu=1450") || strings.ContainsAny(cmd[1], `'"`) {
		t.Fatalf("advice has no plain sidecar command with mtu=1450:\n%s", advice)
	}
	sidecarArgs := strings.Fields(cmd[1])
	sc := startSidecar(t, sidecarArgs...)

	b := guest.Start(t, guest.Options{Name: "vmB", IPs: []string{ipB + "/24"},
		Args: append(guest.NativeL2TPv3(native), guest.NIC("n0", 2)...)})
	a := startLibvirtDomain(t, out, dir, "l2t.name=vmA l2t.ip="+ipA+"/24")
	b.MustWaitReady(bootTimeout)
	a.waitShell(t, bootTimeout)

	if got := a.run(t, "sed 's/^/MTU=/' /sys/class/net/eth0/mtu", `MTU=(\d+)`, 10*time.Second); got != "1450" {
		t.Errorf("guest eth0 MTU %s, want 1450 (host_mtu through <qemu:override>)", got)
	}
	if err := b.Ping(ipA, 3, pingTimeout); err != nil {
		t.Fatalf("B→libvirt domain: %v\n%s\nconsole: %s", err, sc.counters(), a.console())
	}
	a.mustPing(t, ipB)
	t.Logf("counters: %s", sc.counters())
	if !server {
		return
	}
	// libvirt's <reconnect enabled='yes' timeout='1'/> brings the link back
	// after the sidecar dies and comes back, no domain restart.
	sc.cmd.Process.Signal(syscall.SIGKILL)
	<-sc.done
	start := time.Now()
	sc = startSidecar(t, sidecarArgs...)
	if err := b.Ping(ipA, 3, pingTimeout); err != nil {
		t.Fatalf("after the sidecar restart: %v\n%s", err, sc.counters())
	}
	t.Logf("3 pings answered %v after the sidecar restart, no domain restart; %s", time.Since(start).Round(time.Millisecond), sc.counters())
}

// libvirtURI is the libvirt connection the test uses.
const libvirtURI = "qemu:///system"

// requireLibvirt skips unless virsh reaches libvirt's QEMU driver; when
// libvirtd is installed but not running (a machine without systemd), the
// test starts it, with virtlogd, for its own duration.
func requireLibvirt(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("virsh"); err != nil {
		t.Skip("virsh not installed (Debian: libvirt-clients)")
	}
	if virshReachable() {
		return
	}
	if _, err := exec.LookPath("libvirtd"); err != nil {
		t.Skip("libvirt's QEMU driver is not reachable and libvirtd is not installed (Debian: libvirt-daemon-system, libvirt-daemon-driver-qemu)")
	}
	for _, d := range []string{"virtlogd", "libvirtd"} {
		startDaemon(t, d)
	}
	deadline := time.Now().Add(15 * time.Second)
	for !virshReachable() {
		if time.Now().After(deadline) {
			t.Fatalf("started libvirtd, but virsh -c %s still fails", libvirtURI)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// virshReachable reports whether virsh can talk to the QEMU driver.
func virshReachable() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, "virsh", "-c", libvirtURI, "version").Run() == nil
}

// startDaemon runs a libvirt daemon in the foreground until the test ends.
func startDaemon(t *testing.T, name string) {
	t.Helper()
	log := new(testlog.Buffer)
	cmd := exec.Command(name)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	t.Logf("started %s (pid %d) for this test", name, cmd.Process.Pid)
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		if t.Failed() {
			t.Logf("%s log:\n%s", name, log.String())
		}
	})
}

// virsh runs one virsh command against libvirtURI.
func virsh(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "virsh", append([]string{"-c", libvirtURI}, args...)...).CombinedOutput()
	return string(out), err
}

// qemuUser is the account libvirt runs QEMU as on Debian, if it exists.
func qemuUser() (uid, gid int, ok bool) {
	u, err := user.Lookup("libvirt-qemu")
	if err != nil {
		return 0, 0, false
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return uid, gid, true
}

// libvirtDir is a short directory that libvirt's QEMU may enter and create
// sockets in (console, and the vhost-user socket when it listens).
func libvirtDir(t *testing.T) string {
	dir := guest.SocketDir(t)
	os.Chmod(dir, 0o755)
	if uid, gid, ok := qemuUser(); ok {
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// libvirtXML runs `l2tpv3-netdev libvirt-xml` and returns its stdout (the
// XML) and stderr (the advice).
func libvirtXML(t *testing.T, args ...string) (string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(buildSidecar(t), append([]string{"libvirt-xml"}, args...)...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("libvirt-xml %q: %v\n%s", args, err, stderr.String())
	}
	return stdout.String(), stderr.String()
}

// libvirtGuest is a running libvirt domain and its serial console.
type libvirtGuest struct {
	name string
	conn net.Conn
	mu   sync.Mutex // guards buf
	buf  bytes.Buffer
}

// startLibvirtDomain boots the printed domain with the test guest's kernel
// and initramfs (copied into dir, which libvirt relabels) and a console on
// a unix socket; it is destroyed and undefined at cleanup.
func startLibvirtDomain(t *testing.T, domainXML, dir, cmdline string) *libvirtGuest {
	t.Helper()
	assets, err := guest.EnsureAssets()
	if err != nil {
		t.Fatal(err)
	}
	kernel, initrd := filepath.Join(dir, "kernel"), filepath.Join(dir, "initrd")
	copyFile(t, assets.Kernel, kernel)
	copyFile(t, assets.Initrd, initrd)
	console := filepath.Join(dir, "console.sock")
	boot := fmt.Sprintf("</type>\n    <kernel>%s</kernel>\n    <initrd>%s</initrd>\n    <cmdline>console=ttyS0 quiet panic=-1 %s</cmdline>\n",
		kernel, initrd, cmdline)
	x := strings.Replace(domainXML, "</type>\n", boot, 1)
	x = strings.Replace(x, "<serial type='pty'/>\n    <console type='pty'/>",
		"<serial type='unix'><source mode='bind' path='"+console+"'/></serial>", 1)
	g := &libvirtGuest{name: regexp.MustCompile(`<name>(.*)</name>`).FindStringSubmatch(x)[1]}
	xmlFile := filepath.Join(dir, "domain.xml")
	if err := os.WriteFile(xmlFile, []byte(x), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := virsh("define", xmlFile); err != nil {
		t.Fatalf("virsh define: %v\n%s\n%s", err, out, x)
	}
	t.Cleanup(func() {
		virsh("destroy", g.name)
		virsh("undefine", g.name)
		if g.conn != nil {
			g.conn.Close()
		}
		if t.Failed() {
			t.Logf("domain XML:\n%s\nconsole:\n%s", x, g.console())
		}
	})
	start := time.Now()
	if out, err := virsh("start", g.name); err != nil {
		t.Fatalf("virsh start: %v\n%s\n%s", err, out, qemuLog(g.name))
	}
	t.Logf("virsh start took %v", time.Since(start).Round(time.Millisecond))
	if g.conn, err = net.Dial("unix", console); err != nil {
		t.Fatalf("console: %v", err)
	}
	go func() {
		io.Copy(g, g.conn)
	}()
	return g
}

// qemuLog is the tail of libvirt's log of the domain's QEMU.
func qemuLog(name string) string {
	b, _ := os.ReadFile("/var/log/libvirt/qemu/" + name + ".log")
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// copyFile copies a file that libvirt may relabel, so the shared cache is
// never touched.
func copyFile(t *testing.T, from, to string) {
	b, err := os.ReadFile(from)
	if err == nil {
		err = os.WriteFile(to, b, 0o644)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// Write collects console output.
func (g *libvirtGuest) Write(p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.buf.Write(bytes.ReplaceAll(p, []byte("\r"), nil))
	return len(p), nil
}

// console is everything the console printed since the test connected.
func (g *libvirtGuest) console() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.buf.String()
}

// waitShell waits until the guest's shell answers on the console (the
// boot messages may have gone before the test connected, so it asks).
func (g *libvirtGuest) waitShell(t *testing.T, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		io.WriteString(g.conn, "echo SHELL-$((40+2))\n")
		if g.wait(`SHELL-42`, 2*time.Second) != nil {
			return
		}
	}
	t.Fatalf("%s: no shell on the console within %v:\n%s", g.name, timeout, g.console())
}

// run sends a shell command and returns the first group of want in what
// follows, "" on timeout. The command's echo must not match want.
func (g *libvirtGuest) run(t *testing.T, cmd, want string, timeout time.Duration) string {
	t.Helper()
	from := len(g.console())
	io.WriteString(g.conn, cmd+"\n")
	m := g.waitFrom(from, want, timeout)
	if m == nil {
		t.Errorf("%s: %q: no %s within %v:\n%s", g.name, cmd, want, timeout, g.console()[from:])
		return ""
	}
	return m[1]
}

// mustPing pings addr from the guest and fails unless a reply comes.
func (g *libvirtGuest) mustPing(t *testing.T, addr string) {
	t.Helper()
	got := g.run(t, "ping -c 3 -w 15 "+addr+" | sed -n 's/.* \\([0-9]*\\) packets received.*/RECEIVED=\\1/p'", `RECEIVED=(\d+)`, 30*time.Second)
	if got == "" || got == "0" {
		t.Fatalf("%s → %s: %s packets received", g.name, addr, got)
	}
}

// wait returns the match of pattern in the console output, nil on timeout.
func (g *libvirtGuest) wait(pattern string, timeout time.Duration) []string {
	return g.waitFrom(0, pattern, timeout)
}

// waitFrom is wait on the output after byte from.
func (g *libvirtGuest) waitFrom(from int, pattern string, timeout time.Duration) []string {
	re := regexp.MustCompile(pattern)
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if m := re.FindStringSubmatch(g.console()[from:]); m != nil {
			return m
		}
	}
	return nil
}
