package frontend

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// StreamAddr is where a -netdev stream front end meets QEMU.
type StreamAddr struct {
	// Network is "unix" or "tcp".
	Network string
	// Address is a socket path (unix) or host:port (tcp).
	Address string
	// Server makes the sidecar listen (QEMU server=off); otherwise the
	// sidecar connects to a QEMU server=on and reconnects when it drops.
	Server bool
	// Reconnect is the client's retry interval.
	Reconnect time.Duration
	// Access is the socket file's owner, group and mode and the peer UID
	// allowed (unix, server=on only; see access.go).
	Access Access
}

// String renders the address in the --stream syntax.
func (a StreamAddr) String() string {
	s := a.Network + ":" + a.Address
	if a.Server {
		return s + ",server=on" + a.Access.String()
	}
	return s + ",server=off,reconnect-ms=" + strconv.FormatInt(a.Reconnect.Milliseconds(), 10)
}

// ParseStreamAddr reads `unix:PATH[,server=on|off][,reconnect=SECONDS]
// [,reconnect-ms=MS]` or `tcp:HOST:PORT[,…]`. The sidecar is the server by
// default (QEMU then uses server=off); a client retries every second unless
// told otherwise.
func ParseStreamAddr(spec string) (StreamAddr, error) {
	a := StreamAddr{Server: true, Reconnect: time.Second}
	parts := strings.Split(spec, ",")
	kind, addr, ok := strings.Cut(parts[0], ":")
	if !ok || addr == "" {
		return a, fmt.Errorf("--stream %q: want unix:PATH or tcp:HOST:PORT", spec)
	}
	switch kind {
	case "unix":
	case "tcp":
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return a, fmt.Errorf("--stream %q: tcp address: %v", spec, err)
		}
	default:
		return a, fmt.Errorf("--stream %q: unknown socket type %q (want unix or tcp)", spec, kind)
	}
	a.Network, a.Address = kind, addr
	for _, kv := range parts[1:] {
		if err := a.set(kv); err != nil {
			return a, fmt.Errorf("--stream %q: %v", spec, err)
		}
	}
	if err := a.Access.validFor(a.Network == "unix" && a.Server); err != nil {
		return a, fmt.Errorf("--stream %q: %v", spec, err)
	}
	return a, nil
}

// set applies one key=value of the --stream syntax.
func (a *StreamAddr) set(kv string) error {
	key, val, _ := strings.Cut(kv, "=")
	switch key {
	case "server":
		b, err := parseOnOff(val)
		if err != nil {
			return fmt.Errorf("server=%s: %v", val, err)
		}
		a.Server = b
	case "reconnect", "reconnect-ms":
		n, err := strconv.ParseUint(val, 10, 32)
		if err != nil || n == 0 {
			return fmt.Errorf("%s=%s: want a positive whole number", key, val)
		}
		unit := time.Second
		if key == "reconnect-ms" {
			unit = time.Millisecond
		}
		a.Reconnect = time.Duration(n) * unit
	default:
		if known, err := a.Access.set(key, val); known {
			return err
		}
		return fmt.Errorf("unknown key %q (want server, reconnect, reconnect-ms, %s)", key, accessKeys)
	}
	return nil
}

// parseOnOff reads QEMU's boolean spellings; a bare key means on.
func parseOnOff(v string) (bool, error) {
	switch v {
	case "", "on", "yes", "true":
		return true, nil
	case "off", "no", "false":
		return false, nil
	}
	return false, errors.New("want on or off")
}
