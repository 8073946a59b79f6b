package qmp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// Kind is how QEMU reaches a hot-plugged NIC's back end.
type Kind string

const (
	// VhostUser is a vhost-user netdev on a client chardev (reconnect=1) to
	// the sidecar's --vhost-user socket. Guest RAM must be shared
	// (memory-backend-memfd,share=on); under TCG, QEMU 7.2 also needs
	// Props{"vectors": 0} (INTx) or it crashes starting the device.
	VhostUser Kind = "vhost-user"
	// Stream is a QEMU -netdev stream client (server=off) to the sidecar's
	// --stream unix:PATH listener. QEMU 7.2 connects once, when the netdev is
	// added, and never again.
	Stream Kind = "stream"
)

// NIC describes a virtio-net-pci NIC to hot-plug.
type NIC struct {
	// ID names the device and the netdev (QEMU keeps them apart); the
	// vhost-user chardev is "chr-"+ID. A letter, then letters, digits, '-',
	// '.' or '_'. Unplug takes the same ID.
	ID string
	// MAC is the guest's address, "52:54:00:…"; "" lets QEMU pick one.
	MAC string
	// Kind is VhostUser or Stream.
	Kind Kind
	// SocketPath is the unix socket the sidecar listens on; it must exist
	// (as this process sees the file system) when Plug is called.
	SocketPath string
	// Queues is the number of queue pairs (vhost-user only); 0 or 1 is one.
	// Above one the device gets mq=on and vectors=2*Queues+2.
	Queues int
	// HostMTU is the MTU the device offers the guest (host_mtu); 0 leaves
	// it unset. Valid: 68..65535.
	HostMTU int
	// Bus is the PCI bus to plug into: "pci.0" on a pc machine, the id of a
	// pcie-root-port on q35 (its root bus takes no hot-plug); "" is QEMU's
	// choice.
	Bus string
	// Props are extra device_add properties, applied last so they win: e.g.
	// {"vectors": 0} for vhost-user under TCG, {"romfile": ""}. Values are
	// JSON-typed as QEMU's properties are: numbers, booleans, strings.
	Props map[string]any
}

// chardevID names the vhost-user chardev of the NIC called id.
func chardevID(id string) string { return "chr-" + id }

// Plug hot-plugs nic: for VhostUser chardev-add then netdev_add, for Stream
// netdev_add, then device_add. If a step fails, the steps already done are
// undone (netdev_del, chardev-remove) and QEMU's error is returned (an
// *Error naming the command; a failed undo is joined to it).
//
// The back end must already listen on SocketPath: QEMU waits inside a
// vhost-user netdev_add, its whole monitor and main loop frozen, until the
// back end answers (with reconnect=1 it retries every second, for ever), and
// a QEMU 7.2 stream netdev tries its one connection at once. Plug therefore
// refuses a SocketPath that is not a unix socket. The guest sees the NIC a
// moment after Plug returns (its PCI hot-plug handler runs then).
func Plug(ctx context.Context, c *Client, nic NIC) (err error) {
	if err := nic.validate(); err != nil {
		return err
	}
	var undo []Command // what the steps done so far need to be reverted, in order done
	defer func() {
		if err != nil {
			err = rollback(ctx, c, undo, err)
		}
	}()
	for _, s := range nic.steps() {
		if _, err := c.Execute(ctx, s.do.Execute, s.do.Args); err != nil {
			return err
		}
		if s.undo != nil {
			undo = append(undo, *s.undo)
		}
	}
	return nil
}

// step is one command of a plug and the command that reverts it, if any.
type step struct {
	do   Command
	undo *Command
}

// steps lists the commands that plug the NIC, in order; nic is valid.
func (nic NIC) steps() []step {
	var steps []step
	if nic.Kind == VhostUser {
		steps = append(steps, step{
			do:   Command{Execute: "chardev-add", Args: nic.chardevArgs()},
			undo: &Command{Execute: "chardev-remove", Args: map[string]any{"id": chardevID(nic.ID)}},
		})
	}
	steps = append(steps,
		step{
			do:   Command{Execute: "netdev_add", Args: nic.netdevArgs()},
			undo: &Command{Execute: "netdev_del", Args: map[string]any{"id": nic.ID}},
		},
		step{do: Command{Execute: "device_add", Args: nic.deviceArgs()}},
	)
	return steps
}

// chardevArgs is chardev-add's argument: a unix socket client that
// reconnects every second (ChardevBackend is a legacy union: type + data).
func (nic NIC) chardevArgs() map[string]any {
	return map[string]any{
		"id": chardevID(nic.ID),
		"backend": map[string]any{
			"type": "socket",
			"data": map[string]any{
				"addr": map[string]any{
					"type": "unix",
					"data": map[string]any{"path": nic.SocketPath},
				},
				"server":    false,
				"reconnect": 1,
			},
		},
	}
}

// netdevArgs is netdev_add's argument (a flat Netdev union on QEMU 7.2).
func (nic NIC) netdevArgs() map[string]any {
	if nic.Kind == Stream {
		return map[string]any{
			"type":   "stream",
			"id":     nic.ID,
			"server": false,
			"addr":   map[string]any{"type": "unix", "path": nic.SocketPath},
		}
	}
	args := map[string]any{"type": "vhost-user", "id": nic.ID, "chardev": chardevID(nic.ID)}
	if nic.Queues > 1 {
		args["queues"] = nic.Queues
	}
	return args
}

