// Package metrics exports the ports' counters to Prometheus. The Collector
// reads the ports' status at scrape time: nothing is added to the data path.
//
// It may import backend and what backend builds on; never admin or cmd.
package metrics

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/backend"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/impair"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/l2tp"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/pump"
)

// Namespace prefixes every metric name.
const Namespace = "l2tpv3_netdev"

// Directions as the direction label spells them: to_vm is network → VM
// (decapsulated, the session's rx), to_network is VM → network (tx).
const (
	ToVM      = "to_vm"
	ToNetwork = "to_network"
)

// portLabels are on every per-port metric.
var portLabels = []string{"port", "session"}

// familyNames are the exported metric names, in the order described.
var familyNames []string

// FamilyNames lists every metric name the Collector exports.
func FamilyNames() []string { return append([]string(nil), familyNames...) }

// newDesc describes one per-port metric with extra labels.
func newDesc(name, help string, labels ...string) *prometheus.Desc {
	familyNames = append(familyNames, Namespace+"_"+name)
	return prometheus.NewDesc(Namespace+"_"+name, help, append(append([]string{}, portLabels...), labels...), nil)
}

// The metrics, one Desc each.
var (
	descPackets = newDesc("packets_total",
		"Ethernet frames carried through the port, by direction (to_vm: from the tunnel to the VM; to_network: from the VM into the tunnel).", "direction")
	descBytes = newDesc("bytes_total",
		"Ethernet frame bytes carried through the port (without the L2TPv3 header), by direction.", "direction")
	descDrops = newDesc("drops_total",
		"Packets dropped by the L2TPv3 session, by reason (session, cookie, sequence, truncated, source, malformed, control, oversize: too big for a datagram or, with oversize=drop, for the underlay MTU; send_error, vm_down, kernel; link_down: the port's link cut in that direction; impair_loss, impair_rate, impair_limit: dropped by impairments: lost on purpose, behind a full rate-limit queue, on a full delay line with limit set; vm_slow: the VM did not take frames while other sessions of its shared tunnel flowed, and its queue was full).", "reason")
	descFrontEndDrops = newDesc("frontend_drops_total",
		"Frames the front end dropped (vhost-user: unusable descriptors), by direction.", "direction")
	descStalls = newDesc("backpressure_stalls_total",
		"Times a direction waited for its peer (to_vm: the VM could not take frames; to_network: the socket was full).", "direction")
	descStallSeconds = newDesc("backpressure_stall_seconds_total",
		"Time spent waiting for the peer, by direction (to_vm is measured on stream front ends only).", "direction")
	descSeqLost = newDesc("sequence_lost_total",
		"Sequence numbers skipped by accepted packets (RFC 4719 sequencing).")
	descConnected = newDesc("frontend_connected",
		"1 while a VM (QEMU) is attached to the port's front end, else 0.")
	descConnections = newDesc("frontend_connections_total",
		"QEMU connections (stream) or sessions (vhost-user) served by the front end.")
	descProtocolErrors = newDesc("frontend_protocol_errors_total",
		"Front-end protocol errors (stream: impossible length prefix; vhost-user: bad message).")
	descRingViolations = newDesc("frontend_ring_violations_total",
		"Guest virtqueue violations seen by the vhost-user front end.")
	descMemoryFaults = newDesc("frontend_memory_faults_total",
		"vhost-user connections ended by a fault in guest memory (the front end shrank the file behind it).")
	descState = newDesc("port_state",
		"1 for the port's current state (running, failed, closed), 0 for the others.", "state")
	descUptime = newDesc("port_uptime_seconds",
		"Seconds since the port started.")
	descInfo = newDesc("port_info",
		"Constant 1, labelled with the port's front end and L2TPv3 endpoints.", "frontend", "address", "local", "peer")
	descCaptureActive = newDesc("capture_active",
		"1 while a pcap capture of the port runs.")
	descRefusedPeers = newDesc("frontend_refused_peers_total",
		"Front-end connections refused because the peer's uid is not allowed (allow-uid=).")
	descQueueFrames = newDesc("queue_frames_total",
		"Frames through each vhost-user queue pair, by direction.", "queue", "direction")
	descRingOccupancy = newDesc("ring_occupancy",
		"Frames held inside the process waiting for the other side, by direction (to_vm: read from the tunnel, not yet delivered to the VM; to_network: read from the VM, not yet sent).", "direction")
	descAboveMTU = newDesc("above_mtu_total",
		"Frames from the VM whose encapsulated datagram exceeded the underlay MTU (sent to fragment or dropped as oversize, per the oversize= policy).")

	descQueueFull = newDesc("tx_queue_full_total",
		"Times the host's egress queue (qdisc) refused a datagram (ENOBUFS): it was kept and resent, the VM held back meanwhile.")
	descGSOFallbacks = newDesc("gso_fallbacks_total",
		"UDP GSO messages the kernel refused (route flap, firewall reload, smaller path MTU): sent one by one, GSO probed again after a back-off.")
	descGSOPackets = newDesc("gso_packets_total",
		"Frames sent inside UDP GSO messages (part of packets_total to_network).")
	descNetErrors = newDesc("net_errors_total",
		"Errors the network or this host reported for sent datagrams (ICMP or local, from the socket's error queue), by kind (unreachable, refused, prohibited, too_big, other).", "kind")

	descLinkUp = newDesc("link_up",
		"1 while the port's link is up in that direction, 0 while it is cut (port link NAME down).", "direction")
	descImpairDelay = newDesc("impairment_delay_seconds",
		"Delay the port adds in that direction (impairment delay), 0 without.", "direction")
	descImpairJitter = newDesc("impairment_jitter_seconds",
		"Jitter around that delay (uniform: half-width; normal: standard deviation).", "direction")
	descImpairLoss = newDesc("impairment_loss_ratio",
		"Share of frames the impairment loses in the long run (random loss, or the Gilbert-Elliott model's steady state).", "direction")
	descImpairRate = newDesc("impairment_rate_bytes_per_second",
		"Rate limit on Ethernet frame bytes in that direction (the rate in bit/s divided by 8), 0 for none.", "direction")
	descImpairDuplicate = newDesc("impairment_duplicate_ratio",
		"Share of frames the impairment duplicates.", "direction")
	descImpairCorrupt = newDesc("impairment_corrupt_ratio",
		"Share of frames with one bit flipped by the impairment.", "direction")
	descImpairReorder = newDesc("impairment_reorder_ratio",
		"Reorder probability (frames sent at once, ahead of delayed ones).", "direction")
	descImpairQueued = newDesc("impairment_queued_frames",
		"Frames waiting in the impairment's delay line now.", "direction")
	descTunnelSessions = newDesc("tunnel_sessions",
		"Sessions on the port's socket: 1 alone, more in a shared tunnel (ports with the same local address, encapsulation and UDP port).")
	descTunnelDrops = newDesc("tunnel_drops_total",
		"Packets a shared tunnel's socket dropped that belong to none of its sessions (an unknown session, truncated, malformed, kernel), by reason; exported once per socket, on the port with its lowest session ID.", "reason")

	allDescs = []*prometheus.Desc{descLinkUp, descImpairDelay, descImpairJitter, descImpairLoss, descImpairRate,
		descImpairDuplicate, descImpairCorrupt, descImpairReorder, descImpairQueued, descPackets, descBytes, descDrops, descFrontEndDrops, descStalls,
		descStallSeconds, descSeqLost, descConnected, descConnections, descProtocolErrors,
		descRingViolations, descMemoryFaults, descState, descUptime, descInfo, descCaptureActive, descRefusedPeers, descQueueFrames,
		descRingOccupancy, descAboveMTU, descQueueFull, descGSOFallbacks, descGSOPackets, descNetErrors,
		descTunnelSessions, descTunnelDrops}
)

