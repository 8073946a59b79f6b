package metrics

import (
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/backend"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/frontend"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/l2tp"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/pump"
)

// fakePorts returns statuses whose counters grow with every scrape.
func fakePorts(n *atomic.Uint64) func() []backend.PortStatus {
	return func() []backend.PortStatus {
		k := n.Add(1)
		var s l2tp.StatsSnapshot
		s.RxPackets, s.RxBytes, s.TxPackets, s.TxBytes = k, 100*k, 2*k, 200*k
		s.Drops[l2tp.DropCookie] = k
		s.TxStalls, s.TxStallNanos = k, uint64(k)*5e8
		s.AboveMTU = 10 * k
		s.TxQueueFull, s.GSOFallbacks, s.GSOPackets = 4*k, k, 20*k
		s.NetErrors[l2tp.NetErrRefused] = 2 * k
		var sock l2tp.SocketStatus
		sock.Local, sock.Sessions = "127.0.0.1:1701", []uint32{32, 40}
		sock.Stats.Drops[l2tp.DropSession] = 3 * k
		return []backend.PortStatus{
			{Name: "vm1", SessionID: 32, State: backend.PortRunning, Uptime: 3, Session: s, Socket: &sock,
				Ring: pump.RingOccupancy{ToVM: int64(k), ToNetwork: 64},
				Wires: []pump.WireStatus{{Direction: "to_network", LinkUp: true, Queued: 7,
					Impairment: "delay 50ms 10ms distribution normal loss gemodel 1% 25% 100% 0% rate 10000000bit"},
					{Direction: "to_vm", LinkUp: false}},
				FrontEnd: frontend.Status{Kind: "stream", Address: "unix:/x", Connected: true, Connections: 1,
					Waits: k, WaitNanos: uint64(k) * 1e9}},
			{Name: "vm2", SessionID: 33, State: backend.PortFailed, Error: "boom",
				FrontEnd: frontend.Status{Kind: "vhost-user", Address: "/y", Queues: []frontend.QueueStatus{{FromVM: k, ToVM: k}}}},
		}
	}
}

// Every family is exported with port and session labels, the values come
// from the status at scrape time, and they move between scrapes.
func TestCollector(t *testing.T) {
	var n atomic.Uint64
	c := NewCollector(fakePorts(&n))
	if problems, err := testutil.CollectAndLint(c); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", err, problems)
	}
	n.Store(0)
	want := `
# HELP l2tpv3_netdev_packets_total Ethernet frames carried through the port, by direction (to_vm: from the tunnel to the VM; to_network: from the VM into the tunnel).
# TYPE l2tpv3_netdev_packets_total counter
l2tpv3_netdev_packets_total{direction="to_network",port="vm1",session="32"} 2
l2tpv3_netdev_packets_total{direction="to_network",port="vm2",session="33"} 0
l2tpv3_netdev_packets_total{direction="to_vm",port="vm1",session="32"} 1
l2tpv3_netdev_packets_total{direction="to_vm",port="vm2",session="33"} 0
# HELP l2tpv3_netdev_port_state 1 for the port's current state (running, failed, closed), 0 for the others.
# TYPE l2tpv3_netdev_port_state gauge
l2tpv3_netdev_port_state{port="vm1",session="32",state="closed"} 0
l2tpv3_netdev_port_state{port="vm1",session="32",state="failed"} 0
l2tpv3_netdev_port_state{port="vm1",session="32",state="running"} 1
l2tpv3_netdev_port_state{port="vm2",session="33",state="closed"} 0
l2tpv3_netdev_port_state{port="vm2",session="33",state="failed"} 1
l2tpv3_netdev_port_state{port="vm2",session="33",state="running"} 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want),
		"l2tpv3_netdev_packets_total", "l2tpv3_netdev_port_state"); err != nil {
		t.Error(err)
	}
	// The second scrape sees the counters moved.
	want2 := `
