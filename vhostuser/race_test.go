//go:build race

package vhostuser

// raceSlowdown scales the wall-clock bounds of timing tests: under the race
// detector every memory access is instrumented and runs several times slower.
const raceSlowdown = 10
