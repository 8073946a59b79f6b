package load

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/admin"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/backend"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/l2tp"
)

// netnsEnv, set to "1", runs the real-host tests: the daemon in a network
// namespace of its own, its peer in another, a veth pair between them
// (make test sets it; they need root, ip and tc).
const netnsEnv = "L2TPV3_NETNS"

// netnsFamily is one address family's addresses on the host pair
// (documentation prefixes): the veth link, and the peer's tunnel address,
// reached through a route the tests may remove.
type netnsFamily struct {
	local, nextHop, linkPfx string // the two ends of the veth
	peer, peerPfx           string // on the peer's loopback
}

// The two families' addresses.
var (
	netns4 = netnsFamily{local: "192.0.2.1", nextHop: "192.0.2.2", linkPfx: "/24", peer: "198.51.100.2", peerPfx: "/32"}
	netns6 = netnsFamily{local: "2001:db8:1::1", nextHop: "2001:db8:1::2", linkPfx: "/64", peer: "2001:db8:2::2", peerPfx: "/128"}
)

// hostPair is two network namespaces joined by a veth pair: the daemon's
// (a, device devA) and the peer's (b), with IPv4 and IPv6 addresses. The
// daemon reaches the peer's address through a host route via the veth's
// far end.
type hostPair struct {
	a, b, devA string
}

