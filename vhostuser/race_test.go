//go:build race

package vhostuser

// raceSlowdown is how much slower the race detector makes the ring code; timed bounds in
// tests are multiplied by it.
const raceSlowdown = 20
