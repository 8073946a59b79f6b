// Package frontend is where QEMU meets a port: the -netdev stream front end
// (stream.go, its framing in streamport.go, its address in streamaddr.go),
// the vhost-user adapter (vhostuser.go) over package vhostuser, and the one
// listener both use (listener.go: stale sockets, the access keys of
// access.go, accept, dial and retry). Both implement FrontEnd and hand the
// pump their VM-side queue pairs the same way.
//
// It may import pump and vhostuser; never backend, admin or cmd.
package frontend
