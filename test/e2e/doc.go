// Package e2e holds the project's end-to-end tests: real QEMU guests
// (package test/guest) exchanging Ethernet frames over L2TPv3 pseudowires.
// They skip unless L2TPV3_E2E=1 and root (and with -short).
package e2e
