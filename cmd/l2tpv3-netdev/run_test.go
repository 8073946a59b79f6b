package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/internal/testlog"
)

var (
	daemonBinOnce sync.Once
	daemonBin     string
	daemonBinErr  error
)

// buildDaemon compiles the command once for the tests that run it.
func buildDaemon(t *testing.T) string {
	t.Helper()
	daemonBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "l2tpv3-netdev-cmd-test-")
		if err != nil {
			daemonBinErr = err
			return
		}
		daemonBin = filepath.Join(dir, "l2tpv3-netdev")
		if out, err := exec.Command("go", "build", "-o", daemonBin, ".").CombinedOutput(); err != nil {
			daemonBinErr = fmt.Errorf("build: %v\n%s", err, out)
		}
	})
	if daemonBinErr != nil {
		t.Fatal(daemonBinErr)
	}
	return daemonBin
}

// daemonProc is a running daemon.
type daemonProc struct {
	cmd  *exec.Cmd
	log  *testlog.Buffer
	done chan error
}

// startDaemon runs the daemon with args; it is stopped at cleanup.
func startDaemon(t *testing.T, args ...string) *daemonProc {
	t.Helper()
	d := &daemonProc{cmd: exec.Command(buildDaemon(t), args...), log: new(testlog.Buffer), done: make(chan error, 1)}
	d.cmd.Stderr = d.log
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.done <- d.cmd.Wait() }()
	t.Cleanup(func() {
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(5 * time.Second):
			d.cmd.Process.Kill()
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", d.log.String())
		}
	})
	return d
}

// waitLog waits for the daemon's log to contain want.
func (d *daemonProc) waitLog(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(d.log.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("log lacks %q:\n%s", want, d.log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// portsConfig writes a config of a good stream port and a broken one,
// with an admin socket when admin is not "".
func portsConfig(t *testing.T, dir, admin string) string {
	var b strings.Builder
	if admin != "" {
		fmt.Fprintf(&b, "admin = %q\n", admin)
	}
	fmt.Fprintf(&b, `
[[port]]
name = "good"
stream = "unix:%s/good.sock"
l2tpv3 = "src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=9,txsession=0x10,rxsession=0x20"

[[port]]
name = "broken"
stream = "unix:%s/broken.sock"
l2tpv3 = "src=127.0.0.1,udp=on,srcport=%d,dstport=9,txsession=0x11"
`, dir, freePort(t), dir, freePort(t))
	return writeConfig(t, b.String())
}

// A config with one broken port starts the other and names the broken
// one; the CLI lists, adds and deletes ports over the admin socket, whose
// access keys shape its file and are ignored by the CLI given the same
// string.
func TestDaemonConfigAndCLI(t *testing.T) {
	dir := t.TempDir()
	adminPath := filepath.Join(dir, "run", "admin.sock")
	admin := fmt.Sprintf("%s,group=%d,mode=0660", adminPath, os.Getgid())
	d := startDaemon(t, "--config", portsConfig(t, dir, admin))
	d.waitLog(t, "msg=ready port=good session=32")
	if fi, err := os.Stat(adminPath); err != nil || fi.Mode().Perm() != 0o660 {
		t.Errorf("admin socket: %v, %v; want mode 0660", fi, err)
	}
	d.waitLog(t, `msg="port refused" port=broken`)
	if !strings.Contains(d.log.String(), "missing dst") {
		t.Errorf("the refusal does not say why:\n%s", d.log.String())
	}

	var out, errOut bytes.Buffer
	if code := realMain([]string{"ports", "--admin", admin}, &out, &errOut); code != 0 {
		t.Fatalf("ports: exit %d: %s", code, errOut.String())
	}
	for _, want := range []string{"NAME", "good", "running", "broken", "failed", "missing dst"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("ports table lacks %q:\n%s", want, out.String())
		}
	}

	sock := filepath.Join(dir, "extra.sock")
	opts := fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=9,txsession=5", freePort(t))
	add := []string{"port", "add", "extra", "--stream", "unix:" + sock, "--l2tpv3", opts, "--admin", admin}
	out.Reset()
	if code := realMain(add, &out, &errOut); code != 0 || !strings.Contains(out.String(), "port extra added") {
		t.Fatalf("port add: exit %d: %s%s", code, out.String(), errOut.String())
	}
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("socket of the added port: %v", err)
	}
	errOut.Reset()
	if code := realMain(add, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "port extra: a port of that name exists") {
		t.Errorf("duplicate add: exit %d: %s", code, errOut.String())
	}
	if code := realMain([]string{"port", "del", "extra", "--admin", admin}, &out, &errOut); code != 0 {
		t.Fatalf("port del: exit %d: %s", code, errOut.String())
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket after del: %v", err)
	}
	errOut.Reset()
	if code := realMain([]string{"port", "del", "extra", "--admin", admin}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "no such port") {
		t.Errorf("second del: exit %d: %s", code, errOut.String())
	}
}

// Without an admin socket, a config where nothing can start exits 1
// naming the ports; with one, the daemon stays up to take ports.
func TestDaemonNothingStarts(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, fmt.Sprintf(`
[[port]]
name = "a"
stream = "unix:%s/a.sock"
l2tpv3 = "src=127.0.0.1,udp=on,srcport=1,dstport=9,txsession=1"
`, dir))
	out, err := exec.Command(buildDaemon(t), "--config", cfg).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "port=a") {
		t.Errorf("exit %v:\n%s", err, out)
	}
	admin := filepath.Join(dir, "admin.sock")
	d := startDaemon(t, "--config", cfg, "--admin", admin)
	d.waitLog(t, "admin API ready")
	d.waitLog(t, `msg="port refused" port=a`)
	time.Sleep(200 * time.Millisecond)
	select {
	case err := <-d.done:
		t.Fatalf("daemon with an admin socket exited: %v", err)
	default:
	}
}

// --admin alone starts an empty daemon (no config, no port flags) that
// port add fills; it stays up with no port.
func TestDaemonAdminAloneStartsEmpty(t *testing.T) {
	dir := t.TempDir()
	admin := filepath.Join(dir, "admin.sock")
	d := startDaemon(t, "--admin", admin)
	d.waitLog(t, "admin API ready")
	var out, errOut bytes.Buffer
	if code := realMain([]string{"ports", "--admin", admin}, &out, &errOut); code != 0 {
		t.Fatalf("ports: exit %d: %s%s", code, out.String(), errOut.String())
	}
	if strings.Contains(out.String(), "port0") {
		t.Fatalf("an empty daemon lists a port:\n%s", out.String())
	}
	sock := filepath.Join(dir, "added.sock")
	opts := fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=9,txsession=5", freePort(t))
	add := []string{"port", "add", "added", "--stream", "unix:" + sock, "--l2tpv3", opts, "--admin", admin}
	if code := realMain(add, &out, &errOut); code != 0 {
		t.Fatalf("port add: exit %d: %s%s", code, out.String(), errOut.String())
	}
	out.Reset()
	if code := realMain([]string{"ports", "--admin", admin}, &out, &errOut); code != 0 || !strings.Contains(out.String(), "added") {
		t.Fatalf("ports after add: exit %d:\n%s%s", code, out.String(), errOut.String())
	}
	select {
	case err := <-d.done:
		t.Fatalf("daemon exited: %v", err)
	default:
	}
}