// states are the values of the port_state metric's state label.
var states = []backend.PortState{backend.PortRunning, backend.PortFailed, backend.PortClosed}

// Collector is a prometheus.Collector over a set of ports.
type Collector struct {
	source func() []backend.PortStatus
}

// NewCollector reports the ports source returns at each scrape (e.g.
// (*backend.Ports).Statuses).
func NewCollector(source func() []backend.PortStatus) *Collector {
	return &Collector{source: source}
}

// Describe sends every metric's description.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

// Collect reads every port's status once and sends its metrics.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range c.source() {
		collectPort(ch, st)
	}
}

// emitter sends one port's metrics with its port and session labels.
type emitter struct {
	ch     chan<- prometheus.Metric
	labels []string
}

// counter sends a counter with the port labels and extra ones.
func (e emitter) counter(d *prometheus.Desc, v float64, extra ...string) {
	e.ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, append(e.labels[:2:2], extra...)...)
}

// gauge sends a gauge with the port labels and extra ones.
func (e emitter) gauge(d *prometheus.Desc, v float64, extra ...string) {
	e.ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append(e.labels[:2:2], extra...)...)
}

// collectPort sends one port's metrics.
func collectPort(ch chan<- prometheus.Metric, st backend.PortStatus) {
	e := emitter{ch: ch, labels: []string{st.Name, strconv.FormatUint(uint64(st.SessionID), 10)}}
	s, fe := st.Session, st.FrontEnd
	e.counter(descPackets, float64(s.RxPackets), ToVM)
	e.counter(descPackets, float64(s.TxPackets), ToNetwork)
	e.counter(descBytes, float64(s.RxBytes), ToVM)
	e.counter(descBytes, float64(s.TxBytes), ToNetwork)
	for d := range l2tp.Drop(l2tp.NumDrops) {
		e.counter(descDrops, float64(s.Drops[d]), d.String())
	}
	e.counter(descFrontEndDrops, float64(fe.ToVMDropped), ToVM)
	e.counter(descFrontEndDrops, float64(fe.FromVMDropped), ToNetwork)
	e.counter(descStalls, float64(fe.Waits), ToVM)
	e.counter(descStalls, float64(s.TxStalls), ToNetwork)
	e.counter(descStallSeconds, float64(fe.WaitNanos)/1e9, ToVM)
	e.counter(descStallSeconds, float64(s.TxStallNanos)/1e9, ToNetwork)
	e.counter(descSeqLost, float64(s.SeqLost))
	e.gauge(descConnected, boolValue(fe.Connected))
	e.counter(descConnections, float64(fe.Connections))
	e.counter(descProtocolErrors, float64(fe.ProtocolErrors))
	e.counter(descRingViolations, float64(fe.RingViolations))
	e.counter(descMemoryFaults, float64(fe.MemoryFaults))
	for _, state := range states {
		e.gauge(descState, boolValue(st.State == state), string(state))
	}
	e.gauge(descUptime, st.Uptime)
	e.gauge(descInfo, 1, fe.Kind, fe.Address, st.Local, st.Peer)
	e.gauge(descCaptureActive, boolValue(st.Capture != nil))
	e.counter(descRefusedPeers, float64(fe.RefusedPeers))
	for i, q := range fe.Queues {
		e.counter(descQueueFrames, float64(q.ToVM), strconv.Itoa(i), ToVM)
		e.counter(descQueueFrames, float64(q.FromVM), strconv.Itoa(i), ToNetwork)
	}
	e.gauge(descRingOccupancy, float64(st.Ring.ToVM), ToVM)
	e.gauge(descRingOccupancy, float64(st.Ring.ToNetwork), ToNetwork)
	e.counter(descAboveMTU, float64(s.AboveMTU))
	e.counter(descQueueFull, float64(s.TxQueueFull))
	e.counter(descGSOFallbacks, float64(s.GSOFallbacks))
	e.counter(descGSOPackets, float64(s.GSOPackets))
	for k := range l2tp.NetError(l2tp.NumNetErrors) {
		e.counter(descNetErrors, float64(s.NetErrors[k]), k.String())
	}
	for _, w := range st.Wires {
		collectWire(e, w)
	}
	collectTunnel(e, st)
}

