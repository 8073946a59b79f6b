// Package load holds the sidecar's in-process hostile-network, load and
// soak tests: ports run through backend.Ports with their stream front ends
// on temporary sockets, a Go reader/writer stands in for each VM and a Go
// L2TPv3 end (an l2tp.Tunnel, or crafted datagrams) for each peer. No VM,
// no QEMU: `go test ./test/load` runs the hostile flood scaled down in a
// few seconds; L2TPV3_SOAK=1 runs it with a million datagrams, 64 ports
// under load, and the 10-minute soak (see README "Faults and load").
package load
