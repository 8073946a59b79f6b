package frontend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/pump"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/vhostuser"
)

// VhostUserAddr is where a vhost-user front end (QEMU) meets the sidecar.
type VhostUserAddr struct {
	// Path is the unix socket.
	Path string
	// Server makes the sidecar listen (QEMU -chardev socket,reconnect=N);
	// otherwise it connects to a QEMU server=on chardev and reconnects.
	Server bool
	// Queues is the number of queue pairs offered, 1..MaxQueues (QEMU:
	// -netdev vhost-user,queues=N and virtio-net-pci,mq=on).
	Queues int
	// MTU is offered to the guest (VIRTIO_NET_F_MTU), 68..65535. Left 0 by
	// ParseVhostUserAddr when mtu= is not given; OpenPort then offers the
	// session's inner MTU (l2tp.Config.InnerMTU of the underlay MTU).
	MTU int
	// Access is the socket file's owner, group and mode and the peer UID
	// allowed (server=on only; see access.go).
	Access Access
	// NoOffload withholds the guest's checksum and TSO offloads (offload=off),
	// which are offered by default.
	NoOffload bool
}

// ParseVhostUserAddr reads `PATH[,server=on|off][,queues=N][,mtu=N][,offload=on|off]`
// plus the access keys; the sidecar listens by default.
func ParseVhostUserAddr(spec string) (VhostUserAddr, error) {
	parts := strings.Split(spec, ",")
	a := VhostUserAddr{Path: parts[0], Server: true, Queues: 1}
	if a.Path == "" {
		return a, fmt.Errorf("--vhost-user %q: want PATH[,server=on|off][,queues=N][,mtu=N]", spec)
	}
	for _, kv := range parts[1:] {
		key, val, _ := strings.Cut(kv, "=")
		var err error
		switch key {
		case "server":
			a.Server, err = parseOnOff(val)
		case "queues":
			a.Queues, err = strconv.Atoi(val)
			if err == nil && (a.Queues < 1 || a.Queues > pump.MaxQueues) {
				err = fmt.Errorf("must be 1..%d", pump.MaxQueues)
			}
		case "mtu":
			a.MTU, err = strconv.Atoi(val)
			if err == nil && (a.MTU < vhostuser.MinMTU || a.MTU > vhostuser.MaxMTU) {
				err = fmt.Errorf("must be %d..%d", vhostuser.MinMTU, vhostuser.MaxMTU)
			}
		case "offload":
			var on bool
			on, err = parseOnOff(val)
			a.NoOffload = !on
		default:
			if known, aerr := a.Access.set(key, val); known {
				if aerr != nil {
					return a, fmt.Errorf("--vhost-user %q: %v", spec, aerr)
				}
				continue
			}
			err = errors.New("unknown key (want server, queues, mtu, offload, " + accessKeys + ")")
		}
		if err != nil {
			return a, fmt.Errorf("--vhost-user %q: %s=%s: %v", spec, key, val, err)
		}
	}
	if err := a.Access.validFor(a.Server); err != nil {
		return a, fmt.Errorf("--vhost-user %q: %v", spec, err)
	}
	return a, nil
}

// VhostUser serves a VM's virtio-net queue pairs straight from guest memory
// and forwards them through a Pump.
type VhostUser struct {
	srv    *vhostuser.Server
	l      *listener
	log    *slog.Logger
	addr   VhostUserAddr
	pump   *pump.Pump   // set by Run before the first connection is served
	active atomic.Int32 // queue pairs started and not yet stopped

	failOnce sync.Once
	failed   atomic.Pointer[error] // the network error that ended the front end
}

// vhostRedial is the longest pause between dials of a QEMU server=on
// chardev (server=off).
const vhostRedial = time.Second

// ListenVhostUser opens the vhost-user socket (or prepares to dial it).
func ListenVhostUser(a VhostUserAddr, batch int, log *slog.Logger) (*VhostUser, error) {
	v := &VhostUser{log: log, addr: a}
	cfg := vhostuser.Config{Queues: a.Queues, MTU: a.MTU, NoOffload: a.NoOffload, BatchSize: batch, Logger: log}
	var err error
	if v.srv, err = vhostuser.New(cfg, v); err != nil {
		return nil, fmt.Errorf("--vhost-user %s: %w", a.Path, err)
	}
	if v.l, err = listen("unix", a.Path, a.Server, a.Access, vhostRedial, log); err != nil {
		return nil, fmt.Errorf("--vhost-user %s: %w", a.Path, err)
	}
	return v, nil
}

