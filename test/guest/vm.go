package guest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ReadyMarker is the line the guest prints on its console once its network
// is configured and its shell reads commands.
const ReadyMarker = "L2T-READY"

// E2EEnv names the environment variable that enables real-VM tests when
// set to "1" (make test and CI set it).
const E2EEnv = "L2TPV3_E2E"

// AccelEnv names the environment variable that sets the default -accel
// (e.g. "kvm" where /dev/kvm works; "tcg" otherwise).
const AccelEnv = "L2TPV3_GUEST_ACCEL"

// Options describe one guest. Zero values give a 256 MiB TCG guest with no
// network configuration beyond what Args adds.
type Options struct {
	// Name is the guest's host name (l2t.name) and labels its logs; default "vm".
	Name string
	// IPs are IPv4 addresses with prefix length for eth0, eth1, … (l2t.ip,
	// l2t.ip1, …); "" leaves a NIC unaddressed. Use 169.254.0.0/16.
	IPs []string
	// IP6s are extra IPv6 addresses for eth0, eth1, … (l2t.ip6, l2t.ip6_1, …),
	// added without duplicate address detection. Link-local fe80:: addresses
	// exist anyway.
	IP6s []string
	// MTUs set eth0, eth1, … MTUs (l2t.mtu, l2t.mtu1, …); 0 keeps the default.
	MTUs []int
	// Gateway, if set, becomes the IPv4 default route (l2t.gw).
	Gateway string
	// L2TP loads the kernel's L2TP modules at boot (l2t.l2tp=1).
	L2TP bool
	// MemoryMiB is the guest RAM; default 256.
	MemoryMiB int
	// SharedMemory backs guest RAM with a shared memfd, as vhost-user needs.
	SharedMemory bool
	// QMP opens a QMP socket; see VM.QMPPath.
	QMP bool
	// Machine, if set, is passed as -machine.
	Machine string
	// Accel is the -accel value; default $L2TPV3_GUEST_ACCEL, else "tcg".
	Accel string
	// Append are extra kernel command-line words (no spaces inside a word).
	Append []string
	// Args are extra QEMU arguments: -netdev, -device, -chardev, -object …
	Args []string
}

// VM is a running QEMU guest. Its methods are safe for concurrent use; Run
// calls are serialised.
type VM struct {
	// Name is Options.Name.
	Name string

	t       testing.TB
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	console *logBuf // serial console
	stderr  *logBuf // QEMU's standard error
	dir     string  // private directory for sockets, removed by Close
	qmpPath string
	argv    []string
	started time.Time // when QEMU was started

	exited  chan struct{} // closed when QEMU has exited
	waitErr error         // QEMU's exit status; valid once exited is closed

	runMu     sync.Mutex // serialises Run: one command on the console at a time
	closeOnce sync.Once
}

// Require skips the test unless real-VM tests can and should run: it needs
// root (to install packages) and L2TPV3_E2E must not be "0"; -short skips too.
func Require(t testing.TB) {
	t.Helper()
	if os.Getenv(E2EEnv) != "1" {
		t.Skip("real-VM tests run with " + E2EEnv + "=1 (make test sets it); go test ./... stays fast")
	}
	if testing.Short() {
		t.Skip("-short: real-VM tests skipped")
	}
	if os.Geteuid() != 0 {
		t.Skip("real-VM tests need root (they install Debian packages and run QEMU)")
	}
	holdMachine(t)
}

// ParallelEnv names the environment variable that, set to "1", lets test
// processes run guests at the same time as other test processes.
const ParallelEnv = "L2TPV3_GUEST_PARALLEL"

var machine struct {
	once sync.Once
	lock *os.File // held until the process exits
}

// holdMachine makes this test process the only one running guests on the
// machine (go test runs packages in parallel; TCG guests of two packages on
// two cores boot several times slower and time out). The lock is taken by
// the first test that needs a guest and kept until the process exits.
func holdMachine(t testing.TB) {
	t.Helper()
	if os.Getenv(ParallelEnv) == "1" {
		return
	}
	machine.once.Do(func() {
		dir := CacheDir()
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Logf("not serialising guests: %v", err)
			return
		}
		f, err := os.OpenFile(filepath.Join(dir, "machine.lock"), os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			t.Logf("not serialising guests: %v", err)
			return
		}
		start := time.Now()
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
			f.Close()
			t.Logf("not serialising guests: %v", err)
			return
		}
		if d := time.Since(start); d > time.Second {
			t.Logf("waited %v for another test process's guests (%s=1 to run them side by side)",
				d.Round(time.Second), ParallelEnv)
		}
		machine.lock = f
	})
}

