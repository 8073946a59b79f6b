package e2e

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/test/guest"
)

// TestWireCutAndDegraded: two TCG VMs, each on a port of one daemon
// (-netdev stream), the ports' pseudowires facing each other over
// loopback; VM A's port knows A's QMP socket. Through the CLI:
//   - port link wa down: A's eth0 shows NO-CARRIER (QMP set_link), B's
//     pings fail, link_down counts; up: carrier back, pings resume;
//   - delay 50ms 10ms both ways on A's port: ping RTT 100 ± 25 ms;
//   - loss 20% out of A: ping loss within a binomial bound;
//   - rate 10mbit out of A: an 8 MiB TCP transfer A → B (busybox nc)
//     takes the time the rate says, within 15 %.
func TestWireCutAndDegraded(t *testing.T) {
	guest.Require(t)
	dir := guest.SocketDir(t)
	sockA, sockB := filepath.Join(dir, "a.sock"), filepath.Join(dir, "b.sock")
	admin := filepath.Join(dir, "admin.sock")
	a := guest.Start(t, guest.Options{Name: "vmA", IPs: []string{"169.254.130.1/24"}, QMP: true,
		Args: append(qemuStreamServer("n0", sockA), guest.NIC("n0", 1)...)})
	b := guest.Start(t, guest.Options{Name: "vmB", IPs: []string{"169.254.130.2/24"},
		Args: append(qemuStreamServer("n0", sockB), guest.NIC("n0", 2)...)})
	p1, p2 := guest.FreeUDPPort(), guest.FreeUDPPort()
	config := filepath.Join(t.TempDir(), "l2tpv3-netdev.toml")
	if err := os.WriteFile(config, []byte(fmt.Sprintf(`admin = %q

[[port]]
name = "wa"
stream = "unix:%s,server=off"
l2tpv3 = "src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=%d,txsession=0x81,rxsession=0x82"
qmp = "unix:%s"
qmp-id = "n0"

[[port]]
name = "wb"
stream = "unix:%s,server=off"
l2tpv3 = "src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=%d,txsession=0x82,rxsession=0x81"
`, admin, sockA, p1, p2, a.QMPPath(), sockB, p2, p1)), 0o600); err != nil {
		t.Fatal(err)
	}
	sc := startSidecar(t, "--config", config)
	a.MustWaitReady(bootTimeout)
	b.MustWaitReady(bootTimeout)
	if err := b.Ping("169.254.130.1", 3, pingTimeout); err != nil {
		t.Fatalf("B→A: %v\n%s", err, sc.counters())
	}

	t.Run("link", func(t *testing.T) {
		out := cli(t, "port", "link", "wa", "down", "--admin", admin)
		t.Logf("port link wa down:\n%s", out)
		if strings.Contains(out, "not set") {
			t.Errorf("the guest's link was not set over QMP: %s", out)
		}
		if c := carrier(t, a, "0"); c != "0" {
			t.Errorf("vmA eth0 carrier %q after port link down, want 0 (NO-CARRIER)", c)
		}
		t.Logf("vmA: %s", strings.TrimSpace(a.MustRun("ip link show eth0 | head -1", pingTimeout)))
		if err := b.Ping("169.254.130.1", 2, 3*time.Second); err == nil {
			t.Error("B's ping went through a cut link")
		}
		if drops := portDrops(t, admin, "wa", "link_down"); drops == 0 {
			t.Error("no link_down drops counted")
		}
		start := time.Now()
		cli(t, "port", "link", "wa", "up", "--admin", admin)
		tries := 0
		for tries < 20 {
			tries++
			if _, err := b.Run("ping -c 1 -W 1 169.254.130.1", pingTimeout); err == nil {
				break
			}
		}
		took := time.Since(start)
		if c := carrier(t, a, "1"); c != "1" {
			t.Errorf("vmA eth0 carrier %q after port link up, want 1", c)
		}
		t.Logf("port link up to B's first echo answered: %v (%d ping -c 1)", took.Round(time.Millisecond), tries)
		if tries > 1 || took > 1500*time.Millisecond {
			t.Errorf("pings resumed after %v and %d tries, want the first try within a second (plus console time)", took, tries)
		}
	})

	t.Run("delay", func(t *testing.T) {
		base := rttSummary(pingRTTs(t, b, "169.254.130.1", 10))
		cli(t, "port", "impair", "wa", "delay", "50ms", "10ms", "--admin", admin)
		defer cli(t, "port", "impair", "wa", "clear", "--admin", admin)
		rtts := pingRTTs(t, b, "169.254.130.1", 30)
		sum := rttSummary(rtts)
		in := 0
		for _, r := range rtts {
			if r >= 75 && r <= 125 {
				in++
			}
		}
		t.Logf("B→A RTT without impairment: %s; with delay 50ms 10ms both ways on wa: %s; %d of %d in 100 ± 25 ms",
			base, sum, in, len(rtts))
		// The median and mean sit in the band; a TCG guest on a loaded
		// host adds its own spikes, so a few samples may fall outside.
		if sum.median < 75 || sum.median > 125 || sum.mean < 75 || sum.mean > 125 || in < len(rtts)*3/4 {
			t.Errorf("RTTs not in 100 ± 25 ms: %s, %d of %d inside", sum, in, len(rtts))
		}
	})

	t.Run("loss", func(t *testing.T) {
		// Static neighbours and no IPv6 on A: no ARP refresh or IPv6
		// chatter through the line, so that the same seed meets the same
		// frames (the echo replies) in both runs.
		a.MustRun("echo 1 >/proc/sys/net/ipv6/conf/eth0/disable_ipv6; "+
			"ip neigh replace 169.254.130.2 lladdr "+guest.MAC(2)+" dev eth0 nud permanent", pingTimeout)
		b.MustRun("ip neigh replace 169.254.130.1 lladdr "+guest.MAC(1)+" dev eth0 nud permanent", pingTimeout)
		var patterns []string
		var sent, lost int
		for range 2 {
			cli(t, "port", "impair", "wa", "out", "loss", "20%", "seed", "7", "--admin", admin)
			var pattern string
			sent, lost, pattern = lostEchoes(t, b, "169.254.130.1", 200)
			patterns = append(patterns, pattern)
			cli(t, "port", "impair", "wa", "clear", "--admin", admin)
		}
		if patterns[0] != patterns[1] {
			t.Errorf("seed 7 lost different echoes in two runs:\n%s\n%s", patterns[0], patterns[1])
		} else {
			t.Logf("seed 7 lost the same echoes in both runs: %s", patterns[0])
		}
		// 4 standard deviations of a binomial(n, 0.2).
		sd := math.Sqrt(float64(sent) * 0.2 * 0.8)
		lo, hi := float64(sent)*0.2-4*sd, float64(sent)*0.2+4*sd
		t.Logf("loss 20%% out of A: %d of %d echoes lost (%.1f %%), bound %.0f..%.0f; impair_loss %d",
			lost, sent, 100*float64(lost)/float64(sent), lo, hi, portDrops(t, admin, "wa", "impair_loss"))
		if float64(lost) < lo || float64(lost) > hi {
			t.Errorf("%d of %d lost, outside the binomial bound %.0f..%.0f", lost, sent, lo, hi)
		}
	})

	t.Run("rate", func(t *testing.T) {
		size := 8 << 20
		a.MustRun(fmt.Sprintf("dd if=/dev/urandom of=/tmp/f bs=1M count=%d 2>/dev/null", size>>20), pingTimeout)
		cli(t, "port", "impair", "wa", "out", "rate", "10mbit", "--admin", admin)
		defer cli(t, "port", "impair", "wa", "clear", "--admin", admin)
		snmp0 := tcpSNMP(t, a)
		host := transfer(t, a, b, "169.254.130.2", "/tmp/f")
		elapsed := guestTime(t, a)
		snmp1 := tcpSNMP(t, a)
		t.Logf("vmA TCP OutSegs +%d RetransSegs +%d", snmp1["OutSegs"]-snmp0["OutSegs"], snmp1["RetransSegs"]-snmp0["RetransSegs"])
		got := strings.TrimSpace(b.MustRun("wc -c </tmp/r", pingTimeout))
		// Each 1448-byte TCP segment (MSS with timestamps) travels in a
		// 1514-byte Ethernet frame; the rate counts frame bytes.
		want := time.Duration(float64(size) * 1514 / 1448 * 8 / 10e6 * float64(time.Second))
		t.Logf("rate 10mbit out of A: %s bytes A → B in %v (vmA's nc; %v seen from the host), the rate says %v (%.2fx); impair_rate drops %d",
			got, elapsed.Round(time.Millisecond), host.Round(time.Millisecond), want.Round(time.Millisecond), elapsed.Seconds()/want.Seconds(),
			portDrops(t, admin, "wa", "impair_rate"))
		if got != strconv.Itoa(size) {
			t.Errorf("B received %s bytes, want %d", got, size)
		}
		if r := elapsed.Seconds() / want.Seconds(); r < 0.85 || r > 1.15 {
			t.Errorf("transfer took %v, want %v ± 15 %%", elapsed, want)
		}
	})
	t.Logf("port show wa: %s", cli(t, "port", "show", "wa", "--admin", admin))
}

