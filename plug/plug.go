// Package plug hot-plugs a VM's NIC backed by an l2tpv3-netdev port, and
// unplugs it: the daemon's port first (over the admin API), then the NIC
// over QMP, and the port removed again if QEMU refuses; in reverse for
// unplug, leaving the port while QEMU may still use it.
//
// It may import qmp, admin and backend (for the port's types); cmd parses
// the command lines into a Request.
package plug

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/admin"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/backend"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/qmp"
)

// adminTimeout bounds an admin call made after the plug's own deadline
// (removing a port again, or after the guest released the device).
const adminTimeout = 30 * time.Second

// Request is a validated plug command.
type Request struct {
	QMP        string             // QMP socket address, "unix:PATH"
	Admin      string             // admin socket path
	NIC        qmp.NIC            // ID, MAC, Kind, Bus; SocketPath, Queues, HostMTU once the port is open
	Spec       backend.PortSpec   // what the daemon is asked to open (socket paths absolute)
	Config     backend.PortConfig // Spec parsed, for the MTU and queues it implies
	MTU        int                // --mtu; 0: the port's
	DefaultMTU int                // host_mtu if the daemon reports none: the inner MTU on this host
	Props      map[string]any     // --prop, applied last
	Timeout    time.Duration
}

// UnplugRequest is a validated unplug command.
type UnplugRequest struct {
	QMP, Admin, ID, Name string
	Timeout              time.Duration
}

// Plug opens the port in the daemon, then plugs the NIC over QMP; if the
// QMP side fails the port is removed again. It reports each step on out.
func Plug(ctx context.Context, r Request, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, r.Timeout)
	defer cancel()
	c, err := qmp.Dial(ctx, r.QMP) // before the port: an unreachable QEMU leaves nothing to undo
	if err != nil {
		return fmt.Errorf("--qmp %s: %w", r.QMP, err)
	}
	defer c.Close()
	kvm, kvmErr := kvmEnabled(ctx, c)

	ac := admin.NewClient(r.Admin)
	st, err := ac.AddPort(ctx, r.Spec)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			// Sent but not answered: the daemon may have opened it, or
			// refused it because another port has the name; not ours to remove.
			return fmt.Errorf("port %s: %w (nothing was plugged; the daemon may have opened the port: "+
				"see l2tpv3-netdev port show %s)", r.Spec.Name, err, r.Spec.Name)
		}
		return fmt.Errorf("port %s: %w (nothing was plugged)", r.Spec.Name, err)
	}
	fmt.Fprintf(out, "port %s added: %s, session %d, %s\n", st.Name, st.FrontEnd, st.SessionID, st.State)

	nic, vectors := r.nic(st, kvm, kvmErr)
	if err := qmp.Plug(ctx, c, nic); err != nil {
		return fmt.Errorf("%w (%s)", err, removeAgain(ac, r.Spec.Name))
	}
	fmt.Fprintf(out, "%s plugged into QEMU %s: virtio-net-pci %s, %s, host_mtu %d%s%s\n", nic.ID, c.Version(),
		macNote(nic.MAC), nic.Kind, nic.HostMTU, queuesNote(nic.Queues), vectors)
	if connected(ctx, ac, r.Spec.Name) {
		fmt.Fprintf(out, "port %s: QEMU connected\n", r.Spec.Name)
	} else {
		fmt.Fprintf(out, "port %s: QEMU not connected yet (l2tpv3-netdev port show %s)\n", r.Spec.Name, r.Spec.Name)
	}
	return nil
}

// nic completes the NIC from the port the daemon opened: its socket, queue
// pairs and MTU, and the interrupt mode the accelerator needs. It returns
// a note on the vectors chosen, for the user.
func (r Request) nic(st backend.PortStatus, kvm bool, kvmErr error) (qmp.NIC, string) {
	nic := r.NIC
	nic.SocketPath = r.Config.SocketPath()
	nic.Props = map[string]any{}
	switch {
	case r.MTU != 0:
		nic.HostMTU = r.MTU
	case st.FrontEnd.OfferedMTU != 0: // what the vhost-user port offers (VIRTIO_NET_F_MTU)
		nic.HostMTU = st.FrontEnd.OfferedMTU
	case st.InnerMTU != 0: // a stream port offers nothing: what its underlay MTU carries whole
		nic.HostMTU = st.InnerMTU
	default:
		nic.HostMTU = r.DefaultMTU
	}
	note := ""
	if r.Config.VhostUser != nil {
		nic.Queues = r.Config.VhostUser.Queues
		_, given := r.Props["vectors"]
		switch {
		case given:
		case kvmErr != nil:
			nic.Props["vectors"] = 0
			note = fmt.Sprintf(", vectors=0 (INTx: query-kvm failed: %v)", kvmErr)
		case !kvm:
			// QEMU 7.2 under TCG segfaults when the guest starts a
			// vhost-user NIC on MSI-X (seen with 1 and 2 queue pairs);
			// INTx works with any number, mq included.
			nic.Props["vectors"] = 0
			note = ", vectors=0 (INTx: no KVM)"
		}
	}
	for k, v := range r.Props {
		nic.Props[k] = v
	}
	return nic, note
}

