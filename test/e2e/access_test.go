package e2e

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/internal/testlog"
	"golang.org/x/sys/unix"
)

// nobody is the unprivileged user the access tests run the sidecar as.
const nobody = 65534

// unprivilegedSidecar copies the sidecar binary where user nobody may run
// it and returns its path and a socket directory nobody owns.
func unprivilegedSidecar(t *testing.T) (bin, dir string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to switch to user nobody")
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv (util-linux) not installed")
	}
	top, err := os.MkdirTemp("", "l2tacc-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(top) })
	os.Chmod(top, 0o755)
	bin = filepath.Join(top, "l2tpv3-netdev")
	data, err := os.ReadFile(buildSidecar(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	dir = filepath.Join(top, "run")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chown(dir, nobody, nobody)
	return bin, dir
}

// asNobody is the setpriv prefix running a command as nobody, with
// CAP_NET_RAW as its only capability or with none.
func asNobody(netRaw bool) []string {
	args := []string{"setpriv", fmt.Sprintf("--reuid=%d", nobody), fmt.Sprintf("--regid=%d", nobody), "--clear-groups"}
	if netRaw {
		return append(args, "--inh-caps=-all,+net_raw", "--ambient-caps=+net_raw", "--bounding-set=-all,+net_raw")
	}
	return append(args, "--inh-caps=-all", "--bounding-set=-all")
}

// startPrefixed runs the sidecar under a prefix command (setpriv …) and
// waits for its ready line; stopped with SIGTERM at cleanup.
func startPrefixed(t *testing.T, prefix []string, bin string, args ...string) *sidecar {
	t.Helper()
	s := &sidecar{t: t, stderr: new(testlog.Buffer), done: make(chan struct{})}
	argv := append(append(prefix[1:], bin), args...)
	s.cmd = exec.Command(prefix[0], argv...)
	s.cmd.Stderr = s.stderr
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("sidecar log:\n%s", s.stderr.String())
		}
	})
	if !s.waitLog("msg=ready", 10*time.Second) {
		t.Fatalf("sidecar did not become ready:\n%s", s.stderr.String())
	}
	return s
}

// procStatus reads fields of /proc/PID/status.
func procStatus(t *testing.T, pid int, keys ...string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(l, ":")
		for _, want := range keys {
			if k == want {
				out[k] = strings.Join(strings.Fields(v), " ")
			}
		}
	}
	return out
}

// TestAccessIPEncapAsNobodyWithCapNetRaw: the sidecar runs as user nobody
// with CAP_NET_RAW as its only capability (what contrib/l2tpv3-netdev@.service
// grants), opens an IP-encapsulation session, creates its socket file
// 0600 owned by nobody, and carries a frame from the network to the VM.
// Without the capability it refuses to start with an error naming
// CAP_NET_RAW.
func TestAccessIPEncapAsNobodyWithCapNetRaw(t *testing.T) {
	bin, dir := unprivilegedSidecar(t)
	n := [3]byte{127, byte(100 + rand.IntN(100)), byte(rand.IntN(256))}
	side, peer := [4]byte{n[0], n[1], n[2], 1}, [4]byte{n[0], n[1], n[2], 2}
	ip := func(a [4]byte) string { return net.IP(a[:]).String() }
	opts := fmt.Sprintf("src=%s,dst=%s,txsession=0x71,rxsession=0x72", ip(side), ip(peer))
	sock := filepath.Join(dir, "net0.sock")

	t.Run("without", func(t *testing.T) {
		cmd := exec.Command(asNobody(false)[0], append(asNobody(false)[1:], bin, "--stream", "unix:"+sock, "--l2tpv3", opts)...)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() == 0 || !strings.Contains(string(out), "CAP_NET_RAW") {
			t.Fatalf("exit %v, output %q; want a failure naming CAP_NET_RAW", err, out)
		}
		t.Logf("refused: %s", strings.TrimSpace(lastLine(string(out))))
	})

	t.Run("with", func(t *testing.T) {
		s := startPrefixed(t, asNobody(true), bin, "--stream", "unix:"+sock, "--l2tpv3", opts)
		st := procStatus(t, s.cmd.Process.Pid, "Uid", "Gid", "CapEff", "CapPrm", "CapBnd", "NoNewPrivs")
		if st["Uid"] != "65534 65534 65534 65534" || st["CapEff"] != "0000000000002000" || st["CapBnd"] != "0000000000002000" {
			t.Fatalf("process runs with %v; want uid 65534 and CAP_NET_RAW (0x2000) only", st)
		}
		fi, err := os.Stat(sock)
		if err != nil {
			t.Fatal(err)
		}
		if sys := fi.Sys().(*syscall.Stat_t); fi.Mode().Perm() != 0o600 || sys.Uid != nobody {
			t.Fatalf("socket file mode %#o uid %d, want 0600 owned by nobody", fi.Mode().Perm(), sys.Uid)
		}
		vm, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer vm.Close()
		if !s.waitLog("VM connected", 5*time.Second) {
			t.Fatal("the VM connection was not taken")
		}
		frame := bytes.Repeat([]byte{0xab}, 60)
		sendRawL2TP(t, peer, side, append(binary.BigEndian.AppendUint32(nil, 0x72), frame...))
		vm.SetReadDeadline(time.Now().Add(5 * time.Second))
		got := make([]byte, 4+len(frame))
		if _, err := io.ReadFull(vm, got); err != nil || !bytes.Equal(got[4:], frame) {
			t.Fatalf("VM read %x, %v; want the frame", got, err)
		}
		t.Logf("as %s: ready, socket 0600 nobody, frame delivered; %s", st, s.counters())
	})
}

// sendRawL2TP sends one IP protocol 115 datagram from local to remote.
func sendRawL2TP(t *testing.T, local, remote [4]byte, payload []byte) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_L2TP)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: local}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Sendto(fd, payload, 0, &unix.SockaddrInet4{Addr: remote}); err != nil {
		t.Fatal(err)
	}
}

// lastLine is the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
