package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/backend"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/l2tp"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/qmp"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/test/guest"
)

// TestSharedTunnelKernelPeer: ONE Linux kernel tunnel (in a guest, reached
// through QEMU user networking, set up with what `peer-config --for linux`
// prints for the three ports) carries three sessions to three TCG VMs
// whose ports share one sidecar UDP port. All three ping their session's
// kernel interface. Then VM C is stopped (QMP stop) and the kernel floods
// C's address while A and B ping flat out: A and B lose no echo, C's
// frames are dropped and counted vm_slow on C's port only, and C answers
// again after QMP cont.
func TestSharedTunnelKernelPeer(t *testing.T) {
	guest.Require(t)
	dir := guest.SocketDir(t)
	admin := filepath.Join(dir, "admin.sock")
	port, hostPort := guest.FreeUDPPort(), guest.FreeUDPPort()
	names := []string{"sa", "sb", "sc"}
	var config, peerArgs []string
	config = append(config, fmt.Sprintf("admin = %q\n", admin))
	vms := make([]*guest.VM, 3)
	for i, name := range names {
		opts := fmt.Sprintf("src=127.0.0.1,srcport=%d,dst=127.0.0.1,dstport=%d,udp=on,txsession=%#x,rxsession=%#x",
			port, hostPort, 0x50+i, 0x60+i)
		c, err := l2tp.ParseOptions(opts)
		if err != nil {
			t.Fatal(err)
		}
		peerArgs = append(peerArgs, "--l2tpv3", slirpView(c).String())
		sock := filepath.Join(dir, name+".sock")
		vms[i] = guest.Start(t, guest.Options{Name: "vm" + name, IPs: []string{fmt.Sprintf("169.254.%d.1/24", 141+i)},
			QMP: i == 2, Args: append(qemuStreamServer("n0", sock), guest.NIC("n0", 1+i)...)})
		config = append(config, fmt.Sprintf("[[port]]\nname = %q\nstream = \"unix:%s,server=off\"\nl2tpv3 = %q\n", name, sock, opts))
	}
	// The kernel peer runs what peer-config prints for the three ports (one
	// tunnel, its three sessions), then addresses l2tpeth1 and 2 and makes
	// C's neighbour entry static: the flood toward the stopped VM is
	// unicast from the first frame to the last.
	out, err := exec.Command(buildSidecar(t), append([]string{"peer-config", "--for", "linux"}, peerArgs...)...).Output()
	if err != nil {
		t.Fatalf("peer-config: %v", err)
	}
	cmds := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if n := strings.Count(string(out), "ip l2tp add tunnel"); n != 1 {
		t.Fatalf("peer-config printed %d tunnels for one shared tunnel:\n%s", n, out)
	}
	cmds = append(cmds, "ip addr add 169.254.142.2/24 dev l2tpeth1", "ip addr add 169.254.143.2/24 dev l2tpeth2",
		fmt.Sprintf("ip neigh replace 169.254.143.1 lladdr %s dev l2tpeth2 nud permanent", guest.MAC(3)))
	k := guest.StartKernelPeer(t, guest.KernelPeerOptions{HostPort: hostPort, PeerPort: port, IP: "169.254.141.2/24", Commands: cmds})
	cfgPath := filepath.Join(t.TempDir(), "l2tpv3-netdev.toml")
	if err := os.WriteFile(cfgPath, []byte(strings.Join(config, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	sc := startSidecar(t, "--config", cfgPath)
	k.MustWaitReady(bootTimeout)
	for i, vm := range vms {
		vm.MustWaitReady(bootTimeout)
		if err := vm.Ping(fmt.Sprintf("169.254.%d.2", 141+i), 3, pingTimeout); err != nil {
			t.Log(k.MustRun("ip -s l2tp show session", pingTimeout))
			t.Fatalf("vm%s: %v\n%s", names[i], err, sc.counters())
		}
	}
	st := sharedPort(t, admin, "sc")
	if st.Socket == nil || len(st.Socket.Sessions) != 3 {
		t.Fatalf("port sc's socket: %+v, want 3 sessions", st.Socket)
	}
	t.Logf("all three ping through one kernel tunnel; socket %s sessions %v", st.Socket.Local, st.Socket.Sessions)
	t.Logf("kernel peer:\n%s", k.MustRun("ip l2tp show tunnel; ip l2tp show session | grep -E 'Session|interface'", pingTimeout))

	qc := qmpClient(t, vms[2])
	if _, err := qc.Execute(context.Background(), "stop", nil); err != nil {
		t.Fatal(err)
	}
	// The flood toward the stopped C and the pings of A and B at once.
	const flood, echoes = 4000, 300
	floodDone := make(chan string, 1)
	go func() {
		out, _ := k.Run(fmt.Sprintf("ping -q -c %d -i 0.0005 -s 1000 -w 40 169.254.143.1", flood), 60*time.Second)
		floodDone <- out
	}()
	pingDone := make(chan error, 2)
	for i := range 2 {
		go func() {
			pingDone <- pingFlat(vms[i], fmt.Sprintf("169.254.%d.2", 141+i), echoes)
		}()
	}
	for range 2 {
		if err := <-pingDone; err != nil {
			t.Error(err)
		}
	}
	t.Logf("vmsa, vmsb: %d of %d echoes each (ping -A) while vmsc was stopped", echoes, echoes)
	floodOut := <-floodDone
	sent := regexp.MustCompile(`(\d+) packets transmitted`).FindStringSubmatch(floodOut)
	stC := sharedPort(t, admin, "sc")
	slow := stC.Session.Drops[l2tp.DropVMSlow]
	t.Logf("kernel → stopped C: %s; sc: rx %d, vm_slow %d, queued and in the stream socket: the rest",
		firstOf(sent), stC.Session.RxPackets, slow)
	if slow == 0 {
		t.Errorf("no vm_slow drops on the stopped VM's port: %s", stC.Session)
	}
	for _, name := range names[:2] {
		st := sharedPort(t, admin, name)
		if d := st.Session.Dropped(); d != 0 {
			t.Errorf("port %s, VM running, dropped %d: %s", name, d, st.Session)
		}
		t.Logf("port %s: %s", name, st.Session)
	}
	if d := stC.Socket.Stats.Dropped(); d != 0 {
		t.Errorf("the socket dropped %d of no session: %s", d, stC.Socket.Stats)
	}

	if _, err := qc.Execute(context.Background(), "cont", nil); err != nil {
		t.Fatal(err)
	}
	if err := vms[2].Ping("169.254.143.2", 3, pingTimeout); err != nil {
		t.Fatalf("vmsc after cont: %v\n%s", err, sc.counters())
	}
	t.Logf("vmsc answers again after cont")
}

// TestSharedTunnelIPEncap: two ports over IP encapsulation on one address
// (127.0.0.1, IPv4 and IPv6 ::1) are two sessions of one raw socket, whose
// filter passes both; their VMs ping each other flat out through it and
// neither port nor the socket counts a drop (no session sees the other's
// packets).
func TestSharedTunnelIPEncap(t *testing.T) {
	guest.Require(t)
	for _, addr := range []string{"127.0.0.1", "::1"} {
		t.Run(addr, func(t *testing.T) {
			dir := guest.SocketDir(t)
			admin := filepath.Join(dir, "admin.sock")
			v6 := "off"
			if addr == "::1" {
				v6 = "on"
			}
			config := fmt.Sprintf("admin = %q\n", admin)
			vms := make([]*guest.VM, 2)
			for i, name := range []string{"pa", "pb"} {
				sock := filepath.Join(dir, name+".sock")
				vms[i] = guest.Start(t, guest.Options{Name: "vm" + name, IPs: []string{fmt.Sprintf("169.254.151.%d/24", 1+i)},
					Args: append(qemuStreamServer("n0", sock), guest.NIC("n0", 1+i)...)})
				config += fmt.Sprintf("[[port]]\nname = %q\nstream = \"unix:%s,server=off\"\nl2tpv3 = \"src=%s,dst=%s,ipv6=%s,txsession=%#x,rxsession=%#x\"\n",
					name, sock, addr, addr, v6, 0x71+1-i, 0x71+i)
			}
			cfgPath := filepath.Join(t.TempDir(), "l2tpv3-netdev.toml")
			if err := os.WriteFile(cfgPath, []byte(config), 0o600); err != nil {
				t.Fatal(err)
			}
			sc := startSidecar(t, "--config", cfgPath)
			for _, vm := range vms {
				vm.MustWaitReady(bootTimeout)
			}
			const echoes = 200
			if err := pingFlat(vms[0], "169.254.151.2", echoes); err != nil {
				t.Fatalf("%v\n%s", err, sc.counters())
			}
			for _, name := range []string{"pa", "pb"} {
				st := sharedPort(t, admin, name)
				if st.Socket == nil || fmt.Sprint(st.Socket.Sessions) != "[113 114]" {
					t.Fatalf("port %s: socket %+v, want sessions [113 114] on one socket", name, st.Socket)
				}
				if st.Session.Dropped() != 0 || st.Socket.Stats.Dropped() != 0 {
					t.Errorf("port %s dropped: %s; socket: %s", name, st.Session, st.Socket.Stats)
				}
				t.Logf("port %s on %s (sessions %v): %s", name, st.Socket.Local, st.Socket.Sessions, st.Session)
			}
		})
	}
}

// pingFlat pings addr count times back to back (-A: the next as soon as
// the reply is in) and wants every reply.
func pingFlat(vm *guest.VM, addr string, count int) error {
	out, _ := vm.Run(fmt.Sprintf("ping -q -A -c %d -w 60 %s", count, addr), 90*time.Second)
	m := regexp.MustCompile(`(\d+) packets transmitted, (\d+) packets received`).FindStringSubmatch(out)
	if m == nil {
		return fmt.Errorf("%s: no ping summary: %s", vm.Name, out)
	}
	if got, _ := strconv.Atoi(m[2]); got != count {
		return fmt.Errorf("%s → %s: %s of %d replies while another VM on the tunnel was stopped: %s", vm.Name, addr, m[2], count, out)
	}
	return nil
}

// sharedPort reads one port's status over the admin socket.
func sharedPort(t *testing.T, admin, name string) backend.PortStatus {
	t.Helper()
	var st backend.PortStatus
	body := curl(t, admin, "http://x/v1/ports/"+name)
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("GET /v1/ports/%s: %v\n%s", name, err, body)
	}
	return st
}

// qmpClient connects to a VM's QMP socket, closed when the test ends.
func qmpClient(t *testing.T, vm *guest.VM) *qmp.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := qmp.Dial(ctx, "unix:"+vm.QMPPath())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// firstOf is a regexp match's whole text, or "no summary".
func firstOf(m []string) string {
	if len(m) == 0 {
		return "no summary"
	}
	return m[0]
}
