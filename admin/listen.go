package admin

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/frontend"
)

// DefaultPath is where the daemon's admin socket lives unless --admin says.
const DefaultPath = "/run/l2tpv3-netdev/admin.sock"

// Listen opens the admin socket spec names: PATH, optionally followed by
// the access keys the front ends' sockets take (",owner=USER|UID",
// ",group=GROUP|GID", ",mode=OCTAL", ",allow-uid=USER|UID"; see
// frontend.Access), e.g. "/run/l2tpv3-netdev/admin.sock,group=kvm,mode=0660".
// Without them the socket is mode 0600, the daemon's user's alone. Its
// directory is created (0700) if missing. A stale socket file (nobody
// listening) is replaced; one in use, or a file that is not a socket, is
// refused. The file is removed when the listener closes. Connections that
// allow-uid= refuses are logged on log.
func Listen(spec string, log *slog.Logger) (net.Listener, error) {
	path, access, err := frontend.ParseUnixSpec(spec)
	if err != nil {
		return nil, fmt.Errorf("admin socket %q: %w", spec, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	ln, err := frontend.ListenUnix(path, access, log)
	if err != nil {
		return nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	warnUnreachable(log, path, access.Mode)
	return ln, nil
}

// warnUnreachable warns when mode= opens the socket to others but its
// directory (created 0700 when missing) lets no one but its owner through:
// the socket's mode alone would then let nobody else in.
func warnUnreachable(log *slog.Logger, path string, mode os.FileMode) {
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	if err != nil || mode&0o077 == 0 || fi.Mode().Perm()&0o011 != 0 {
		return
	}
	log.Warn("admin socket: its directory lets no one else reach it; give the directory o+x or g+x",
		"socket", path, "mode", fmt.Sprintf("%#o", mode), "dir", dir, "dir_mode", fmt.Sprintf("%#o", fi.Mode().Perm()))
}

// SocketPath is the socket file of an --admin value: the path before any
// access keys, which only the daemon's listener uses. A client given the
// daemon's own --admin string connects to the right file.
func SocketPath(spec string) string {
	path, _, _ := strings.Cut(spec, ",")
	return path
}