# HELP l2tpv3_netdev_backpressure_stall_seconds_total Time spent waiting for the peer, by direction (to_vm is measured on stream front ends only).
# TYPE l2tpv3_netdev_backpressure_stall_seconds_total counter
l2tpv3_netdev_backpressure_stall_seconds_total{direction="to_network",port="vm1",session="32"} 1
l2tpv3_netdev_backpressure_stall_seconds_total{direction="to_network",port="vm2",session="33"} 0
l2tpv3_netdev_backpressure_stall_seconds_total{direction="to_vm",port="vm1",session="32"} 2
l2tpv3_netdev_backpressure_stall_seconds_total{direction="to_vm",port="vm2",session="33"} 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want2), "l2tpv3_netdev_backpressure_stall_seconds_total"); err != nil {
		t.Error(err)
	}
	// The ring occupancy gauges and the above-MTU counter (third scrape).
	want3 := `
# HELP l2tpv3_netdev_above_mtu_total Frames from the VM whose encapsulated datagram exceeded the underlay MTU (sent to fragment or dropped as oversize, per the oversize= policy).
# TYPE l2tpv3_netdev_above_mtu_total counter
l2tpv3_netdev_above_mtu_total{port="vm1",session="32"} 30
l2tpv3_netdev_above_mtu_total{port="vm2",session="33"} 0
# HELP l2tpv3_netdev_ring_occupancy Frames held inside the process waiting for the other side, by direction (to_vm: read from the tunnel, not yet delivered to the VM; to_network: read from the VM, not yet sent).
# TYPE l2tpv3_netdev_ring_occupancy gauge
l2tpv3_netdev_ring_occupancy{direction="to_network",port="vm1",session="32"} 64
l2tpv3_netdev_ring_occupancy{direction="to_network",port="vm2",session="33"} 0
l2tpv3_netdev_ring_occupancy{direction="to_vm",port="vm1",session="32"} 3
l2tpv3_netdev_ring_occupancy{direction="to_vm",port="vm2",session="33"} 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want3), "l2tpv3_netdev_ring_occupancy", "l2tpv3_netdev_above_mtu_total"); err != nil {
		t.Error(err)
	}
	// The send side's host counters (fourth scrape).
	want4 := `
# HELP l2tpv3_netdev_gso_fallbacks_total UDP GSO messages the kernel refused (route flap, firewall reload, smaller path MTU): sent one by one, GSO probed again after a back-off.
# TYPE l2tpv3_netdev_gso_fallbacks_total counter
l2tpv3_netdev_gso_fallbacks_total{port="vm1",session="32"} 4
l2tpv3_netdev_gso_fallbacks_total{port="vm2",session="33"} 0
# HELP l2tpv3_netdev_tx_queue_full_total Times the host's egress queue (qdisc) refused a datagram (ENOBUFS): it was kept and resent, the VM held back meanwhile.
# TYPE l2tpv3_netdev_tx_queue_full_total counter
l2tpv3_netdev_tx_queue_full_total{port="vm1",session="32"} 16
l2tpv3_netdev_tx_queue_full_total{port="vm2",session="33"} 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want4), "l2tpv3_netdev_gso_fallbacks_total", "l2tpv3_netdev_tx_queue_full_total"); err != nil {
		t.Error(err)
	}
	want5 := `
# HELP l2tpv3_netdev_net_errors_total Errors the network or this host reported for sent datagrams (ICMP or local, from the socket's error queue), by kind (unreachable, refused, prohibited, too_big, other).
# TYPE l2tpv3_netdev_net_errors_total counter
l2tpv3_netdev_net_errors_total{kind="other",port="vm1",session="32"} 0
l2tpv3_netdev_net_errors_total{kind="other",port="vm2",session="33"} 0
l2tpv3_netdev_net_errors_total{kind="prohibited",port="vm1",session="32"} 0
l2tpv3_netdev_net_errors_total{kind="prohibited",port="vm2",session="33"} 0
l2tpv3_netdev_net_errors_total{kind="refused",port="vm1",session="32"} 10
l2tpv3_netdev_net_errors_total{kind="refused",port="vm2",session="33"} 0
l2tpv3_netdev_net_errors_total{kind="too_big",port="vm1",session="32"} 0
l2tpv3_netdev_net_errors_total{kind="too_big",port="vm2",session="33"} 0
l2tpv3_netdev_net_errors_total{kind="unreachable",port="vm1",session="32"} 0
l2tpv3_netdev_net_errors_total{kind="unreachable",port="vm2",session="33"} 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want5), "l2tpv3_netdev_net_errors_total"); err != nil {
		t.Error(err)
	}
	// A shared tunnel (sixth scrape): vm1 has the socket's lowest session,
	// so the socket's own drops are exported on it, and only there.
	want6 := `
