package guest

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestVM boots one real guest with two NICs and checks the harness's
// promises: configuration from the command line, Run's output and status,
// shell state kept between calls, recovery from a timed-out command, the
// L2TP tools, and Kill.
func TestVM(t *testing.T) {
	vm := Start(t, Options{
		Name: "selftest",
		IPs:  []string{"169.254.60.1/24", "169.254.61.1/24"},
		IP6s: []string{"", "fe80::61:1/64"},
		MTUs: []int{1400},
		L2TP: true,
		QMP:  true,
		// As vhost-user needs; here only to prove the arguments work.
		SharedMemory: true,
		Args: append(append([]string{"-netdev", "hubport,id=n0,hubid=0", "-netdev", "hubport,id=n1,hubid=1"},
			NIC("n0", 0)...), NIC("n1", 1)...),
	})
	vm.MustWaitReady(60 * time.Second)

	check := func(cmd, want string) {
		t.Helper()
		out, err := vm.Run(cmd, 10*time.Second)
		if err != nil || out != want {
			t.Errorf("Run(%q) = %q, %v; want %q", cmd, out, err, want)
		}
	}
	check("hostname", "selftest\n")
	check("cat /sys/class/net/eth0/mtu /sys/class/net/eth0/address", "1400\n"+MAC(0)+"\n")
	check("ip -o -4 addr show dev eth1 | awk '{print $4}'", "169.254.61.1/24\n")
	check("ip -o -6 addr show dev eth1 scope link | grep -c fe80::61:1/64", "1\n")
	check("printf 'a\\nb'", "a\nb")
	check("cd /tmp\nX=5", "")
	check("echo $X $(pwd)", "5 /tmp\n")
	check("cat", "") // stdin is /dev/null, not the console
	check("cat <<EOF\nhere\nEOF", "here\n")
	check("ip l2tp show tunnel && echo ok", "ok\n")

	out, err := vm.Run("echo err >&2; (exit 3)", 10*time.Second)
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Status != 3 || out != "err\n" {
		t.Errorf("exit 3: %q, %v", out, err)
	}

	t0 := time.Now()
	if _, err := vm.Run("sleep 30", 2*time.Second); err == nil {
		t.Error("sleep 30 finished within 2 s")
	}
	check("echo alive", "alive\n")
	if d := time.Since(t0); d > 10*time.Second {
		t.Errorf("recovery from a timeout took %v", d)
	}

	if vm.QMPPath() == "" || !strings.HasPrefix(vm.QMPPath(), vm.Dir()) {
		t.Errorf("QMPPath %q", vm.QMPPath())
	}
	vm.Kill()
	if _, err := vm.Run("true", 5*time.Second); err == nil || !strings.Contains(err.Error(), "QEMU exited") {
		t.Errorf("Run after Kill: %v", err)
	}
}
