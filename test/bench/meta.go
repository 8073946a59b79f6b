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
}

// startMeta records the machine and settings before the first trial.
func startMeta(c config) *meta {
	return &meta{
		Started: time.Now(), Method: method, Kernel: firstLine("uname", "-sr"), CPUs: runtime.NumCPU(),
		GoVersion: runtime.Version(), QEMU: firstLine(c.qemuBin, "--version"), Sidecar: c.sidecarBin,
		LoadStart: loadavg(), Runs: c.runs, WarmupS: c.warm.Seconds(), WindowS: c.window.Seconds(),
		Batch: c.batch, SidecarBatch: c.sidecarBatch, WriteBytes: c.writeBytes, SinkRcvbuf: c.sinkRcvbuf, SinkGRO: c.sinkGRO,
		LossTolPct: c.lossless.tolPct, LossSteps: c.lossless.steps, LossWindowS: c.lossless.window.Seconds(),
	}
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
