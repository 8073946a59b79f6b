// Package capture owns packet capture: Capture, a bounded pcap writer that
// counts what it could not keep, and Tap, a port's network side with an
// optional Capture in front that costs one atomic load per batch when
// idle. It may import pump (Tap is a pump.Network) and nothing above it.
package capture
