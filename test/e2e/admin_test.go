package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/test/guest"
)

// TestAdminConfigMetricsCapture: a daemon started with --config holding a
// good port and a broken one (the broken one named in the log, the good
// one running); a VM on the good port pings a VM on QEMU's own l2tpv3;
// the admin API (curl --unix-socket) and /metrics show counters that move
// with the ping; a pcap taken through the admin API during a ping opens in
// tshark with the ICMP inside; `port add` of a second port while the
// first pings, and `port del` removes it and its socket file while the
// first keeps pinging.
func TestAdminConfigMetricsCapture(t *testing.T) {
	guest.Require(t)
	dir := guest.SocketDir(t)
	qsock := filepath.Join(dir, "a-net0.sock")
	admin := filepath.Join(dir, "run", "admin.sock")
	ps, pn := guest.FreeUDPPort(), guest.FreeUDPPort()
	opts := fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=%d,txsession=0x41,rxsession=0x42", ps, pn)
	native := fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=%d,txsession=0x42,rxsession=0x41", pn, ps)
	config := filepath.Join(t.TempDir(), "l2tpv3-netdev.toml")
	os.WriteFile(config, []byte(fmt.Sprintf(`admin = %q

[[port]]
name = "broken"
stream = "unix:%s/broken.sock,server=perhaps"
l2tpv3 = "src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=9,txsession=0x43"

[[port]]
name = "a-net0"
stream = "unix:%s,server=off"
l2tpv3 = %q
`, admin, dir, guest.FreeUDPPort(), qsock, opts)), 0o600)

	a := guest.Start(t, guest.Options{Name: "vmA", IPs: []string{"169.254.110.1/24"},
		Args: append(qemuStreamServer("n0", qsock), guest.NIC("n0", 1)...)})
	b := guest.Start(t, guest.Options{Name: "vmB", IPs: []string{"169.254.110.2/24"},
		Args: append(guest.NativeL2TPv3(native), guest.NIC("n0", 2)...)})
	sc := startSidecar(t, "--config", config)
	if !sc.waitLog(`msg="port refused" port=broken`, 5*time.Second) || !strings.Contains(sc.stderr.String(), "server=perhaps") {
		t.Errorf("the broken port is not named with its reason:\n%s", sc.stderr.String())
	}
	a.MustWaitReady(bootTimeout)
	b.MustWaitReady(bootTimeout)
	if err := a.Ping("169.254.110.2", 3, pingTimeout); err != nil {
		t.Fatalf("A→B: %v\n%s", err, sc.counters())
	}

	// Counters move with the ping, in the API and in /metrics.
	before, mBefore := portCounters(t, admin, "a-net0"), scrape(t, admin)
	if before.State != "running" || portState(t, admin, "broken") != "failed" {
		t.Errorf("states: a-net0 %s", before.State)
	}
	if err := a.Ping("169.254.110.2", 3, pingTimeout); err != nil {
		t.Fatal(err)
	}
	after, mAfter := portCounters(t, admin, "a-net0"), scrape(t, admin)
	if after.Session.TxPackets < before.Session.TxPackets+3 || after.Session.RxPackets < before.Session.RxPackets+3 {
		t.Errorf("API counters did not move with 3 pings: before %+v after %+v", before.Session, after.Session)
	}
	for _, dir := range []string{"to_vm", "to_network"} {
		series := fmt.Sprintf(`l2tpv3_netdev_packets_total{direction="%s",port="a-net0",session="66"}`, dir)
		if metric(t, mAfter, series) < metric(t, mBefore, series)+3 {
			t.Errorf("%s: %v → %v, want +3", series, metric(t, mBefore, series), metric(t, mAfter, series))
		}
	}
	if metric(t, mAfter, `l2tpv3_netdev_port_state{port="broken",session="67",state="failed"}`) != 1 {
		t.Error("/metrics does not show the broken port as failed")
	}

	// A pcap through the admin API during a ping holds the ICMP.
	pcap := filepath.Join(t.TempDir(), "a-net0.pcap")
	curl(t, admin, "-X", "POST", "-d", fmt.Sprintf(`{"path":%q}`, pcap), "http://x/v1/ports/a-net0/capture")
	if err := a.Ping("169.254.110.2", 2, pingTimeout); err != nil {
		t.Fatal(err)
	}
	stopped := curl(t, admin, "-X", "DELETE", "http://x/v1/ports/a-net0/capture")
	t.Logf("capture: %s", strings.TrimSpace(stopped))
	out, err := exec.Command("tshark", "-r", pcap, "-Y", "icmp", "-T", "fields", "-e", "icmp.type").CombinedOutput()
	if err != nil {
		t.Fatalf("tshark -r: %v\n%s", err, out)
	}
	types := strings.Fields(string(out))
	if !contains(types, "8") || !contains(types, "0") {
		t.Errorf("pcap lacks ICMP echo request and reply: %q", types)
	}

	// port add / port del while the first port pings.
	pinged := make(chan error, 1)
	go func() { pinged <- pingAll(a, "169.254.110.2", 8) }()
	extra := filepath.Join(dir, "extra.sock")
	extraOpts := fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=%d,txsession=0x51",
		guest.FreeUDPPort(), guest.FreeUDPPort())
	cli(t, "port", "add", "extra", "--stream", "unix:"+extra, "--l2tpv3", extraOpts, "--admin", admin)
	if _, err := os.Stat(extra); err != nil {
		t.Fatalf("added port's socket: %v", err)
	}
	if list := cli(t, "ports", "--admin", admin); !regexp.MustCompile(`(?m)^extra\s+running`).MatchString(list) {
		t.Errorf("ports does not list extra running:\n%s", list)
	}
	cli(t, "port", "del", "extra", "--admin", admin)
	if _, err := os.Stat(extra); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket after port del: %v", err)
	}
	if err := <-pinged; err != nil {
		t.Errorf("the first port stopped pinging during add/del: %v", err)
	}
	t.Logf("ports:\n%s", cli(t, "ports", "--admin", admin))
}

