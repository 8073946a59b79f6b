package guest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// readCPIO parses a newc archive into name → entry, failing on any
// malformation the kernel would reject.
type cpioEntry struct {
	mode       uint32
	rmaj, rmin uint32
	data       string
}

func readCPIO(t *testing.T, b []byte) (map[string]cpioEntry, []string) {
	t.Helper()
	entries := map[string]cpioEntry{}
	var order []string
	off := 0
	field := func(i int) uint32 {
		v, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
		if err != nil {
			t.Fatalf("offset %d field %d: %v", off, i, err)
		}
		return uint32(v)
	}
	pad := func(n int) int { return (n + 3) &^ 3 }
	for {
		if off%4 != 0 || string(b[off:off+6]) != "070701" {
			t.Fatalf("bad header at %d", off)
		}
		mode, size, rmaj, rmin, nameLen := field(1), int(field(6)), field(9), field(10), int(field(11))
		name := string(b[off+110 : off+110+nameLen-1])
		if b[off+110+nameLen-1] != 0 {
			t.Fatalf("%s: name not NUL-terminated", name)
		}
		off = pad(off + 110 + nameLen)
		data := string(b[off : off+size])
		off = pad(off + size)
		if name == "TRAILER!!!" {
			if off != len(b) {
				t.Fatalf("%d bytes after the trailer", len(b)-off)
			}
			return entries, order
		}
		entries[name] = cpioEntry{mode: mode, rmaj: rmaj, rmin: rmin, data: data}
		order = append(order, name)
	}
}

func TestCPIOWriter(t *testing.T) {
	var buf bytes.Buffer
	c := newCPIOWriter(&buf)
	c.mkdirAll("/dev")
	c.charDev("/dev/console", 0o600, 5, 1)
	c.file("/a/b/c.txt", 0o644, []byte("hello"))
	c.file("/a/b/d", 0o755, []byte("1234"))
	c.symlink("/bin/sh", "busybox")
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	e, order := readCPIO(t, buf.Bytes())
	want := []string{"dev", "dev/console", "a", "a/b", "a/b/c.txt", "a/b/d", "bin", "bin/sh"}
	if fmt.Sprint(order) != fmt.Sprint(want) {
		t.Errorf("order %v, want %v (parents first, once)", order, want)
	}
	if got := e["a/b/c.txt"]; got.data != "hello" || got.mode != cpioRegular|0o644 {
		t.Errorf("c.txt = %+v", got)
	}
	if got := e["dev/console"]; got.mode != cpioCharDev|0o600 || got.rmaj != 5 || got.rmin != 1 {
		t.Errorf("console = %+v", got)
	}
	if got := e["bin/sh"]; got.data != "busybox" || got.mode&0o170000 != cpioSymlink {
		t.Errorf("sh = %+v", got)
	}
}