// kvmEnabled asks QEMU whether it runs on KVM (query-kvm).
func kvmEnabled(ctx context.Context, c *qmp.Client) (bool, error) {
	var kvm struct {
		Enabled bool `json:"enabled"`
	}
	ret, err := c.Execute(ctx, "query-kvm", nil)
	if err == nil {
		err = json.Unmarshal(ret, &kvm)
	}
	return kvm.Enabled, err
}

// removeAgain closes a port whose plug failed and says what became of it.
func removeAgain(ac *admin.Client, name string) string {
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	if _, err := ac.RemovePort(ctx, name); err != nil && !errors.Is(err, backend.ErrNoPort) {
		return fmt.Sprintf("port %s could not be removed again: %v; remove it with: l2tpv3-netdev port del %s", name, err, name)
	}
	return fmt.Sprintf("port %s removed again from the daemon", name)
}

// ConnectWait is how long Plug waits to report QEMU attached to the port
// (vhost-user: the guest's driver has started a queue pair).
var ConnectWait = 3 * time.Second

// connected waits up to ConnectWait for QEMU to be attached to the port.
func connected(ctx context.Context, ac *admin.Client, name string) bool {
	deadline := time.Now().Add(ConnectWait)
	for {
		st, err := ac.Port(ctx, name)
		if err == nil && st.FrontEnd.Connected {
			return true
		}
		if err != nil || time.Now().After(deadline) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// macNote prints the MAC for the plug summary.
func macNote(mac string) string {
	if mac == "" {
		return "mac chosen by QEMU"
	}
	return "mac " + mac
}

// queuesNote prints the queue pairs for the plug summary, "" for one.
func queuesNote(n int) string {
	if n > 1 {
		return fmt.Sprintf(", %d queue pairs (mq=on)", n)
	}
	return ""
}

// Unplug removes the NIC over QMP, then the daemon's port. A guest that
// does not release the device leaves the port in place.
func Unplug(ctx context.Context, r UnplugRequest, out io.Writer) error {
	dctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	c, err := qmp.Dial(dctx, r.QMP)
	if err != nil {
		return fmt.Errorf("--qmp %s: %w (port %s left in the daemon)", r.QMP, err, r.Name)
	}
	defer c.Close()
	uctx, cancel := context.WithTimeout(ctx, r.Timeout)
	defer cancel()
	start := time.Now()
	inQEMU := true
	if err := qmp.Unplug(uctx, c, r.ID); err != nil {
		var qe *qmp.Error
		if !errors.As(err, &qe) || qe.Command != "device_del" || qe.Class != "DeviceNotFound" {
			return fmt.Errorf("%w\nport %s left in the daemon, as QEMU may still use it: run unplug again "+
				"(or l2tpv3-netdev port del %s once QEMU has let go)", err, r.Name, r.Name)
		}
		inQEMU = false // neither a device nor a netdev by that id: already unplugged
		fmt.Fprintf(out, "QEMU has no NIC %s (already unplugged?)\n", r.ID)
	} else {
		fmt.Fprintf(out, "%s unplugged from QEMU: the guest released it in %v\n", r.ID, time.Since(start).Round(time.Millisecond))
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), adminTimeout)
	defer cancel()
	st, err := admin.NewClient(r.Admin).RemovePort(actx, r.Name)
	switch {
	case errors.Is(err, backend.ErrNoPort) && inQEMU:
		fmt.Fprintf(out, "port %s: the daemon has no such port (already removed?)\n", r.Name)
		return nil
	case errors.Is(err, backend.ErrNoPort):
		return fmt.Errorf("nothing to unplug: QEMU has no NIC %s and the daemon no port %s", r.ID, r.Name)
	case err != nil:
		return fmt.Errorf("port %s: %w", r.Name, err)
	}
	fmt.Fprintf(out, "port %s removed: %s\n", st.Name, st.Session)
	return nil
}