// Start boots a guest (it does not wait for it: see WaitReady) and
// registers its Close with t.Cleanup. If the test fails, the QEMU command
// line, its standard error and the console log are written to t.Log.
func Start(t testing.TB, opts Options) *VM {
	t.Helper()
	Require(t)
	a, err := EnsureAssets()
	if err != nil {
		t.Fatal(err)
	}
	vm, err := start(t, a, opts)
	if err != nil {
		t.Fatal(err)
	}
	return vm
}

func start(t testing.TB, a Assets, opts Options) (*VM, error) {
	if opts.Name == "" {
		opts.Name = "vm"
	}
	if opts.MemoryMiB == 0 {
		opts.MemoryMiB = 256
	}
	if opts.Accel == "" {
		opts.Accel = os.Getenv(AccelEnv)
	}
	if opts.Accel == "" {
		opts.Accel = "tcg"
	}
	cmdline, err := kernelCmdline(opts)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "l2tvm-")
	if err != nil {
		return nil, err
	}
	vm := &VM{
		Name:    opts.Name,
		t:       t,
		console: newLogBuf(),
		stderr:  newLogBuf(),
		dir:     dir,
		exited:  make(chan struct{}),
	}
	args := []string{
		"-name", opts.Name,
		"-accel", opts.Accel,
		"-m", strconv.Itoa(opts.MemoryMiB),
		// -nodefaults: no default NIC (QEMU would add user networking on
		// 10.0.2.0/24), no monitor on stdio; the serial console alone is
		// on standard input/output.
		"-nodefaults", "-display", "none", "-serial", "stdio",
		"-no-reboot",
		"-kernel", a.Kernel, "-initrd", a.Initrd,
		"-append", cmdline,
	}
	if opts.Machine != "" {
		args = append(args, "-machine", opts.Machine)
	}
	if opts.SharedMemory {
		args = append(args,
			"-object", fmt.Sprintf("memory-backend-memfd,id=mem,size=%dM,share=on", opts.MemoryMiB),
			"-numa", "node,memdev=mem")
	}
	if opts.QMP {
		vm.qmpPath = filepath.Join(dir, "qmp.sock")
		args = append(args, "-qmp", "unix:"+vm.qmpPath+",server=on,wait=off")
	}
	args = append(args, opts.Args...)
	vm.argv = append([]string{"qemu-system-x86_64"}, args...)

	vm.cmd = exec.Command("qemu-system-x86_64", args...)
	vm.cmd.Stdout = vm.console
	vm.cmd.Stderr = vm.stderr
	// QEMU dies with the test binary, whatever way it ends.
	vm.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if vm.stdin, err = vm.cmd.StdinPipe(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	vm.started = time.Now()
	if err := vm.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("starting QEMU for %s: %w", opts.Name, err)
	}
	go func() {
		vm.waitErr = vm.cmd.Wait()
		close(vm.exited)
	}()
	t.Cleanup(func() {
		vm.Close()
		if t.Failed() {
			vm.dumpLogs()
		}
	})
	return vm, nil
}

// kernelCmdline builds the guest's -append string from opts.
func kernelCmdline(opts Options) (string, error) {
	words := []string{"console=ttyS0", "quiet", "panic=-1", "l2t.name=" + opts.Name}
	suffix := func(i int, sep string) string {
		if i == 0 {
			return ""
		}
		return sep + strconv.Itoa(i)
	}
	for i, ip := range opts.IPs {
		if ip != "" {
			words = append(words, "l2t.ip"+suffix(i, "")+"="+ip)
		}
	}
	for i, ip := range opts.IP6s {
		if ip != "" {
			words = append(words, "l2t.ip6"+suffix(i, "_")+"="+ip)
		}
	}
	for i, mtu := range opts.MTUs {
		if mtu != 0 {
			words = append(words, "l2t.mtu"+suffix(i, "")+"="+strconv.Itoa(mtu))
		}
	}
	if opts.Gateway != "" {
		words = append(words, "l2t.gw="+opts.Gateway)
	}
	if opts.L2TP {
		words = append(words, "l2t.l2tp=1")
	}
	words = append(words, opts.Append...)
	for _, w := range words {
		if w == "" || strings.ContainsAny(w, " \t\n") {
			return "", fmt.Errorf("kernel command-line word %q is empty or has blanks", w)
		}
	}
	return strings.Join(words, " "), nil
}