// collectTunnel sends the port's socket's session count and, from the
// port with the socket's lowest session ID only (so that a sum over ports
// counts each socket once), the drops that belong to no session.
func collectTunnel(e emitter, st backend.PortStatus) {
	if st.Socket == nil {
		if st.State == backend.PortRunning {
			e.gauge(descTunnelSessions, 1)
		}
		return
	}
	e.gauge(descTunnelSessions, float64(len(st.Socket.Sessions)))
	if len(st.Socket.Sessions) == 0 || st.Socket.Sessions[0] != st.SessionID {
		return
	}
	for d := range l2tp.Drop(l2tp.NumDrops) {
		e.counter(descTunnelDrops, float64(st.Socket.Stats.Drops[d]), d.String())
	}
}

// collectWire sends one direction's link state and impairment settings.
func collectWire(e emitter, w pump.WireStatus) {
	e.gauge(descLinkUp, boolValue(w.LinkUp), w.Direction)
	spec, _ := impair.Parse(w.Impairment) // written by Spec.String: parses
	e.gauge(descImpairDelay, spec.Delay.Seconds(), w.Direction)
	e.gauge(descImpairJitter, spec.Jitter.Seconds(), w.Direction)
	e.gauge(descImpairLoss, spec.MeanLoss(), w.Direction)
	e.gauge(descImpairRate, float64(spec.Rate)/8, w.Direction)
	e.gauge(descImpairDuplicate, spec.Duplicate, w.Direction)
	e.gauge(descImpairCorrupt, spec.Corrupt, w.Direction)
	e.gauge(descImpairReorder, spec.Reorder, w.Direction)
	e.gauge(descImpairQueued, float64(w.Queued), w.Direction)
}

// boolValue is 1 for true, as gauges say yes.
func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Handler serves /metrics for source, with the Go runtime and process
// metrics beside the ports'.
func Handler(source func() []backend.PortStatus) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(source),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}