func TestKernelCmdline(t *testing.T) {
	got, err := kernelCmdline(Options{
		Name: "vmA", IPs: []string{"169.254.100.1/24", "", "169.254.101.1/24"},
		IP6s: []string{"", "fe80::9/64"}, MTUs: []int{1400, 9000}, Gateway: "169.254.100.254",
		L2TP: true, Append: []string{"x=y"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "console=ttyS0 quiet panic=-1 l2t.name=vmA l2t.ip=169.254.100.1/24 l2t.ip2=169.254.101.1/24 " +
		"l2t.ip6_1=fe80::9/64 l2t.mtu=1400 l2t.mtu1=9000 l2t.gw=169.254.100.254 l2t.l2tp=1 x=y"
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if _, err := kernelCmdline(Options{Name: "a b"}); err == nil {
		t.Error("a name with a blank was accepted")
	}
}

func TestArgs(t *testing.T) {
	if got := NativeL2TPv3("src=127.0.0.1,dst=127.0.0.1,txsession=1"); fmt.Sprint(got) !=
		"[-netdev l2tpv3,id=n0,src=127.0.0.1,dst=127.0.0.1,txsession=1]" {
		t.Errorf("NativeL2TPv3 = %q", got)
	}
	if got := NativeL2TPv3("id=n1,src=::1"); got[1] != "l2tpv3,id=n1,src=::1" {
		t.Errorf("NativeL2TPv3 with id = %q", got)
	}
	if got := VirtioNetDevice("n0", 258, "vectors=0"); got != "virtio-net-pci,netdev=n0,mac=52:54:00:4c:01:02,romfile=,vectors=0" {
		t.Errorf("VirtioNetDevice = %q", got)
	}
	if got := VhostUserNetdev("n0", "/tmp/s.sock", "queues=2"); fmt.Sprint(got) !=
		"[-chardev socket,id=n0-chr,path=/tmp/s.sock -netdev vhost-user,id=n0,chardev=n0-chr,queues=2]" {
		t.Errorf("VhostUserNetdev = %q", got)
	}
	seen := map[string]bool{}
	for i := 0; i < 1000; i++ {
		m := MAC(i)
		if seen[m] || !regexp.MustCompile(`^52:54:00:4c:[0-9a-f]{2}:[0-9a-f]{2}$`).MatchString(m) {
			t.Fatalf("MAC(%d) = %s", i, m)
		}
		seen[m] = true
	}
	ports := map[int]bool{}
	for i := 0; i < 50; i++ {
		p := FreeUDPPort()
		if ports[p] || p <= 0 {
			t.Fatalf("FreeUDPPort gave %d twice", p)
		}
		ports[p] = true
	}
}

func TestLoadOrder(t *testing.T) {
	km := &kernelModules{
		deps: map[string][]string{
			"virtio_net": {"net_failover", "virtio", "virtio_ring"}, "net_failover": {"failover"},
			"virtio_pci": {"virtio_pci_modern_dev", "virtio", "virtio_ring"}, "virtio": {"virtio_ring"},
			"l2tp_eth": {"l2tp_netlink", "l2tp_core"}, "l2tp_netlink": {"l2tp_core"},
			"l2tp_core": {"udp_tunnel", "ip6_udp_tunnel"},
		},
		builtin: map[string]bool{"virtio_pci_modern_dev": true},
	}
	seen := map[string]bool{}
	net := km.loadOrder([]string{"virtio_pci", "virtio_net"}, seen)
	l2tp := km.loadOrder([]string{"l2tp_eth", "virtio"}, seen)
	if got, want := fmt.Sprint(net), "[virtio_ring virtio virtio_pci failover net_failover virtio_net]"; got != want {
		t.Errorf("net order %s, want %s", got, want)
	}
	if got, want := fmt.Sprint(l2tp), "[udp_tunnel ip6_udp_tunnel l2tp_core l2tp_netlink l2tp_eth]"; got != want {
		t.Errorf("l2tp order %s, want %s", got, want)
	}
}

// fakeShell plays the guest's shell for Run: it reads what Run writes and
// answers the way busybox sh would, echoing the input first (as a tty with
// echo on would) to prove the markers cannot be matched by the echo.
func fakeShell(in io.Reader, out io.Writer, answer func(cmd string) (string, int)) {
	r := bufio.NewReader(in)
	tokRE := regexp.MustCompile(`^printf 'L2TB%s\\n' ([0-9a-f]+)$`)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		io.WriteString(out, line) // echo
		m := tokRE.FindStringSubmatch(strings.TrimSuffix(line, "\n"))
		if m == nil {
			continue
		}
		var cmd []string
		r.ReadString('\n') // "{"
		for {
			l, _ := r.ReadString('\n')
			io.WriteString(out, l)
			if l == "} </dev/null\n" {
				break
			}
			cmd = append(cmd, strings.TrimSuffix(l, "\n"))
		}
		end, _ := r.ReadString('\n')
		io.WriteString(out, end)
		text, status := answer(strings.Join(cmd, "\n"))
		fmt.Fprintf(out, "\r\nL2TB%s\r\n%s\nL2TE%s:%d\r\n", m[1], text, m[1], status)
	}
}

func TestRunMarkers(t *testing.T) {
	inR, inW := io.Pipe()
	vm := &VM{Name: "fake", t: t, stdin: inW, console: newLogBuf(), stderr: newLogBuf(), exited: make(chan struct{})}
	go fakeShell(inR, vm.console, func(cmd string) (string, int) {
		switch cmd {
		case "true":
			return "", 0
		case "printf 'no newline'":
			return "no newline", 0
		case "false\nfalse":
			return "two\nlines\n", 1
		case "sleep 100":
			select {}
		}
		return "unknown " + cmd + "\n", 127
	})
	defer inW.Close()

	if out, err := vm.Run("true", time.Second); out != "" || err != nil {
		t.Errorf("true: %q, %v", out, err)
	}
	if out, err := vm.Run("printf 'no newline'", time.Second); out != "no newline" || err != nil {
		t.Errorf("printf: %q, %v", out, err)
	}
	out, err := vm.Run("false\nfalse", time.Second)
	var ee *ExitError
	if out != "two\nlines\n" || !errors.As(err, &ee) || ee.Status != 1 {
		t.Errorf("false: %q, %v", out, err)
	}
	if _, err := vm.Run(strings.Repeat("x", maxLine+1), time.Second); err == nil {
		t.Error("an over-long line was accepted")
	}
	go func() { time.Sleep(50 * time.Millisecond); close(vm.exited) }()
	vm.waitErr = errors.New("killed")
	if _, err := vm.Run("sleep 100", 5*time.Second); err == nil || !strings.Contains(err.Error(), "QEMU exited") {
		t.Errorf("Run on a dead VM: %v", err)
	}
}

func TestKernelPackageName(t *testing.T) {
	for in, want := range map[string]string{
		"linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n": "linux-image-6.1.0-56-amd64",
		"linux-image-6.1.0-56-amd64_6.1.192-2_amd64.deb":             "linux-image-6.1.0-56-amd64",
		"linux-image-6.12.9+deb13-amd64_6.12.9-1_amd64.deb":          "linux-image-6.12.9+deb13-amd64",
		"linux-image-amd64": "",
	} {
		if got := kernelPkgRE.FindString(in); got != want {
			t.Errorf("%q: got %q, want %q", in, got, want)
		}
	}
}
