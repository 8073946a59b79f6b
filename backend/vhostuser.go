package backend

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/vhostuser"
)

// VhostUserAddr is where a vhost-user front end (QEMU) meets the sidecar.
type VhostUserAddr struct {
	// Path is the unix socket.
	Path string
	// Server makes the sidecar listen (QEMU -chardev socket,reconnect=N);
	// otherwise it connects to a QEMU server=on chardev and reconnects.
	Server bool
	// Queues is the number of queue pairs offered.
	Queues int
	// MTU, when not 0, is offered to the guest (VIRTIO_NET_F_MTU).
	MTU int
}

// ParseVhostUserAddr reads `PATH[,server=on|off][,queues=N][,mtu=N]`; the
// sidecar listens by default.
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
			if err == nil && a.Queues != 1 {
				err = errors.New("only 1 queue pair is supported so far")
			}
		case "mtu":
			a.MTU, err = strconv.Atoi(val)
			if err == nil && (a.MTU < 68 || a.MTU > 65535) {
				err = errors.New("must be 68..65535")
			}
		default:
			err = errors.New("unknown key (want server, queues or mtu)")
		}
		if err != nil {
			return a, fmt.Errorf("--vhost-user %q: %s=%s: %v", spec, key, val, err)
		}
	}
	return a, nil
}

// VhostUser serves a VM's virtio-net queue pairs straight from guest memory
// and forwards them through a Pump.
type VhostUser struct {
	srv    *vhostuser.Server
	pump   *Pump
	log    *slog.Logger
	addr   VhostUserAddr
	active atomic.Int32 // queue pairs started and not yet stopped
}

// ListenVhostUser opens the vhost-user socket (or prepares to dial it) and
// attaches each started queue pair to pump.
func ListenVhostUser(a VhostUserAddr, batch int, pump *Pump, log *slog.Logger) (*VhostUser, error) {
	v := &VhostUser{pump: pump, log: log, addr: a}
	cfg := vhostuser.Config{Queues: a.Queues, MTU: a.MTU, BatchSize: batch, Logger: log}
	var err error
	if a.Server {
		v.srv, err = vhostuser.Listen(a.Path, cfg, v)
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
	return FrontEndStatus{Kind: "vhost-user", Address: v.addr.Path, Connected: v.active.Load() > 0,
		Connections: s.Connections, ProtocolErrors: s.ProtocolErrors, RingViolations: s.RingViolations,
		FromVMDropped: s.TXDropped, ToVMDropped: s.RXDropped, Waits: s.Waits, MTU: s.MTU}
}

// QueuePairStarted attaches a started queue pair to the pump; the pump's
// Serve returns once the pair is stopped.
func (v *VhostUser) QueuePairStarted(i int, q *vhostuser.QueuePair) {
	v.log.Info("VM queue pair started", "queue", i)
	v.active.Add(1)
	go func() {
		if err := v.pump.Serve(q); IsNetworkError(err) {
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
