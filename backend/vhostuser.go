package backend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync/atomic"

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
			if err == nil && (a.MTU < 68 || a.MTU > 65535) {
				err = errors.New("must be 68..65535")
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
	pump   *pump.Pump
	log    *slog.Logger
	addr   VhostUserAddr
	active atomic.Int32 // queue pairs started and not yet stopped
	guard  *peerGuard   // allow-uid= check on accept (server=on)
}

// ListenVhostUser opens the vhost-user socket (or prepares to dial it),
// gives the pump a.Queues queue pairs, and attaches each started queue pair
// to the pump.
func ListenVhostUser(a VhostUserAddr, batch int, pp *pump.Pump, log *slog.Logger) (*VhostUser, error) {
	if err := pp.SetQueues(max(a.Queues, 1)); err != nil {
		return nil, fmt.Errorf("--vhost-user %s: %w", a.Path, err)
	}
	v := &VhostUser{pump: pp, log: log, addr: a}
	cfg := vhostuser.Config{Queues: a.Queues, MTU: a.MTU, NoOffload: a.NoOffload, BatchSize: batch, Logger: log}
	var err error
	if a.Server {
		v.guard = newPeerGuard(a.Access, log, a.Path)
		cfg.Allow = v.guard.allow
		err = BindPrivate(func() (err error) { v.srv, err = vhostuser.Listen(a.Path, cfg, v); return err })
		if err == nil {
			if err = a.Access.apply(a.Path); err != nil {
				v.srv.Close()
			}
		}
	} else {
		v.srv, err = vhostuser.Dial(a.Path, cfg, v)
	}
	if err != nil {
		return nil, fmt.Errorf("--vhost-user %s: %w", a.Path, err)
	}
	return v, nil
}

// Run serves front ends until ctx ends or Close is called.
func (v *VhostUser) Run(ctx context.Context) error {
	err := v.srv.Serve(ctx)
	if errors.Is(err, vhostuser.ErrServerClosed) || errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// Close stops serving and removes the socket file.
func (v *VhostUser) Close() error { return v.srv.Close() }

// Stats returns the vhost-user counters.
func (v *VhostUser) Stats() vhostuser.Stats { return v.srv.Stats() }

// Status reports the vhost-user front end.
func (v *VhostUser) Status() FrontEndStatus {
	s := v.srv.Stats()
	st := FrontEndStatus{Kind: "vhost-user", Address: v.addr.Path, Connected: v.active.Load() > 0,
		Connections: s.Connections, ProtocolErrors: s.ProtocolErrors, RingViolations: s.RingViolations,
		FromVMDropped: s.TXDropped, ToVMDropped: s.RXDropped, Waits: s.Waits, MTU: s.MTU,
		ChecksummedFrames: s.TXChecksummed, SegmentedFrames: s.TXSegmented, Offload: !v.addr.NoOffload,
		OfferedMTU: v.addr.MTU, Queues: make([]QueueStatus, len(s.Queues)), RefusedPeers: v.guard.Refused()}
	for i, q := range s.Queues {
		st.Queues[i] = QueueStatus{FromVM: q.TXFrames, ToVM: q.RXFrames}
	}
	return st
}

// QueuePairStarted attaches a started queue pair to the pump; the pump's
// Serve returns once the pair is stopped.
func (v *VhostUser) QueuePairStarted(i int, q *vhostuser.QueuePair) {
	v.log.Info("VM queue pair started", "queue", i)
	v.active.Add(1)
	go func() {
		if err := v.pump.ServeQueue(i, q); pump.IsNetworkError(err) {
			v.log.Error("network side failed", "queue", i, "err", err)
		}
	}()
}

// QueuePairStopped needs nothing: the pair's calls already returned and
// Serve detaches it.
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

// QueueStatus is one vhost-user queue pair's frame counts.
type QueueStatus struct {
	FromVM uint64 `json:"from_vm_frames"` // frames the guest sent on the pair
	ToVM   uint64 `json:"to_vm_frames"`   // frames delivered into the pair
}

// vhostDetails is what String adds for vhost-user: " queues=N mtu=M".
func (f FrontEndStatus) vhostDetails() string {
	if f.OfferedMTU == 0 {
		return ""
	}
	return fmt.Sprintf(" queues=%d mtu=%d", len(f.Queues), f.OfferedMTU)
}

// QueueCounts prints the per-queue-pair frame counts, "" without any:
// "q0 from_vm=12 to_vm=10, q1 from_vm=3 to_vm=5".
func (f FrontEndStatus) QueueCounts() string {
	var b strings.Builder
	for i, q := range f.Queues {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "q%d from_vm=%d to_vm=%d", i, q.FromVM, q.ToVM)
	}
	return b.String()
}
