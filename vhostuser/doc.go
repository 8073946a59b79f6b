// Package vhostuser is a vhost-user net back end (docs/interop/vhost-user.rst): QEMU or
// another front end connects over a unix socket, shares the guest's memory and hands over
// split virtqueues, and this package moves Ethernet frames in and out of them. It knows
// nothing of what carries the frames further.
//
// A Server speaks the control protocol with each connection it is handed (ServeConn): one
// front end at a time, two while a live migration on one host hands over. When both vrings of queue pair i are started it calls Handler.QueuePairStarted
// with a *QueuePair, whose ReadFrames (guest TX) and WriteFrames (guest RX) are the data
// path: batched, allocation-free, parked in Go's netpoller on the kick eventfds.
//
// The guest is not trusted. Every address it publishes is bounds-checked against the
// memory table before it is touched; a descriptor chain holds at most 256 descriptors,
// loops and nested indirect tables are refused; a guest that breaks a virtqueue rule gets
// that ring stopped and counted (Stats.RingViolations), nothing else, and so does a kick fd
// at end of file. No batch reads more than 2048 descriptors under the ring lock, so control
// messages wait for at most one short batch whatever the guest posts. A malformed or unknown control message ends
// that connection with a logged reason, never the process, and every fd it carried is
// closed. A front end that shrinks the file behind guest memory makes the next access
// fault: that connection ends (Stats.MemoryFaults, fault.go), not the process.
//
// Files: message.go (wire format), conn.go (socket and SCM_RIGHTS), handler.go (request
// table, fd-count and size checks, REPLY_ACK), session.go, vringmsg.go and memslots.go
// (protocol state and handlers), memory.go (guest memory table), fault.go (guest-memory
// faults), vring.go, chain.go, tx.go and rx.go (split virtqueue), queuepair.go (the
// data-path API), eventfd.go (netpoller), virtionet.go (features and header), offload.go
// and csum.go (the guest's checksum and TSO offloads done in software), stats.go, server.go
// (the Server and its connections), dirtylog.go (the migration dirty log: SET_LOG_BASE,
// LOG_ALL), announce.go (SEND_RARP) and endian_big.go (refuses to build on big-endian hosts).
// vhosttest is an in-process front end for tests.
//
// The ring indexes are little-endian u16 fields accessed through 32-bit atomics on their
// aligned words, so the package supports little-endian hosts only.
//
// It imports no sibling package and serves connections it is handed (Server.ServeConn):
// listening, dialling and who may connect are package frontend's.
package vhostuser
