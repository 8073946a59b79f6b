//go:build !race

package vhostuser

// raceSlowdown scales the wall-clock bounds of timing tests (see race_test.go).
const raceSlowdown = 1
