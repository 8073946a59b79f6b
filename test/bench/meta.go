package main

import (
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

// method documents, in the JSON file, how the numbers were taken.
const method = "Each trial starts the device afresh on free ports. Rates are frames delivered to the sink " +
	"during the window after the warm-up; loss is sent minus delivered over the whole trial after draining. " +
	"encap: a stream writer pushes 4-byte-length-prefixed frames in big writes (it blocks under backpressure) " +
	"to the device, whose L2TPv3/UDP packets a recvmmsg sink counts. decap: a sendmmsg blaster sends " +
	"L2TPv3/UDP packets to the device, which writes the stream a reader counts. limit: the same blaster " +
	"straight into the same sink (UDP over loopback, no device). vhostuser: the sidecar with --vhost-user, " +
	"the harness its front end (vhosttest: memfd guest memory, one queue pair of 256-entry split rings it " +
	"fills and empties itself, EVENT_IDX), in place of the stream writer and reader. " +
	"testpmd: the same sidecar with DPDK's dpdk-testpmd as the vhost-user front end (virtio-user PMD, --no-huge, " +
	"one queue pair, interactive; -l 0-1, so its forwarding lcore busy-polls CPU 1; the sidecar pinned to CPU 0 with taskset): encap is txonly (--txpkts = size; " +
	"the sink then counts any frame of the session and size), decap is rxonly; testpmd's port counters (TX-packets, " +
	"RX-packets) are the VM side's counts; blast only. trafgen: netsniff-ng's trafgen, flat out on lo (TX_RING, " +
	"--cpus 1: its worker and the loopback receive path on CPU 0; --no-sock-mem; the device, QEMU or sidecar, " +
	"pinned to CPU 1 with taskset), sends the blaster's packets " +
	"(sequence number 0 in every frame, IPv4 checksum by trafgen, UDP checksum 0) in place of the blaster, for decap " +
	"and the limit; lo's route_localnet and accept_local are 1 during those trials; sent is trafgen's own count, " +
	"the window's offered rate lo's tx_packets. " +
	"blast = sources flat out; lossless = the " +
	"highest paced blaster rate (timerfd, 50 us ticks) losing at most lossless_tol_pct, found by bisection. " +
	"Medians over runs. Gbit/s counts Ethernet frame bytes only."

// meta describes the machine and the settings of a benchmark run.
type meta struct {
	Started      time.Time `json:"started"`
	Seconds      float64   `json:"seconds"`
	Method       string    `json:"method"`
	Kernel       string    `json:"kernel"`
	CPUs         int       `json:"cpus"`
	GoVersion    string    `json:"go_version"`
	QEMU         string    `json:"qemu"`
	Sidecar      string    `json:"sidecar_binary"`
	LoadStart    string    `json:"loadavg_start"`
	LoadEnd      string    `json:"loadavg_end"`
	Runs         int       `json:"runs"`
	WarmupS      float64   `json:"warmup_s"`
	WindowS      float64   `json:"window_s"`
	Batch        int       `json:"generator_batch"`
	SidecarBatch int       `json:"sidecar_batch"`
	WriteBytes   int       `json:"stream_write_bytes"`
	SinkRcvbuf   int       `json:"sink_rcvbuf"`
	SinkGRO      bool      `json:"sink_gro"`
	LossTolPct   float64   `json:"lossless_tol_pct"`
	LossSteps    int       `json:"lossless_steps"`
	LossWindowS  float64   `json:"lossless_window_s"`
	Trafgen      string    `json:"trafgen,omitempty"`
	Testpmd      string    `json:"testpmd,omitempty"`
}

// startMeta records the machine and settings before the first trial.
func startMeta(c config) *meta {
	return &meta{
		Started: time.Now(), Method: method, Kernel: firstLine("uname", "-sr"), CPUs: runtime.NumCPU(),
		GoVersion: runtime.Version(), QEMU: firstLine(c.qemuBin, "--version"), Sidecar: c.sidecarBin,
		LoadStart: loadavg(), Runs: c.runs, WarmupS: c.warm.Seconds(), WindowS: c.window.Seconds(),
		Batch: c.batch, SidecarBatch: c.sidecarBatch, WriteBytes: c.writeBytes, SinkRcvbuf: c.sinkRcvbuf, SinkGRO: c.sinkGRO,
		LossTolPct: c.lossless.tolPct, LossSteps: c.lossless.steps, LossWindowS: c.lossless.window.Seconds(),
		Trafgen: toolVersion(c.trafgen, c.trafgenBin, "--version"),
		Testpmd: toolVersion(c.testpmdBin != "", "dpkg-query", "-W", "-f=dpdk-dev ${Version}", "dpdk-dev"),
	}
}

// toolVersion is the first line of a version command, if the tool is used.
func toolVersion(used bool, name string, args ...string) string {
	if !used {
		return ""
	}
	return firstLine(name, args...)
}

// finishMeta records the duration and the load at the end.
func finishMeta(m *meta) {
	m.Seconds = time.Since(m.Started).Seconds()
	m.LoadEnd = loadavg()
}

// firstLine returns the first line a command prints, or "" on failure.
func firstLine(name string, args ...string) string {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		return ""
	}
	line, _, _ := strings.Cut(string(out), "\n")
	return line
}

// loadavg returns /proc/loadavg without its trailing newline: other work
// on the machine skews every number, and this says how much there was.
func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.TrimSpace(string(b))
}