// deviceArgs is device_add's argument: virtio-net-pci on the netdev, typed
// JSON properties, Props last.
func (nic NIC) deviceArgs() map[string]any {
	args := map[string]any{"driver": "virtio-net-pci", "id": nic.ID, "netdev": nic.ID}
	if nic.MAC != "" {
		args["mac"] = nic.MAC
	}
	if nic.HostMTU > 0 {
		args["host_mtu"] = nic.HostMTU
	}
	if nic.Bus != "" {
		args["bus"] = nic.Bus
	}
	if nic.Queues > 1 {
		args["mq"] = true
		args["vectors"] = 2*nic.Queues + 2 // a vector per queue, config and control
	}
	for k, v := range nic.Props {
		args[k] = v
	}
	return args
}

// validate refuses what QEMU would refuse late, or hang on.
func (nic NIC) validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("qmp: NIC %q: "+format, append([]any{nic.ID}, a...)...)
	}
	if !wellFormedID(nic.ID) {
		return bad("ID must be a letter followed by letters, digits, '-', '.' or '_'")
	}
	switch nic.Kind {
	case VhostUser, Stream:
	default:
		return bad("Kind %q is neither %q nor %q", nic.Kind, VhostUser, Stream)
	}
	if nic.MAC != "" {
		if hw, err := net.ParseMAC(nic.MAC); err != nil || len(hw) != 6 {
			return bad("MAC %q is not a 6-byte Ethernet address", nic.MAC)
		}
	}
	if nic.Queues < 0 || (nic.Queues > 1 && nic.Kind == Stream) {
		return bad("Queues %d: a stream NIC has one queue pair, vhost-user 1 or more", nic.Queues)
	}
	if nic.HostMTU != 0 && (nic.HostMTU < 68 || nic.HostMTU > 65535) {
		return bad("HostMTU %d is outside 68..65535", nic.HostMTU)
	}
	if fi, err := os.Stat(nic.SocketPath); err != nil || fi.Mode()&os.ModeSocket == 0 {
		return bad("SocketPath %q is not a listening unix socket: start the back end first "+
			"(QEMU would wait for it with its monitor frozen)", nic.SocketPath)
	}
	return nil
}

// wellFormedID is QEMU's id_wellformed: a letter, then [A-Za-z0-9._-].
func wellFormedID(id string) bool {
	for i, r := range id {
		letter := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z'
		if i == 0 && !letter {
			return false
		}
		if !letter && !(r >= '0' && r <= '9') && r != '-' && r != '.' && r != '_' {
			return false
		}
	}
	return id != ""
}

// rollbackTimeout bounds the undo of a failed Plug, which runs even when
// the caller's ctx has ended (that is often why the plug failed).
const rollbackTimeout = 10 * time.Second

// rollback runs undo last first and joins any failure to the plug's error.
func rollback(ctx context.Context, c *Client, undo []Command, err error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
	defer cancel()
	errs := []error{err}
	for i := len(undo) - 1; i >= 0; i-- {
		if _, uerr := c.Execute(ctx, undo[i].Execute, undo[i].Args); uerr != nil {
			errs = append(errs, fmt.Errorf("rolling back: %w", uerr))
		}
	}
	if len(errs) == 1 {
		return err
	}
	return errors.Join(errs...)
}

// Unplug removes the NIC that Plug added as id: device_del, then waits for
// QEMU's DEVICE_DELETED for it (subscribed before device_del, so it cannot
// be missed), then netdev_del and chardev-remove (a "not found" chardev is
// fine: a Stream NIC has none). The wait is bounded by ctx alone: the guest
// must release the device, and one without PCI hot-plug support (ACPI on
// pc, a hot-plug capable pcie-root-port on q35) never does; Unplug then
// says so and leaves the back end in place. A device already gone is not
// an error (the back ends are still removed), so a failed Unplug can be
// retried; an id nothing was found for is.
func Unplug(ctx context.Context, c *Client, id string) error {
	sub := c.Subscribe("DEVICE_DELETED", deviceIs(id))
	defer sub.Close()
	_, derr := c.Execute(ctx, "device_del", map[string]any{"id": id})
	if derr != nil && !isNotFound(derr) {
		return derr
	}
	if derr == nil {
		if _, err := sub.Next(ctx); err != nil {
			return fmt.Errorf("qmp: unplug %s: no DEVICE_DELETED: the guest did not release the device "+
				"(a guest without PCI hot-plug support, or not yet booted, never does; the device and its "+
				"back end stay, device_del may be retried): %w", id, err)
		}
	}
	_, nerr := c.Execute(ctx, "netdev_del", map[string]any{"id": id})
	if nerr != nil && !isNotFound(nerr) {
		return nerr
	}
	if derr != nil && nerr != nil {
		return derr // neither a device nor a netdev by that id: nothing was plugged
	}
	if _, err := c.Execute(ctx, "chardev-remove", map[string]any{"id": chardevID(id)}); err != nil && !isNotFound(err) {
		return err
	}
	return nil
}

// deviceIs matches a DEVICE_DELETED event for the device called id (QEMU
// also sends some with only a QOM path, for parts of a device).
func deviceIs(id string) func(json.RawMessage) bool {
	return func(data json.RawMessage) bool {
		var d struct {
			Device string `json:"device"`
		}
		return json.Unmarshal(data, &d) == nil && d.Device == id
	}
}
