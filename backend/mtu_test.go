package backend

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/internal/testlog"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/internal/testport"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/l2tp"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/pump/pumptest"
)

// twoUDPPorts returns two distinct UDP ports free on 127.0.0.1.
func twoUDPPorts(t testing.TB) (int, int) {
	t.Helper()
	return testport.UDP(t, "127.0.0.1"), testport.UDP(t, "127.0.0.1")
}

// openTestPort parses and opens a port named "p" on loopback UDP; extra
// is appended to its option string. It returns the port and the mirror
// session's option string.
func openTestPort(t *testing.T, spec PortSpec, extra string, log *testlog.Buffer) (*Port, string) {
	t.Helper()
	a, b := twoUDPPorts(t)
	spec.Name = "p"
	spec.L2TPv3 = fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=%d,txsession=0x10,rxsession=0x20%s", a, b, extra)
	cfg, err := spec.Parse()
	if err != nil {
		t.Fatal(err)
	}
	p, err := OpenPort(cfg, testlog.Text(log))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p, fmt.Sprintf("src=127.0.0.1,dst=127.0.0.1,udp=on,srcport=%d,dstport=%d,txsession=0x20,rxsession=0x10", b, a)
}

// TestPortOffersInnerMTU: a vhost-user port without mtu= offers the inner
// MTU of its underlay (underlay-mtu=, else loopback's route; 4 less with
// vlan=on); one with a
// larger mtu= offers it and warns once, naming both numbers. The status
// reports the inner MTU and where the underlay's came from.
func TestPortOffersInnerMTU(t *testing.T) {
	cases := []struct {
		vhost, extra string
		offered      int
		inner        int
		underlay     l2tp.Underlay
		warn         string
	}{
		{"", ",underlay-mtu=1280", 1230, 1230, l2tp.Underlay{MTU: 1280, From: "underlay-mtu"}, ""},
		{"", ",l2spec=default,underlay-mtu=1500", 1446, 1446, l2tp.Underlay{MTU: 1500, From: "underlay-mtu"}, ""},
		{"", "", 65485, 65485, l2tp.Underlay{MTU: 65535, From: "route"}, ""},
		{"", ",underlay-mtu=1500,vlan=on", 1446, 1446, l2tp.Underlay{MTU: 1500, From: "underlay-mtu"}, ""},
		{",mtu=9000", ",underlay-mtu=1500", 9000, 1450, l2tp.Underlay{MTU: 1500, From: "underlay-mtu"},
			"mtu=9000 inner_mtu=1450 underlay_mtu=1500 underlay_mtu_from=underlay-mtu oversize=fragment"},
		{",mtu=1400", ",underlay-mtu=1500,oversize=drop", 1400, 1450, l2tp.Underlay{MTU: 1500, From: "underlay-mtu"}, ""},
	}
	for i, c := range cases {
		var log testlog.Buffer
		path := filepath.Join(t.TempDir(), fmt.Sprintf("v%d.sock", i))
		p, _ := openTestPort(t, PortSpec{VhostUser: path + c.vhost}, c.extra, &log)
		st := p.Status()
		if st.FrontEnd.OfferedMTU != c.offered || st.InnerMTU != c.inner || st.Underlay == nil || *st.Underlay != c.underlay {
			t.Errorf("%s %s: offered %d, inner %d, underlay %+v; want %d, %d, %+v", c.vhost, c.extra,
				st.FrontEnd.OfferedMTU, st.InnerMTU, st.Underlay, c.offered, c.inner, c.underlay)
		}
		warned := strings.Contains(log.String(), "above the inner MTU")
		if warned != (c.warn != "") || !strings.Contains(log.String(), c.warn) {
			t.Errorf("%s %s: log %q, want warning %q", c.vhost, c.extra, log.String(), c.warn)
		}
		p.Close()
	}
}

// TestPortLogsAboveMTU: frames from the VM above the underlay MTU are
// counted and logged at most once per interval with the policy, never per
// frame; with fragment they reach the peer.
func TestPortLogsAboveMTU(t *testing.T) {
	old := DropLogInterval
	DropLogInterval = 50 * time.Millisecond
	defer func() { DropLogInterval = old }()
	var log testlog.Buffer
	sock := filepath.Join(t.TempDir(), "s.sock")
	p, mirror := openTestPort(t, PortSpec{Stream: "unix:" + sock}, ",underlay-mtu=1280", &log)
	p.Start()
	peerCfg, err := l2tp.ParseOptions(mirror)
	if err != nil {
		t.Fatal(err)
	}
	peer, err := l2tp.Open(peerCfg, l2tp.TunnelOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	qemu, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer qemu.Close()
	const n = 40
	var frames [][]byte
	for i := range n {
		frames = append(frames, pumptest.FrameN(i, 1500), pumptest.FrameN(i, 100))
	}
	if _, err := qemu.Write(pumptest.EncodeStream(frames...)); err != nil {
		t.Fatal(err)
	}
	got := 0
	buf := make([][]byte, peer.BatchSize())
	time.AfterFunc(5*time.Second, func() { peer.Close() })
	for got < 2*n {
		k, err := peer.ReadFrames(buf)
		if err != nil {
			t.Fatalf("after %d frames: %v", got, err)
		}
		got += k
	}
	// The peer may hold the frames before the sender has counted them:
	// wait for the count rather than read it once.
	deadline := time.Now().Add(2 * time.Second)
	s := p.Status().Session
	for s.AboveMTU != n && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
		s = p.Status().Session
	}
	if s.AboveMTU != n || s.Dropped() != 0 {
		t.Fatalf("session %s", s)
	}
	for !strings.Contains(log.String(), fmt.Sprintf("total=%d oversize=fragment", n)) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	lines := strings.Count(log.String(), "frames above the underlay MTU")
	if lines == 0 || lines > 3 || !strings.Contains(log.String(), "underlay_mtu=1280 underlay_mtu_from=underlay-mtu inner_mtu=1230") {
		t.Fatalf("%d lines about frames above the MTU:\n%s", lines, log.String())
	}
	if !strings.Contains(log.String(), "inner_mtu=1230 underlay_mtu=1280 underlay_mtu_from=underlay-mtu") {
		t.Errorf("the ready line lacks the MTU:\n%s", log.String())
	}
}

// TestPortWarnsSeqRecv: a port with seq=recv warns once at start that a
// Linux peer cannot serve it, and why; seq=both does not.
func TestPortWarnsSeqRecv(t *testing.T) {
	for seq, want := range map[string]int{",seq=recv": 1, ",seq=both": 0} {
		var log testlog.Buffer
		openTestPort(t, PortSpec{Stream: "unix:" + filepath.Join(t.TempDir(), "s.sock")}, seq, &log)
		if got := strings.Count(log.String(), "level=WARN msg=\"seq=recv works only with a peer"); got != want {
			t.Errorf("%s: %d warnings, want %d:\n%s", seq, got, want, log.String())
		}
		if want == 1 && !strings.Contains(log.String(), "not with Linux") {
			t.Errorf("%s: the warning does not name Linux:\n%s", seq, log.String())
		}
	}
}