// newHostPair builds the namespaces, the veth pair, the addresses and the
// route; all are removed when the test ends. It skips unless netnsEnv is
// set and the test runs as root with ip and tc.
func newHostPair(t *testing.T) *hostPair {
	t.Helper()
	if os.Getenv(netnsEnv) != "1" {
		t.Skip("real-host tests run with " + netnsEnv + "=1 (make test)")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces, veth, tc)")
	}
	for _, tool := range []string{"ip", "tc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	id := rand.IntN(1 << 20)
	h := &hostPair{a: fmt.Sprintf("l2tpnet-a-%d", id), b: fmt.Sprintf("l2tpnet-b-%d", id), devA: fmt.Sprintf("l2tnva%d", id)}
	devB := fmt.Sprintf("l2tnvb%d", id)
	for _, ns := range []string{h.a, h.b} {
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	const macA, macB = "02:00:00:00:0a:01", "02:00:00:00:0b:02"
	run(t, "ip", "link", "add", h.devA, "netns", h.a, "address", macA, "type", "veth",
		"peer", "name", devB, "netns", h.b, "address", macB)
	run(t, "ip", "-n", h.a, "link", "set", h.devA, "up")
	run(t, "ip", "-n", h.b, "link", "set", devB, "up")
	for _, f := range []netnsFamily{netns4, netns6} {
		run(t, "ip", "-n", h.a, "addr", "add", f.local+f.linkPfx, "dev", h.devA, "nodad")
		run(t, "ip", "-n", h.b, "addr", "add", f.nextHop+f.linkPfx, "dev", devB, "nodad")
		run(t, "ip", "-n", h.b, "addr", "add", f.peer+f.peerPfx, "dev", "lo", "nodad")
		// Neighbours known from the start: while the kernel resolves one,
		// a datagram sent just then can overtake those it queued.
		run(t, "ip", "-n", h.a, "neigh", "replace", f.nextHop, "lladdr", macB, "dev", h.devA, "nud", "permanent")
		run(t, "ip", "-n", h.b, "neigh", "replace", f.local, "lladdr", macA, "dev", devB, "nud", "permanent")
		h.route(t, f, "add")
	}
	// A veth hands packets to the receiving CPU's backlog: a sender that
	// moves between CPUs would see its packets overtake each other. RPS
	// steers them all to CPU 0, in order, as one NIC queue would.
	run(t, "ip", "netns", "exec", h.b, "sh", "-c", "echo 1 > /sys/class/net/"+devB+"/queues/rx-0/rps_cpus")
	return h
}

// route adds or removes ("add", "del") the daemon's route to the peer's
// address of family f.
func (h *hostPair) route(t *testing.T, f netnsFamily, op string) {
	t.Helper()
	run(t, "ip", "-n", h.a, "route", op, f.peer+f.peerPfx, "via", f.nextHop, "dev", h.devA)
}

// tc runs tc commands (each a line of tc words after "tc -n a") on the
// daemon's namespace; DEV stands for the daemon's side of the link.
func (h *hostPair) tc(t *testing.T, lines []string) {
	t.Helper()
	for _, l := range lines {
		run(t, "tc", append([]string{"-n", h.a}, strings.Fields(strings.ReplaceAll(l, "DEV", h.devA))...)...)
	}
}

// qdiscDrops reads the drops of the daemon's root qdisc.
func (h *hostPair) qdiscDrops(t *testing.T) uint64 {
	out := run(t, "tc", "-n", h.a, "-s", "qdisc", "show", "dev", h.devA)
	m := regexp.MustCompile(`\(dropped (\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("tc -s qdisc: no drop counter in %q", out)
	}
	n, _ := strconv.ParseUint(m[1], 10, 64)
	return n
}

// linkTx reads the packets and bytes the daemon's side of the veth sent:
// a UDP GSO message crosses a veth as one packet, so packets much larger
// than a frame show GSO at work, seen from outside the daemon.
func (h *hostPair) linkTx(t *testing.T) (packets, bytes uint64) {
	out, err := exec.Command("ip", "netns", "exec", h.a, "cat",
		"/sys/class/net/"+h.devA+"/statistics/tx_packets", "/sys/class/net/"+h.devA+"/statistics/tx_bytes").Output()
	f := strings.Fields(string(out))
	if err != nil || len(f) != 2 {
		t.Fatalf("tx statistics of %s: %v %q", h.devA, err, out)
	}
	packets, _ = strconv.ParseUint(f[0], 10, 64)
	bytes, _ = strconv.ParseUint(f[1], 10, 64)
	return packets, bytes
}

// openPeer opens the peer's tunnel in namespace b; closed when the test
// ends.
func (h *hostPair) openPeer(t *testing.T, c l2tp.Config) *l2tp.Tunnel {
	t.Helper()
	return openTunnelIn(t, "/run/netns/"+h.b, c)
}

// netnsDaemon is the real daemon running in namespace a with one stream
// port toward the peer in b.
type netnsDaemon struct {
	pid   int
	sock  string
	admin *admin.Client
	logs  *logSink
}

// sessionKind is a tunnel's socket: UDP or IP encapsulation, IPv4 or IPv6.
type sessionKind struct{ udp, v6 bool }

// String names the kind as subtests do ("udp4", "ip6").
func (k sessionKind) String() string {
	s := map[bool]string{true: "udp", false: "ip"}[k.udp]
	return s + map[bool]string{false: "4", true: "6"}[k.v6]
}

// options is the --l2tpv3 string from local to peer of family f, with the
// ports and sessions given.
func (k sessionKind) options(local, peer string, lport, pport int, tx, rx uint32) string {
	o := fmt.Sprintf("src=%s,dst=%s,txsession=%#x,rxsession=%#x", local, peer, tx, rx)
	if k.v6 {
		o += ",ipv6=on"
	}
	if k.udp {
		o += fmt.Sprintf(",udp=on,srcport=%d,dstport=%d", lport, pport)
	}
	return o
}

// startNetnsDaemon runs the daemon binary inside namespace a with one
// stream port of kind k and returns it with the peer's tunnel, opened in b.
func (h *hostPair) startNetnsDaemon(t *testing.T, bin string, k sessionKind) (*netnsDaemon, *l2tp.Tunnel) {
	t.Helper()
	dir := sockDir(t)
	f := netns4
	if k.v6 {
		f = netns6
	}
	sp, pp := 20000+rand.IntN(20000), 20000+rand.IntN(20000)
	side := k.options(f.local, f.peer, sp, pp, 0x61, 0x62)
	peerCfg, err := l2tp.ParseOptions(k.options(f.peer, f.local, pp, sp, 0x62, 0x61))
	if err != nil {
		t.Fatal(err)
	}
	peer := h.openPeer(t, peerCfg)
	d := &netnsDaemon{sock: filepath.Join(dir, "vm.sock"), logs: new(logSink)}
	adminSock := filepath.Join(dir, "admin.sock")
	d.pid = runDaemon(t, d.logs, "ip", "netns", "exec", h.a, bin,
		"--stream", "unix:"+d.sock, "--l2tpv3", side, "--admin", adminSock)
	d.admin = admin.NewClient(adminSock)
	if !waitFor(10*time.Second, func() bool { _, err := d.status(); return err == nil }) {
		t.Fatalf("the daemon did not answer on %s:\n%s", adminSock, d.logs)
	}
	return d, peer
}

// status reads the daemon's one port.
func (d *netnsDaemon) status() (backend.PortStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ps, err := d.admin.Ports(ctx)
	if err != nil {
		return backend.PortStatus{}, err
	}
	if len(ps) != 1 {
		return backend.PortStatus{}, fmt.Errorf("%d ports", len(ps))
	}
	return ps[0], nil
}

// mustStatus is status or the end of the test.
func (d *netnsDaemon) mustStatus(t *testing.T) backend.PortStatus {
	t.Helper()
	st, err := d.status()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// attach connects the test's VM to the daemon's stream socket and waits
// until the port serves it.
func (d *netnsDaemon) attach(t *testing.T) *vmConn {
	t.Helper()
	v := dialVM(t, d.sock)
	if !waitFor(5*time.Second, func() bool { st, err := d.status(); return err == nil && st.FrontEnd.Connected }) {
		t.Fatal("the daemon did not take the VM connection")
	}
	time.Sleep(10 * time.Millisecond) // Connected is set just before the pump attaches it
	return v
}

// finish stops the link's senders, waits until what is in flight has
// arrived or is gone, makes the kernel's drop counts final (link.tail), and
// returns the link's counts, the daemon's session counters and what the
// daemon and the peer counted as lost VM → network.
func (d *netnsDaemon) finish(t *testing.T, link *goodLink, peer *l2tp.Tunnel) (tally, l2tp.StatsSnapshot, uint64) {
	t.Helper()
	link.halt()
	if err := link.drain(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	link.tail(t)
	side := d.mustStatus(t).Session
	return link.counts(), side, counted(side, peer.Stats().Snapshot())
}

// counted is what the daemon and the peer counted as lost VM → network:
// the daemon's send-side drops and the peer socket's kernel drops.
func counted(side, peer l2tp.StatsSnapshot) uint64 {
	return side.Drops[l2tp.DropSendError] + side.Drops[l2tp.DropOversize] + peer.Drops[l2tp.DropKernel]
}

// TestQdiscConservationNetns: the real daemon sends what a VM gives it
// flat out through a rate-limited egress queue of a small limit (tbf;
// netem) in front of the peer. Every sequence-numbered frame arrives or is
// counted by its reason, exactly (frames in = frames out + frames counted,
// 0 uncounted): the queue's refusals (ENOBUFS, seen through IP_RECVERR)
// hold the VM back instead of vanishing. The daemon's CPU while the queue
// is full stays low: it sleeps after ENOBUFS instead of spinning.
func TestQdiscConservationNetns(t *testing.T) {
	bin := buildDaemon(t)
	tbf := []string{"qdisc add dev DEV root tbf rate 50mbit burst 16kb limit 32kb"}
	htb := []string{"qdisc add dev DEV root handle 1: htb default 10",
		"class add dev DEV parent 1: classid 1:10 htb rate 50mbit",
		"qdisc add dev DEV parent 1:10 handle 10: pfifo limit 20"}
	for _, q := range []struct {
		name string
		tc   []string
		kind sessionKind
	}{
		// tbf cuts GSO messages above 2047 bytes: GSO must stay off.
		{"tbf", tbf, sessionKind{udp: true}},
		{"tbf", tbf, sessionKind{udp: true, v6: true}},
		{"tbf", tbf, sessionKind{}},
		{"tbf", tbf, sessionKind{v6: true}},
		// htb with a 20-packet fifo: GSO messages are refused whole.
		{"htb+pfifo", htb, sessionKind{udp: true}},
	} {
		t.Run(q.name+"/"+q.kind.String(), func(t *testing.T) {
			h := newHostPair(t)
			h.tc(t, q.tc)
			d, peer := h.startNetnsDaemon(t, bin, q.kind)
			link := startGoodLink(d.attach(t), peer, 0x7, 1000, 0, 0, toNet)

			time.Sleep(500 * time.Millisecond) // the queue fills
			wall0, cpu0, got0 := time.Now(), daemonCPU(t, d.pid), link.counts().toNetGot
			time.Sleep(2 * time.Second)
			wall, cpu, moved := time.Since(wall0), daemonCPU(t, d.pid)-cpu0, link.counts().toNetGot-got0
			c, side, n := d.finish(t, link, peer)
			load := float64(cpu) / float64(wall) * 100
			t.Logf("%s: VM sent %d frames, peer got %d, lost %d, counted %d; qdisc dropped %d; daemon: %s",
				strings.Join(q.tc, "; "), c.toNetSent, c.toNetGot, c.toNetLost, n, h.qdiscDrops(t), side)
			t.Logf("while the queue was full: %d frames/s through, daemon CPU %.1f%% of one core", int(float64(moved)/wall.Seconds()), load)
			if c.toNetSent != c.toNetGot+n || c.toNetLost != n {
				t.Errorf("frames in %d != out %d + counted %d (lost in sequence %d): %d uncounted",
					c.toNetSent, c.toNetGot, n, c.toNetLost, int64(c.toNetLost)-int64(n))
			}
			if side.TxQueueFull == 0 {
				t.Error("the queue never refused a datagram: the link did not fill it")
			}
			if load > 40 {
				t.Errorf("daemon CPU %.1f%% of one core while the queue was full: a busy loop?", load)
			}
		})
	}
}

// TestRouteFlapGSONetns: the route to the peer is removed and restored
// under traffic. While it is gone the kernel refuses every send
// (ENETUNREACH): the GSO messages fall back to one by one (counted) and the
// frames are dropped and counted as send errors; once it is back, GSO
// returns within seconds (seen on the veth: several frames per packet
// again; "back" is measured in 200 ms windows), and every frame is
// accounted for exactly.
func TestRouteFlapGSONetns(t *testing.T) {
	bin := buildDaemon(t)
	h := newHostPair(t)
	// A 200 Mbit/s link the peer keeps up with; its fifo (GSO messages
	// pass whole) is longer than the socket's send buffer: nothing is lost
	// but what the missing route drops.
	h.tc(t, []string{"qdisc add dev DEV root handle 1: htb default 10",
		"class add dev DEV parent 1: classid 1:10 htb rate 200mbit",
		"qdisc add dev DEV parent 1:10 handle 10: pfifo limit 10000"})
	d, peer := h.startNetnsDaemon(t, bin, sessionKind{udp: true})
	link := startGoodLink(d.attach(t), peer, 0x8, 1000, 0, 0, toNet)

	// framesPerPacket is the average packet on the link, in frames.
	framesPerPacket := func(window time.Duration) float64 {
		p0, b0 := h.linkTx(t)
		time.Sleep(window)
		p, b := h.linkTx(t)
		if p == p0 {
			return 0
		}
		return float64(b-b0) / float64(p-p0) / 1000
	}
	time.Sleep(300 * time.Millisecond)
	if r := framesPerPacket(500 * time.Millisecond); r < 2 {
		t.Fatalf("before the flap: %.2f frames per packet on the link: GSO not in use", r)
	}
	h.route(t, netns4, "del")
	time.Sleep(time.Second)
	down := d.mustStatus(t).Session
	h.route(t, netns4, "add")
	restored := time.Now()
	back := time.Duration(-1)
	for time.Since(restored) < 10*time.Second {
		if r := framesPerPacket(200 * time.Millisecond); r >= 2 {
			back = time.Since(restored)
			break
		}
	}
	c, side, n := d.finish(t, link, peer)
	backStr := "never"
	if back >= 0 {
		backStr = back.Round(10 * time.Millisecond).String()
	}
	t.Logf("route flap: VM sent %d frames, peer got %d, lost %d, counted %d; GSO back after %s; daemon: %s",
		c.toNetSent, c.toNetGot, c.toNetLost, n, backStr, side)
	if down.GSOFallbacks == 0 || down.Drops[l2tp.DropSendError] == 0 {
		t.Errorf("while the route was gone: %d GSO fallbacks, %d send errors; want both counted",
			down.GSOFallbacks, down.Drops[l2tp.DropSendError])
	}
	if !strings.Contains(d.logs.String(), "UDP GSO refused by the kernel") {
		t.Error("the GSO fallback was not logged")
	}
	if back < 0 {
		t.Error("GSO did not come back within 10 s of the route's return")
	}
	if c.toNetSent != c.toNetGot+n || c.toNetLost != n {
		t.Errorf("frames in %d != out %d + counted %d (lost in sequence %d)", c.toNetSent, c.toNetGot, n, c.toNetLost)
	}
}