// guestTime is how long the guest's last `nc` ran, by its own clock: the
// transfer's time without the console's (see transfer, which runs it
// under busybox time into /tmp/nc.time).
func guestTime(t *testing.T, vm *guest.VM) time.Duration {
	t.Helper()
	out := vm.MustRun("cat /tmp/nc.time", pingTimeout)
	m := regexp.MustCompile(`real\s+(\d+)m\s*([0-9.]+)s`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no real time in %q", out)
	}
	sec, _ := strconv.ParseFloat(m[2], 64)
	return time.Duration((float64(atoi(m[1]))*60 + sec) * float64(time.Second))
}

// lostEchoes pings addr n times, 50 ms apart, and returns how many echoes
// were sent and lost, and the lost ones' sequence numbers.
func lostEchoes(t *testing.T, vm *guest.VM, addr string, n int) (sent, lost int, pattern string) {
	t.Helper()
	out, _ := vm.Run(fmt.Sprintf("ping -c %d -i 0.05 -W 2 %s", n, addr), 2*time.Minute)
	sent, got, _ := pingLoss(t, out)
	seen := map[string]bool{}
	for _, s := range regexp.MustCompile(`seq=(\d+) `).FindAllStringSubmatch(out, -1) {
		seen[s[1]] = true
	}
	var missing []string
	for i := range sent {
		if !seen[strconv.Itoa(i)] {
			missing = append(missing, strconv.Itoa(i))
		}
	}
	return sent, sent - got, strings.Join(missing, " ")
}

