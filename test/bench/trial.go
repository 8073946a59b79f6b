package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Paths (devices under test) and directions.
const (
	pathSidecar = "sidecar"
	pathQEMU    = "qemu"
	pathLimit   = "limit"
	// pathVhost ("vhostuser") is in vhostuser.go, pathTestpmd in testpmd.go.

	dirEncap    = "encap"    // VM → net: stream writer → device → UDP sink
	dirDecap    = "decap"    // net → VM: UDP blaster → device → stream reader
	dirLoopback = "loopback" // limit: UDP blaster → UDP sink, no device

	modeBlast    = "blast"    // sources flat out
	modeLossless = "lossless" // decap: highest paced rate within the loss tolerance
	// modeTrafgen ("trafgen": decap and limit, trafgen flat out) is in trafgen.go.
)

// Trial timing.
const (
	sampleEvery = 100 * time.Millisecond // stall detection granularity
	probeEvery  = 50 * time.Millisecond  // priming: resend a probe this often
	drainQuiet  = 200 * time.Millisecond // drained: no delivery for this long
	drainPoll   = 20 * time.Millisecond
)

// source generates frames until stopped.
type source interface {
	run() error
	probe() error
	stop()
	close()
	sent() uint64
}

// sink counts and checks frames until stopped.
type sink interface {
	run() error
	stop()
	close()
	delivered() uint64
	report() sinkReport
}

// trialSpec is one measurement.
type trialSpec struct {
	path, dir    string
	size         int
	rate         float64 // packets/s for the UDP blaster; 0 = flat out
	trafgen      bool    // the network side is trafgen, not the blaster
	warm, window time.Duration
}

// trialResult is what one measurement saw. Rates are over the window;
// Sent, Delivered and loss are over the whole trial after priming, after
// draining; the probes are counted apart (the device's counters and the
// socket drop counts include them).
type trialResult struct {
	Mpps            float64    `json:"mpps"`
	OfferedMpps     float64    `json:"offered_mpps"`
	RateMpps        float64    `json:"paced_mpps,omitempty"`
	Sent            uint64     `json:"sent"`
	Delivered       uint64     `json:"delivered"`
	ProbesSent      uint64     `json:"probes_sent"`
	ProbesDelivered uint64     `json:"probes_delivered"`
	LossPct         float64    `json:"loss_pct"`
	StallIntervals  int        `json:"stall_intervals"`
	Sink            sinkReport `json:"sink"`
	DUTSocketDrops  uint64     `json:"dut_socket_drops"`
	SinkSocketDrops uint64     `json:"sink_socket_drops"`
	DUT             *dutReport `json:"dut,omitempty"`
	Err             string     `json:"error,omitempty"`
}

// runner runs trials with the harness's settings.
type runner struct {
	devices    map[string]func() device
	batch      int
	writeBytes int
	sinkRcvbuf int
	sinkGRO    bool
	drainMax   time.Duration
	dir        string
	trafgenBin string
}

// freePorts returns n distinct UDP ports free on 127.0.0.1 right now.
func freePorts(n int) ([]int, error) {
	var ports []int
	var conns []net.PacketConn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range n {
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		conns = append(conns, c)
		ports = append(ports, c.LocalAddr().(*net.UDPAddr).Port)
	}
	return ports, nil
}

// rig is one trial's wiring.
type rig struct {
	src  source
	snk  sink
	dev  device   // nil for the limit
	conn net.Conn // the VM side's stream; nil for the limit
}

// release frees what the rig holds: the connection, then the device
// (returning its report), then the sockets.
func (g *rig) release() *dutReport {
	var rep *dutReport
	if g.conn != nil {
		g.conn.Close()
	}
	if g.dev != nil {
		r := g.dev.stop()
		rep = &r
	}
	if g.src != nil {
		g.src.close()
	}
	if g.snk != nil {
		g.snk.close()
	}
	return rep
}

// run performs one trial: set up, prime, warm up, measure, stop, drain,
// tear down.
func (r *runner) run(spec trialSpec) trialResult {
	ports, err := freePorts(2)
	if err != nil {
		return trialResult{Err: err.Error()}
	}
	dutPort, netPort := ports[0], ports[1]
	g, err := r.setup(spec, dutPort, netPort)
	if err != nil {
		return trialResult{Err: err.Error()}
	}
	snkDone := goRun(g.snk.run)
	res := r.measure(spec, g.src, g.snk)
	if spec.dir == dirDecap {
		_, res.DUTSocketDrops, _ = procUDP(dutPort)
	} else {
		sinkPort := map[string]int{dirEncap: netPort, dirLoopback: dutPort}[spec.dir]
		_, res.SinkSocketDrops, _ = procUDP(sinkPort)
	}
	g.snk.stop()
	r.noteErr(&res, <-snkDone)
	res.Sink = g.snk.report()
	res.DUT = g.release()
	if spec.trafgen {
		// Every trafgen frame carries sequence number 0: no order to check.
		res.Sink.Late, res.Sink.Skipped = 0, 0
	}
	if res.DUT != nil && res.DUT.Killed {
		r.noteErr(&res, errors.New("device ignored SIGTERM and was killed"))
	}
	if res.Sent > 0 {
		res.LossPct = 100 * float64(int64(res.Sent)-int64(res.Delivered)) / float64(res.Sent)
	}
	res.RateMpps = spec.rate / 1e6
	return res
}

// goRun runs f in a goroutine and returns the channel its error comes on.
func goRun(f func() error) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- f() }()
	return ch
}

