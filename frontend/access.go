package frontend

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/user"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultSocketMode is the mode of a socket file the sidecar creates when
// mode= is not given: only its owner may connect.
const DefaultSocketMode os.FileMode = 0o600

// Access is who may use a unix socket the sidecar listens on: the socket
// file's owner, group and mode, and optionally the one peer UID whose
// connections are served (checked with SO_PEERCRED on accept). The zero
// value means the process's own user and group, mode 0600, and any peer
// that can open the file. It is set by the owner=, group=, mode= and
// allow-uid= keys of --stream and --vhost-user, per port, because each
// port's socket belongs to its own VM and so often to its own QEMU user.
type Access struct {
	Owner    OptionalID  // owner=USER|UID: the socket file's owner
	Group    OptionalID  // group=GROUP|GID: the socket file's group
	Mode     os.FileMode // mode=OCTAL: its permission bits; 0 means DefaultSocketMode
	AllowUID OptionalID  // allow-uid=USER|UID: the only peer UID served
}

// OptionalID is a user or group ID that may be left unset.
type OptionalID struct {
	ID  uint32
	Set bool
}

// accessKeys lists the keys Access.set reads, for error messages.
const accessKeys = "owner, group, mode or allow-uid"

// set applies one owner=, group=, mode= or allow-uid= key; known is false
// for any other key, which the caller then handles.
func (a *Access) set(key, val string) (known bool, err error) {
	switch key {
	case "owner", "allow-uid":
		id, err := lookupID(val, "user", func(s string) (string, error) {
			u, err := user.Lookup(s)
			if err != nil {
				return "", err
			}
			return u.Uid, nil
		})
		if err != nil {
			return true, fmt.Errorf("%s=%s: %w", key, val, err)
		}
		if key == "owner" {
			a.Owner = id
		} else {
			a.AllowUID = id
		}
	case "group":
		id, err := lookupID(val, "group", func(s string) (string, error) {
			g, err := user.LookupGroup(s)
			if err != nil {
				return "", err
			}
			return g.Gid, nil
		})
		if err != nil {
			return true, fmt.Errorf("group=%s: %w", val, err)
		}
		a.Group = id
	case "mode":
		m, err := strconv.ParseUint(val, 8, 32)
		if err != nil || m == 0 || m > 0o777 {
			return true, fmt.Errorf("mode=%s: want octal permission bits 1..0777, e.g. 0660", val)
		}
		a.Mode = os.FileMode(m)
	default:
		return false, nil
	}
	return true, nil
}

// lookupID reads a number, or a name resolved by look (a user or group
// name; kind names it in errors).
func lookupID(val, kind string, look func(string) (string, error)) (OptionalID, error) {
	if val == "" {
		return OptionalID{}, fmt.Errorf("want a %s name or number", kind)
	}
	if n, err := strconv.ParseUint(val, 10, 32); err == nil {
		return OptionalID{ID: uint32(n), Set: true}, nil
	}
	s, err := look(val)
	if err != nil {
		return OptionalID{}, fmt.Errorf("no such %s", kind)
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return OptionalID{}, fmt.Errorf("%s %s has id %q", kind, val, s)
	}
	return OptionalID{ID: uint32(n), Set: true}, nil
}

// validFor refuses access keys where the sidecar creates no socket file
// (tcp, or server=off: it connects to QEMU's socket instead).
func (a Access) validFor(listensOnUnix bool) error {
	if !listensOnUnix && a != (Access{}) {
		return errors.New("owner, group, mode and allow-uid apply only to a unix socket the sidecar listens on (server=on)")
	}
	return nil
}

// ParseUnixSpec reads PATH[,owner=USER|UID][,group=GROUP|GID][,mode=OCTAL]
// [,allow-uid=USER|UID]: a unix socket the sidecar listens on that is no
// front end (the admin socket), with the access keys of --stream and
// --vhost-user. Errors name the key and value; the caller names the option.
func ParseUnixSpec(spec string) (string, Access, error) {
	var a Access
	parts := strings.Split(spec, ",")
	if parts[0] == "" {
		return "", a, errors.New("want PATH[,owner=USER|UID][,group=GROUP|GID][,mode=OCTAL][,allow-uid=USER|UID]")
	}
	for _, kv := range parts[1:] {
		key, val, _ := strings.Cut(kv, "=")
		known, err := a.set(key, val)
		if !known {
			return "", a, fmt.Errorf("unknown key %q (want %s)", key, accessKeys)
		}
		if err != nil {
			return "", a, err
		}
	}
	return parts[0], a, nil
}