// carrier reads the guest's eth0 carrier ("1" up, "0" NO-CARRIER), waiting
// up to 2 s for it to be want.
func carrier(t *testing.T, vm *guest.VM, want string) string {
	t.Helper()
	out := vm.MustRun("i=0; while [ $i -lt 20 ] && [ \"$(cat /sys/class/net/eth0/carrier)\" != "+want+" ]; do "+
		"sleep 0.1; i=$((i+1)); done; cat /sys/class/net/eth0/carrier", pingTimeout)
	return strings.TrimSpace(out)
}

// rtts summarises ping round trips in milliseconds.
type rtts struct{ mean, min, median, max float64 }

// rttSummary sorts samples and summarises them.
func rttSummary(samples []float64) rtts {
	sort.Float64s(samples)
	var sum float64
	for _, r := range samples {
		sum += r
	}
	return rtts{sum / float64(len(samples)), samples[0], samples[len(samples)/2], samples[len(samples)-1]}
}

// String prints the summary.
func (r rtts) String() string {
	return fmt.Sprintf("mean %.1f ms, min %.1f, median %.1f, max %.1f", r.mean, r.min, r.median, r.max)
}

// pingRTTs pings addr count times, 0.2 s apart, and returns the RTTs in ms.
func pingRTTs(t *testing.T, vm *guest.VM, addr string, count int) []float64 {
	t.Helper()
	out, _ := vm.Run(fmt.Sprintf("ping -c %d -i 0.2 -W 2 %s", count, addr), time.Minute)
	var rtts []float64
	for _, m := range regexp.MustCompile(`time=([0-9.]+) ms`).FindAllStringSubmatch(out, -1) {
		f, _ := strconv.ParseFloat(m[1], 64)
		rtts = append(rtts, f)
	}
	if len(rtts) < count*9/10 {
		t.Fatalf("%d of %d echoes answered:\n%s", len(rtts), count, out)
	}
	return rtts
}

// portDrops reads one drop counter of a port through the admin API.
func portDrops(t *testing.T, admin, port, reason string) int {
	t.Helper()
	body := curl(t, admin, "http://x/v1/ports/"+port)
	m := regexp.MustCompile(`"` + reason + `":\s*(\d+)`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no %s in the status of %s: %s", reason, port, body)
	}
	return atoi(m[1])
}

// atoi is strconv.Atoi for strings a regexp matched as digits.
func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