// QMPPath is the QMP socket's path, or "" without Options.QMP.
func (vm *VM) QMPPath() string { return vm.qmpPath }

// Dir is a short private directory (removed by Close), handy for sockets.
func (vm *VM) Dir() string { return vm.dir }

// Done is closed when QEMU has exited.
func (vm *VM) Done() <-chan struct{} { return vm.exited }

// Console returns the serial console output so far ("\r" removed).
func (vm *VM) Console() string { return vm.console.String() }

// Stderr returns what QEMU wrote to its standard error so far.
func (vm *VM) Stderr() string { return vm.stderr.String() }

// exitErr describes QEMU's exit; call it only after exited is closed.
func (vm *VM) exitErr() error {
	return fmt.Errorf("%s: QEMU exited (%v): %s", vm.Name, vm.waitErr, strings.TrimSpace(vm.stderr.tail(2000)))
}

// WaitReady waits until the guest prints ReadyMarker. It fails early if
// QEMU exits or a module fails to load.
func (vm *VM) WaitReady(timeout time.Duration) error {
	vm.t.Helper()
	err := vm.console.wait(0, time.Now().Add(timeout), vm.exited, vm.exitErr, func(d []byte) bool {
		return bytes.Contains(d, []byte(ReadyMarker+"\n"))
	})
	if errors.Is(err, errTimeout) {
		return fmt.Errorf("%s: no %s within %v; console: %s", vm.Name, ReadyMarker, timeout, vm.console.tail(2000))
	}
	if err != nil {
		return err
	}
	if i := strings.Index(vm.Console(), "L2T-ERROR"); i >= 0 {
		line, _, _ := strings.Cut(vm.Console()[i:], "\n")
		return fmt.Errorf("%s: guest init: %s", vm.Name, line)
	}
	vm.t.Logf("%s: ready %v after QEMU started", vm.Name, time.Since(vm.started).Round(time.Millisecond))
	return nil
}

// MustWaitReady is WaitReady that fails the test on error.
func (vm *VM) MustWaitReady(timeout time.Duration) {
	vm.t.Helper()
	if err := vm.WaitReady(timeout); err != nil {
		vm.t.Fatal(err)
	}
}

// ExitError is Run's error when the command ran but exited non-zero.
type ExitError struct {
	Cmd    string
	Status int
}

func (e *ExitError) Error() string {
	return fmt.Sprintf("guest command %q exited with status %d", e.Cmd, e.Status)
}

// maxLine is what one line sent to the guest may hold: Linux's canonical
// tty line buffer is 4096 bytes.
const maxLine = 4000