// String renders the keys that differ from the defaults (",owner=107,mode=0660").
func (a Access) String() string {
	s := ""
	if a.Owner.Set {
		s += ",owner=" + strconv.FormatUint(uint64(a.Owner.ID), 10)
	}
	if a.Group.Set {
		s += ",group=" + strconv.FormatUint(uint64(a.Group.ID), 10)
	}
	if a.Mode != 0 {
		s += fmt.Sprintf(",mode=%#o", a.Mode)
	}
	if a.AllowUID.Set {
		s += ",allow-uid=" + strconv.FormatUint(uint64(a.AllowUID.ID), 10)
	}
	return s
}

// umaskMu serialises the umask changes of BindPrivate.
var umaskMu sync.Mutex

// BindPrivate runs bind, which creates a unix socket file, with the umask
// at 0177, so the file is born mode 0600 and is never more open than that
// before apply gives it its final owner, group and mode. The umask is
// process-wide: a file another goroutine creates meanwhile is at most made
// more private, never less.
func BindPrivate(bind func() error) error {
	umaskMu.Lock()
	defer umaskMu.Unlock()
	old := unix.Umask(0o177)
	defer unix.Umask(old)
	return bind()
}

// apply sets the socket file's owner and group (when asked for), then its
// mode (DefaultSocketMode unless mode= says otherwise).
func (a Access) apply(path string) error {
	if a.Owner.Set || a.Group.Set {
		uid, gid := -1, -1
		if a.Owner.Set {
			uid = int(a.Owner.ID)
		}
		if a.Group.Set {
			gid = int(a.Group.ID)
		}
		if err := os.Lchown(path, uid, gid); err != nil {
			return fmt.Errorf("owner=%d group=%d: %w", uid, gid, err)
		}
	}
	mode := a.Mode
	if mode == 0 {
		mode = DefaultSocketMode
	}
	if err := os.Chmod(path, mode); err != nil {
		return fmt.Errorf("mode=%#o: %w", mode, err)
	}
	return nil
}

// peerGuard checks accepted connections against Access.AllowUID, counts
// the refused ones and logs them at most once per interval.
type peerGuard struct {
	access  Access
	log     *slog.Logger
	where   string        // the socket, for the log line
	refused atomic.Uint64 // connections refused so far
	mu      sync.Mutex    // guards lastLog and unlog
	lastLog time.Time
	unlog   uint64 // refusals not yet logged
}

// refuseLogInterval bounds the log lines of refused connections: a local
// process hammering the socket costs a line per interval.
const refuseLogInterval = time.Second

// newPeerGuard returns the guard of one socket.
func newPeerGuard(a Access, log *slog.Logger, where string) *peerGuard {
	return &peerGuard{access: a, log: log, where: where}
}

// allow reports whether c's peer may be served; a refused one is counted
// and logged (rate-limited), and the caller closes it.
func (g *peerGuard) allow(c *net.UnixConn) bool {
	if g == nil || !g.access.AllowUID.Set {
		return true
	}
	uid, pid, err := peerCred(c)
	if err == nil && uid == g.access.AllowUID.ID {
		return true
	}
	g.refused.Add(1)
	g.mu.Lock()
	defer g.mu.Unlock()
	g.unlog++
	if time.Since(g.lastLog) < refuseLogInterval {
		return false
	}
	args := []any{"socket", g.where, "allow_uid", g.access.AllowUID.ID, "refused", g.unlog, "total", g.refused.Load()}
	if err != nil {
		args = append(args, "err", err)
	} else {
		args = append(args, "peer_uid", uid, "peer_pid", pid)
	}
	g.log.Warn("connection refused: peer not allowed", args...)
	g.lastLog, g.unlog = time.Now(), 0
	return false
}

// Refused is the number of connections refused so far (0 for nil).
func (g *peerGuard) Refused() uint64 {
	if g == nil {
		return 0
	}
	return g.refused.Load()
}

// peerCred reads the connecting process's uid and pid (SO_PEERCRED).
func peerCred(c *net.UnixConn) (uid uint32, pid int32, err error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, 0, fmt.Errorf("SO_PEERCRED: %w", err)
	}
	var cred *unix.Ucred
	var serr error
	if err := rc.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, 0, fmt.Errorf("SO_PEERCRED: %w", err)
	}
	if serr != nil {
		return 0, 0, fmt.Errorf("SO_PEERCRED: %w", serr)
	}
	return cred.Uid, cred.Pid, nil
}

// guardedListener is a stream listener that serves only connections its
// guard allows; refused ones are closed and Accept waits for the next.
type guardedListener struct {
	net.Listener
	guard *peerGuard
}

// Accept returns the next allowed connection.
func (l *guardedListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if uc, ok := c.(*net.UnixConn); !ok || l.guard.allow(uc) {
			return c, nil
		}
		c.Close()
	}
}
