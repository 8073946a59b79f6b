//go:build race

package load

// stalledCPUBound is the most process CPU (per cent of one core) a stalled
// link may cost. Under the race detector every frame the in-process VM
// writer, port and peer reader still move costs several times more, so the
// bound sits just under what one spinning goroutine alone would take.
const stalledCPUBound = 90