# HELP l2tpv3_netdev_tunnel_sessions Sessions on the port's socket: 1 alone, more in a shared tunnel (ports with the same local address, encapsulation and UDP port).
# TYPE l2tpv3_netdev_tunnel_sessions gauge
l2tpv3_netdev_tunnel_sessions{port="vm1",session="32"} 2
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want6), "l2tpv3_netdev_tunnel_sessions"); err != nil {
		t.Error(err)
	}
	// Seventh scrape: the socket's drops, on vm1 alone.
	want7 := "# HELP l2tpv3_netdev_tunnel_drops_total " + descHelp(descTunnelDrops) + "\n# TYPE l2tpv3_netdev_tunnel_drops_total counter\n"
	for d := range l2tp.Drop(l2tp.NumDrops) {
		v := 0
		if d == l2tp.DropSession {
			v = 21
		}
		want7 += fmt.Sprintf("l2tpv3_netdev_tunnel_drops_total{port=\"vm1\",reason=%q,session=\"32\"} %d\n", d.String(), v)
	}
	if err := testutil.CollectAndCompare(c, strings.NewReader(want7), "l2tpv3_netdev_tunnel_drops_total"); err != nil {
		t.Error(err)
	}
}

// descHelp is a Desc's help text.
func descHelp(d *prometheus.Desc) string {
	s := d.String()
	i := strings.Index(s, `help: "`) + len(`help: "`)
	return s[i : i+strings.Index(s[i:], `"`)]
}

// Every documented family is present for each port.
func TestCollectorFamilies(t *testing.T) {
	var n atomic.Uint64
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(fakePorts(&n)))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, mf := range mfs {
		got[mf.GetName()] = true
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["port"] == "" || labels["session"] == "" {
				t.Errorf("%s: a metric without port/session labels: %v", mf.GetName(), labels)
			}
		}
	}
	for _, name := range FamilyNames() {
		if !got[name] {
			t.Errorf("family %s missing", name)
		}
	}
	if testutil.CollectAndCount(NewCollector(fakePorts(&n)), "l2tpv3_netdev_drops_total") != 2*l2tp.NumDrops {
		t.Error("drops_total: want one series per port and reason")
	}
}

// Handler serves the text format with the ports' and the runtime's metrics.
func TestHandler(t *testing.T) {
	var n atomic.Uint64
	srv := httptest.NewServer(Handler(fakePorts(&n)))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{`l2tpv3_netdev_bytes_total{direction="to_vm",port="vm1",session="32"} 100`,
		`l2tpv3_netdev_drops_total{port="vm1",reason="cookie",session="32"} 1`, "go_goroutines"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
}

// The wire gauges say what each direction is set to.
func TestCollectorWires(t *testing.T) {
	var n atomic.Uint64
	want := `
# HELP l2tpv3_netdev_impairment_loss_ratio Share of frames the impairment loses in the long run (random loss, or the Gilbert-Elliott model's steady state).
# TYPE l2tpv3_netdev_impairment_loss_ratio gauge
l2tpv3_netdev_impairment_loss_ratio{direction="to_network",port="vm1",session="32"} 0.038461538461538464
l2tpv3_netdev_impairment_loss_ratio{direction="to_vm",port="vm1",session="32"} 0
# HELP l2tpv3_netdev_impairment_rate_bytes_per_second Rate limit on Ethernet frame bytes in that direction (the rate in bit/s divided by 8), 0 for none.
# TYPE l2tpv3_netdev_impairment_rate_bytes_per_second gauge
l2tpv3_netdev_impairment_rate_bytes_per_second{direction="to_network",port="vm1",session="32"} 1.25e+06
l2tpv3_netdev_impairment_rate_bytes_per_second{direction="to_vm",port="vm1",session="32"} 0
# HELP l2tpv3_netdev_link_up 1 while the port's link is up in that direction, 0 while it is cut (port link NAME down).
# TYPE l2tpv3_netdev_link_up gauge
l2tpv3_netdev_link_up{direction="to_network",port="vm1",session="32"} 1
l2tpv3_netdev_link_up{direction="to_vm",port="vm1",session="32"} 0
`
	err := testutil.CollectAndCompare(NewCollector(fakePorts(&n)), strings.NewReader(want),
		"l2tpv3_netdev_link_up", "l2tpv3_netdev_impairment_loss_ratio", "l2tpv3_netdev_impairment_rate_bytes_per_second")
	if err != nil {
		t.Error(err)
	}
}
