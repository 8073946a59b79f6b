//go:build !race

package load

// stalledCPUBound is the most process CPU (per cent of one core) a stalled
// link may cost (see race_test.go).
const stalledCPUBound = 50
