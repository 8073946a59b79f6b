package qmp

import (
	"errors"
	"strings"
)

// ErrClosed is wrapped by every error that comes from the connection's end:
// Close, or QEMU closing the socket (with the cause wrapped beside it).
var ErrClosed = errors.New("qmp: connection closed")

// Error is QEMU's refusal of a command: the "error" member of its reply.
type Error struct {
	// Command is the command QEMU refused, e.g. "device_add".
	Command string
	// Class is QEMU's error class: "GenericError" for most, or
	// "CommandNotFound", "DeviceNotFound", "DeviceNotActive", "KVMMissingCap".
	Class string
	// Desc is QEMU's own description, e.g. "Duplicate device ID 'net1'".
	Desc string
}

// Error says what QEMU said and to which command:
// "qmp device_add: Duplicate device ID 'net1'".
func (e *Error) Error() string {
	return "qmp " + e.Command + ": " + e.Desc
}

// isNotFound reports whether err is QEMU saying that the object named does
// not exist: DeviceNotFound for devices and netdevs, a GenericError
// "Chardev 'x' not found" for chardevs (QEMU 7.2).
func isNotFound(err error) bool {
	var e *Error
	if !errors.As(err, &e) {
		return false
	}
	return e.Class == "DeviceNotFound" || strings.HasSuffix(e.Desc, " not found")
}
