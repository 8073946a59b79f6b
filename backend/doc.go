// Package backend is the daemon's ports: a port is a front end (package
// frontend) and a tunnel session (package l2tp) joined by a pump (package
// pump), with an optional capture tap (package capture) on its network
// side. It owns a port's spec and its parsing (spec.go), its lifecycle
// (port.go), status (status.go), captures (portcapture.go), wires
// (wire.go), drop logging (droplog.go), the vhost-user MTU offer (mtu.go)
// and the set of ports, those that could not start included (ports.go).
//
// It may import pump, frontend, capture, l2tp, vhostuser, impair and qmp;
// never admin, metrics, plug or cmd, which sit above it.
package backend