// apiPort is the part of GET /v1/ports/{name} the test reads.
type apiPort struct {
	State   string `json:"state"`
	Session struct {
		RxPackets uint64 `json:"rx_packets"`
		TxPackets uint64 `json:"tx_packets"`
	} `json:"session"`
}

// portCounters fetches one port over the admin socket with curl.
func portCounters(t *testing.T, admin, name string) apiPort {
	t.Helper()
	var p apiPort
	body := curl(t, admin, "http://x/v1/ports/"+name)
	if err := json.Unmarshal([]byte(body), &p); err != nil {
		t.Fatalf("GET /v1/ports/%s: %v\n%s", name, err, body)
	}
	return p
}

// portState is a port's state as GET /v1/ports lists it.
func portState(t *testing.T, admin, name string) string {
	t.Helper()
	var list []struct {
		Name  string `json:"name"`
		State string `json:"state"`
	}
	body := curl(t, admin, "http://x/v1/ports")
	if err := json.Unmarshal([]byte(body), &list); err != nil {
		t.Fatalf("GET /v1/ports: %v\n%s", err, body)
	}
	for _, p := range list {
		if p.Name == name {
			return p.State
		}
	}
	return ""
}

// scrape fetches /metrics over the admin socket.
func scrape(t *testing.T, admin string) string { return curl(t, admin, "http://x/metrics") }

// metric reads one series' value from a scrape (-1 if absent).
func metric(t *testing.T, scrape, series string) float64 {
	t.Helper()
	for _, line := range strings.Split(scrape, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	t.Errorf("scrape lacks %s", series)
	return -1
}

// curl runs curl --unix-socket admin with args and returns the body,
// failing the test on an HTTP error.
func curl(t *testing.T, admin string, args ...string) string {
	t.Helper()
	out, err := exec.Command("curl", append([]string{"-sS", "--fail-with-body", "--unix-socket", admin}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("curl %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// cli runs the l2tpv3-netdev client subcommands.
func cli(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(sidecarBin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("l2tpv3-netdev %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// pingAll pings count times and wants every reply but one (TCG guests
// occasionally miss a one-second deadline).
func pingAll(vm *guest.VM, addr string, count int) error {
	out, _ := vm.Run(fmt.Sprintf("ping -c %d -w %d %s", count, count+8, addr), pingTimeout+10*time.Second)
	m := regexp.MustCompile(`(\d+) packets received`).FindStringSubmatch(out)
	if m == nil {
		return fmt.Errorf("no ping summary: %s", out)
	}
	if n, _ := strconv.Atoi(m[1]); n < count-1 {
		return fmt.Errorf("%d of %d replies: %s", n, count, out)
	}
	return nil
}

// contains reports whether list holds s.
func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
