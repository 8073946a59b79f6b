package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/internal/testlog"
)

// sidecarBin is the l2tpv3-netdev binary built once for the whole run.
var (
	sidecarOnce sync.Once
	sidecarBin  string
	sidecarErr  error
)

// buildSidecar compiles cmd/l2tpv3-netdev into a temporary directory.
func buildSidecar(t testing.TB) string {
	t.Helper()
	sidecarOnce.Do(func() {
		dir, err := os.MkdirTemp("", "l2tpv3-netdev-e2e-")
		if err != nil {
			sidecarErr = err
			return
		}
		sidecarBin = filepath.Join(dir, "l2tpv3-netdev")
		out, err := exec.Command("go", "build", "-o", sidecarBin, "../../cmd/l2tpv3-netdev").CombinedOutput()
		if err != nil {
			sidecarErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if sidecarErr != nil {
		t.Fatal(sidecarErr)
	}
	return sidecarBin
}

// sidecar is a running l2tpv3-netdev process.
type sidecar struct {
	t      testing.TB
	cmd    *exec.Cmd
	stderr *testlog.Buffer
	done   chan struct{}
}

// startSidecar runs l2tpv3-netdev with args and waits for its ready line;
// it is stopped with SIGTERM at cleanup and its log shown on failure.
func startSidecar(t testing.TB, args ...string) *sidecar {
	t.Helper()
	return startSidecarIn(t, "", args...)
}

// startSidecarIn is startSidecar inside network namespace ns ("" for none;
// ip netns exec execs the sidecar, so signals reach it).
func startSidecarIn(t testing.TB, ns string, args ...string) *sidecar {
	t.Helper()
	s := &sidecar{t: t, stderr: new(testlog.Buffer), done: make(chan struct{})}
	argv := append([]string{buildSidecar(t), "--log-level", "debug"}, args...)
	if ns != "" {
		argv = append([]string{"ip", "netns", "exec", ns}, argv...)
	}
	s.cmd = exec.Command(argv[0], argv[1:]...)
	s.cmd.Stderr = s.stderr
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("sidecar %v log:\n%s", args, s.stderr.String())
		}
	})
	if !s.waitLog("msg=ready", 10*time.Second) {
		t.Fatalf("sidecar did not become ready:\n%s", s.stderr.String())
	}
	return s
}

// waitLog waits until the sidecar's log contains want.
func (s *sidecar) waitLog(want string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if strings.Contains(s.stderr.String(), want) {
			return true
		}
		select {
		case <-s.done:
			return strings.Contains(s.stderr.String(), want)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return false
}

// stop sends SIGTERM, waits for the exit and returns the whole log.
func (s *sidecar) stop() string {
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		s.t.Errorf("sidecar did not exit within 5 s of SIGTERM")
		s.cmd.Process.Kill()
		<-s.done
	}
	return s.stderr.String()
}

// counters asks for the counters with SIGUSR1 and returns the newest line.
func (s *sidecar) counters() string {
	n := strings.Count(s.stderr.String(), "msg=counters")
	s.cmd.Process.Signal(syscall.SIGUSR1)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && strings.Count(s.stderr.String(), "msg=counters") == n {
		time.Sleep(10 * time.Millisecond)
	}
	lines := regexp.MustCompile(`(?m)^.*msg=counters.*$`).FindAllString(s.stderr.String(), -1)
	if len(lines) == 0 {
		return ""
	}
	return lines[len(lines)-1]
}

// qemuStreamServer returns -netdev stream arguments with QEMU as the server
// on path: QEMU 7.2 has no client reconnect, so the sidecar connects (and
// reconnects) to it, and a VM survives sidecar restarts.
func qemuStreamServer(id, path string) []string {
	return []string{"-netdev", "stream,id=" + id + ",server=on,addr.type=unix,addr.path=" + path}
}