// setup starts the device (if any) and builds the trial's source and sink:
// limit: blaster → sink on the would-be device port; encap: stream writer
// → device → sink on the network port; decap: blaster on the network port
// → device → stream reader. Nothing is left running on error.
func (r *runner) setup(spec trialSpec, dutPort, netPort int) (g *rig, err error) {
	g = &rig{}
	defer func() {
		if err != nil {
			g.release()
		}
	}()
	if spec.dir != dirDecap {
		// The limit's sink stands in for the device's port and takes the
		// blaster's session; the encap sink is the device's peer.
		port, session := netPort, uint32(txSession)
		if spec.dir == dirLoopback {
			port, session = dutPort, rxSession
		}
		snk, err := newUDPSink(port, session, spec.size, r.batch, r.sinkRcvbuf, r.sinkGRO)
		if err != nil {
			return g, err
		}
		snk.anyFrame = spec.path == pathTestpmd // testpmd sends its own frames
		g.snk = snk
	}
	if spec.dir != dirLoopback {
		newDev, ok := r.devices[spec.path]
		if !ok {
			return g, fmt.Errorf("no device %q", spec.path)
		}
		dev := newDev()
		if p, ok := dev.(interface{ pin(string) }); ok && spec.trafgen {
			p.pin(trafgenDUTCPUs)
		} else if ok && spec.path == pathTestpmd {
			p.pin(testpmdFreeCPUs)
		}
		sock := filepath.Join(r.dir, "dut.sock")
		os.Remove(sock)
		if g.conn, err = dev.start(sock, dutPort, netPort); err != nil {
			return g, err
		}
		g.dev = dev
		if err := waitBound(dutPort); err != nil {
			return g, err
		}
	}
	rd, rings := g.dev.(ringDevice)
	switch {
	case spec.dir == dirEncap && rings:
		g.src = rd.vmSource(spec.size)
		return g, nil
	case spec.dir == dirEncap:
		g.src = newStreamWriter(g.conn, spec.size, r.writeBytes)
		return g, nil
	case spec.dir == dirDecap && rings:
		g.snk = rd.vmSink(spec.size)
	case spec.dir == dirDecap:
		g.snk = newStreamReader(g.conn, spec.size)
	}
	src, err := r.networkSource(spec, netPort, dutPort)
	if err != nil {
		return g, err
	}
	g.src = src
	return g, nil
}

// networkSource builds the decap and limit source: our blaster, or trafgen
// sending the same packets.
func (r *runner) networkSource(spec trialSpec, netPort, dutPort int) (source, error) {
	if !spec.trafgen {
		return newUDPBlaster(netPort, dutPort, rxSession, spec.size, r.batch, spec.rate)
	}
	p := trafgenPacket{srcPort: netPort, dstPort: dutPort, session: rxSession, frameSize: spec.size}
	return newTrafgenSource(r.trafgenBin, r.dir, p)
}

// waitBound waits until something has bound UDP port on 127.0.0.1.
func waitBound(port int) error {
	deadline := time.Now().Add(startTimeout)
	for time.Now().Before(deadline) {
		if bound, _, err := procUDP(port); err != nil || bound {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("nothing bound UDP port %d", port)
}

// measure primes the path, runs the source through warm-up and the window,
// stops it, and drains the (already running) sink, which the caller stops.
func (r *runner) measure(spec trialSpec, src source, snk sink) trialResult {
	var res trialResult
	if err := prime(src, snk); err != nil {
		res.Err = err.Error()
		return res
	}
	sBase, dBase := src.sent(), snk.delivered()
	res.ProbesSent, res.ProbesDelivered = sBase, dBase
	srcErr := goRun(src.run)

	time.Sleep(spec.warm)
	t0, s0, d0 := time.Now(), src.sent(), snk.delivered()
	last := d0
	for next := t0.Add(sampleEvery); next.Before(t0.Add(spec.window)); next = next.Add(sampleEvery) {
		time.Sleep(time.Until(next))
		if d := snk.delivered(); d == last {
			res.StallIntervals++
		} else {
			last = d
		}
	}
	time.Sleep(time.Until(t0.Add(spec.window)))
	el := time.Since(t0).Seconds()
	res.Mpps = float64(snk.delivered()-d0) / el / 1e6
	res.OfferedMpps = float64(src.sent()-s0) / el / 1e6

	src.stop()
	r.noteErr(&res, <-srcErr)
	res.Sent = src.sent() - sBase
	res.Delivered = r.drain(snk, src.sent()) - dBase
	return res
}

// prime sends single probe frames until one comes out of the sink, so
// that a device still attaching its ends (the sidecar drops frames that
// arrive before it has attached the VM's connection) costs no measured
// frames. Counting starts after priming.
func prime(src source, snk sink) error {
	deadline := time.Now().Add(startTimeout)
	for snk.delivered() == 0 {
		if time.Now().After(deadline) {
			return errors.New("no probe frame came through the device within " + startTimeout.String())
		}
		if err := src.probe(); err != nil {
			return err
		}
		for t := time.Now(); snk.delivered() == 0 && time.Since(t) < probeEvery; {
			time.Sleep(time.Millisecond)
		}
	}
	return nil
}

// drain waits until the sink has everything that was sent, or nothing
// has arrived for drainQuiet, or drainMax passed; it returns the count.
func (r *runner) drain(snk sink, sent uint64) uint64 {
	deadline := time.Now().Add(r.drainMax)
	got, since := snk.delivered(), time.Now()
	for got < sent && time.Since(since) < drainQuiet && time.Now().Before(deadline) {
		time.Sleep(drainPoll)
		if d := snk.delivered(); d != got {
			got, since = d, time.Now()
		}
	}
	return got
}

// noteErr appends err, if any, to the trial's error text.
func (r *runner) noteErr(res *trialResult, err error) {
	if err == nil {
		return
	}
	if res.Err != "" {
		res.Err += "; "
	}
	res.Err += err.Error()
}