// Run runs cmd (one or more lines of busybox sh) in the guest's shell and
// returns what it wrote to stdout and stderr. Its standard input is
// /dev/null; variables and cd persist between calls, as in one shell.
// A non-zero exit status gives an *ExitError with the output. On timeout Run
// sends Ctrl-C to the guest, which ends the command but keeps the shell.
// Note: sh prefers its applets, so "ip" is a shell function calling
// iproute2; inside sh -c use /usr/sbin/ip.
func (vm *VM) Run(cmd string, timeout time.Duration) (string, error) {
	if strings.TrimSpace(cmd) == "" {
		return "", fmt.Errorf("%s: empty command", vm.Name)
	}
	for _, l := range strings.Split(cmd, "\n") {
		if len(l) > maxLine {
			return "", fmt.Errorf("%s: command line longer than %d bytes", vm.Name, maxLine)
		}
	}
	vm.runMu.Lock()
	defer vm.runMu.Unlock()

	var tb [8]byte
	rand.Read(tb[:])
	tok := hex.EncodeToString(tb[:])
	begin := []byte("L2TB" + tok + "\n")
	end := []byte("\nL2TE" + tok + ":")
	from := vm.console.Len()
	// The markers are assembled by printf, so the guest's echo (if any)
	// of this text can never look like them.
	script := fmt.Sprintf("printf 'L2TB%%s\\n' %s\n{\n%s\n} </dev/null\nprintf '\\nL2TE%%s:%%d\\n' %s $?\n", tok, cmd, tok)
	select {
	case <-vm.exited:
		return "", vm.exitErr()
	default:
	}
	if _, err := io.WriteString(vm.stdin, script); err != nil {
		select {
		case <-vm.exited:
			return "", vm.exitErr()
		case <-time.After(time.Second):
		}
		return "", fmt.Errorf("%s: writing to the console: %w", vm.Name, err)
	}

	var out string
	status := -1
	err := vm.console.wait(from, time.Now().Add(timeout), vm.exited, vm.exitErr, func(d []byte) bool {
		b := bytes.Index(d, begin)
		if b < 0 {
			return false
		}
		rest := d[b+len(begin):]
		e := bytes.Index(rest, end)
		if e < 0 {
			return false
		}
		num, _, ok := bytes.Cut(rest[e+len(end):], []byte("\n"))
		if !ok {
			return false
		}
		status, _ = strconv.Atoi(string(num))
		out = string(rest[:e])
		return true
	})
	if errors.Is(err, errTimeout) {
		io.WriteString(vm.stdin, "\x03")
		return "", fmt.Errorf("%s: %q did not finish within %v; console: %s", vm.Name, cmd, timeout, vm.console.tail(1000))
	}
	if err != nil {
		return "", err
	}
	if status != 0 {
		return out, &ExitError{Cmd: cmd, Status: status}
	}
	return out, nil
}

// MustRun is Run that fails the test on error (showing the output).
func (vm *VM) MustRun(cmd string, timeout time.Duration) string {
	vm.t.Helper()
	out, err := vm.Run(cmd, timeout)
	if err != nil {
		vm.t.Fatalf("%s: %v\n%s", vm.Name, err, out)
	}
	return out
}

// Ping sends count echo requests, one a second, to addr with busybox ping
// and succeeds if at least one is answered before timeout (at least 1 s).
// An IPv6 link-local addr needs its zone: "fe80::1%eth0".
func (vm *VM) Ping(addr string, count int, timeout time.Duration) error {
	secs := int((timeout + time.Second - 1) / time.Second)
	if secs < 1 {
		secs = 1
	}
	cmd := fmt.Sprintf("ping -c %d -w %d %s", count, secs, addr)
	out, err := vm.Run(cmd, timeout+10*time.Second)
	// busybox ping exits 1 on partial loss: judge by the replies instead.
	if m := pingReceived.FindStringSubmatch(out); m != nil && m[1] != "0" {
		return nil
	}
	if err == nil {
		err = errors.New("no reply")
	}
	return fmt.Errorf("%s: %w\n%s", vm.Name, err, out)
}

// pingReceived finds busybox ping's count of replies.
var pingReceived = regexp.MustCompile(`(\d+) packets received`)

// Kill ends QEMU at once with SIGKILL, as a crash would, and waits for it.
func (vm *VM) Kill() {
	if vm.cmd.Process != nil {
		vm.cmd.Process.Kill()
	}
	<-vm.exited
}

// Close stops QEMU (SIGTERM, then SIGKILL after 3 s) and removes Dir. It is
// safe to call more than once; Start registers it with t.Cleanup.
func (vm *VM) Close() error {
	vm.closeOnce.Do(func() {
		vm.stdin.Close()
		select {
		case <-vm.exited:
		default:
			vm.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-vm.exited:
			case <-time.After(3 * time.Second):
				vm.Kill()
			}
		}
		os.RemoveAll(vm.dir)
	})
	return nil
}

// dumpLogs writes the command line, QEMU's stderr and the console to t.Log.
func (vm *VM) dumpLogs() {
	const max = 64 << 10
	vm.t.Logf("%s: command: %s", vm.Name, strings.Join(vm.argv, " "))
	if s := strings.TrimSpace(vm.stderr.tail(max)); s != "" {
		vm.t.Logf("%s: QEMU stderr:\n%s", vm.Name, s)
	}
	vm.t.Logf("%s: console:\n%s", vm.Name, vm.console.tail(max))
}
