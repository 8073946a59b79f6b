// Command demo boots two tiny VMs and links them through l2tpv3-netdev:
// VM A's NIC is a QEMU -netdev stream socket served by the sidecar, VM B
// uses QEMU's own -netdev l2tpv3, and the pseudowire between them is
// L2TPv3 over UDP on 127.0.0.1. It prints each command and the ping.
// Run it with `make demo` (as root: it installs QEMU if needed).
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/test/guest"
)

// main runs the demo and exits non-zero if the VMs could not ping.
func main() {
	testing.Init() // the guest helpers read testing.Short
	flag.Parse()
	tb := newRunner()
	defer tb.finish()
	os.Setenv(guest.E2EEnv, "1")
	if err := demo(tb); err != nil {
		tb.Fatalf("demo failed: %v", err)
	}
	fmt.Println("\nDemo passed: VM A (sidecar, -netdev stream) and VM B (QEMU -netdev l2tpv3) ping each other over L2TPv3/UDP.")
}

// demo is the scenario: boot, wire, ping both ways, show counters.
func demo(tb *runner) error {
	bin, err := sidecarBinary()
	if err != nil {
		return err
	}
	dir := guest.SocketDir(tb)
	sock := filepath.Join(dir, "vmA-net0.sock")
	pa, pb := guest.FreeUDPPort(), guest.FreeUDPPort()
	sidecarOpts := fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=%d,txsession=0x10,rxsession=0x20,counter=on", pa, pb)
	nativeOpts := fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=%d,txsession=0x20,rxsession=0x10,counter=on", pb, pa)

	step("Booting VM A (169.254.100.1) with its NIC on a -netdev stream socket")
	argsA := []string{"-netdev", "stream,id=n0,server=on,addr.type=unix,addr.path=" + sock, "-device", guest.VirtioNetDevice("n0", 1)}
	fmt.Println("  qemu-system-x86_64 … " + strings.Join(argsA, " "))
	a := guest.Start(tb, guest.Options{Name: "vmA", IPs: []string{"169.254.100.1/24"}, Args: argsA})

	step("Booting VM B (169.254.100.2) on QEMU's own -netdev l2tpv3")
	argsB := append(guest.NativeL2TPv3(nativeOpts), "-device", guest.VirtioNetDevice("n0", 2))
	fmt.Println("  qemu-system-x86_64 … " + strings.Join(argsB, " "))
	b := guest.Start(tb, guest.Options{Name: "vmB", IPs: []string{"169.254.100.2/24"}, Args: argsB})

	step("Starting the sidecar: VM A's socket ⇄ L2TPv3/UDP ⇄ VM B")
	sc := exec.Command(bin, "--stream", "unix:"+sock+",server=off", "--l2tpv3", sidecarOpts)
	fmt.Println("  " + strings.Join(sc.Args, " "))
	sc.Stderr = os.Stderr
	if err := sc.Start(); err != nil {
		return err
	}
	tb.Cleanup(func() { sc.Process.Signal(syscall.SIGTERM); sc.Wait() })

	if err := a.WaitReady(90 * time.Second); err != nil {
		return err
	}
	if err := b.WaitReady(90 * time.Second); err != nil {
		return err
	}
	step("VM A pings VM B through the sidecar")
	out, err := a.Run("ping -c 5 -w 20 169.254.100.2", 40*time.Second)
	fmt.Print(indent(out))
	if err != nil {
		return fmt.Errorf("ping A→B: %w", err)
	}
	step("VM B pings VM A back")
	out, err = b.Run("ping -c 3 -w 20 169.254.100.1", 40*time.Second)
	fmt.Print(indent(out))
	if err != nil {
		return fmt.Errorf("ping B→A: %w", err)
	}
	step("The sidecar's counters (SIGUSR1)")
	sc.Process.Signal(syscall.SIGUSR1)
	time.Sleep(300 * time.Millisecond)
	return nil
}

// sidecarBinary finds bin/l2tpv3-netdev (make build) or builds it.
func sidecarBinary() (string, error) {
	const bin = "bin/l2tpv3-netdev"
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	out, err := exec.Command("go", "build", "-o", bin, "./cmd/l2tpv3-netdev").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
}

// step prints a heading for one part of the demo.
func step(s string) { fmt.Printf("\n==> %s\n", s) }

// indent shifts command output right so it stands apart from headings.
func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ") + "\n"
}