// Queues is the number of queue pairs offered (queues=).
func (v *VhostUser) Queues() int { return max(v.addr.Queues, 1) }

// Run serves QEMU's vhost-user connections (two at once during a
// migration's hand-over, see handOver), attaching each started queue pair
// to p, until ctx ends or Close is called (nil) or a queue pair's network
// side fails (that error).
func (v *VhostUser) Run(ctx context.Context, p *pump.Pump) error {
	v.pump = p
	err := v.l.serve(ctx, func(c net.Conn) error {
		if uc, ok := c.(*net.UnixConn); ok {
			v.srv.ServeConn(uc) // logged and counted by the server
		} else {
			c.Close()
		}
		return v.failure()
	})
	if f := v.failure(); f != nil {
		return f
	}
	return err
}

// fail ends the front end for a queue pair's network error, as a stream
// front end ends for one: the first error is kept and returned by Run.
func (v *VhostUser) fail(err error) {
	v.failOnce.Do(func() {
		v.failed.Store(&err)
		v.Close()
	})
}

// failure is the network error that ended the front end, nil if none.
func (v *VhostUser) failure() error {
	if p := v.failed.Load(); p != nil {
		return *p
	}
	return nil
}

// Close stops serving and removes the socket file.
func (v *VhostUser) Close() error {
	v.srv.Close()
	return v.l.close()
}

// Status reports the vhost-user front end.
func (v *VhostUser) Status() Status {
	s := v.srv.Stats()
	st := Status{Kind: "vhost-user", Address: v.addr.Path, Connected: v.active.Load() > 0,
		Connections: s.Connections, ProtocolErrors: s.ProtocolErrors, RingViolations: s.RingViolations,
		MemoryFaults: s.MemoryFaults, GuestRegions: s.Regions, SealedRegions: s.SealedRegions,
		FromVMDropped: s.TXDropped, ToVMDropped: s.RXDropped, Waits: s.Waits, MTU: s.MTU,
		ChecksummedFrames: s.TXChecksummed, SegmentedFrames: s.TXSegmented, Offload: !v.addr.NoOffload,
		OfferedMTU: v.addr.MTU, Queues: make([]QueueStatus, len(s.Queues)), RefusedPeers: v.l.refused()}
	for i, q := range s.Queues {
		st.Queues[i] = QueueStatus{FromVM: q.TXFrames, ToVM: q.RXFrames}
	}
	return st
}

// QueuePairStarted attaches a started queue pair to the pump; the pump's
// ServeQueue returns once the pair is stopped. A network error ends the
// front end.
func (v *VhostUser) QueuePairStarted(i int, q *vhostuser.QueuePair) {
	v.log.Info("VM queue pair started", "queue", i)
	v.active.Add(1)
	go func() {
		if err := v.pump.ServeQueue(i, q); pump.IsNetworkError(err) {
			v.log.Error("network side failed", "queue", i, "err", err)
			v.fail(err)
		}
	}()
}

// QueuePairStopped needs nothing: the pair's calls already returned and
// ServeQueue detaches it.
func (v *VhostUser) QueuePairStopped(i int) {
	v.active.Add(-1)
	v.log.Info("VM queue pair stopped", "queue", i)
}

// Announce sends the RARP frame vhostuser built for a migrated guest's MAC
// into the pseudowire (SEND_RARP; QEMU sends it only for guests without
// VIRTIO_NET_F_GUEST_ANNOUNCE, which announce themselves).
func (v *VhostUser) Announce(mac net.HardwareAddr, frame []byte) {
	if err := v.pump.Announce(frame); err != nil {
		v.log.Warn("announcing the migrated guest", "mac", mac.String(), "err", err)
		return
	}
	v.log.Info("announced the migrated guest to the network", "mac", mac.String())
}
