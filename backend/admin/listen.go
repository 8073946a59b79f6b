package admin

import (
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/backend"
)

// DefaultPath is where the daemon's admin socket lives unless --admin says.
const DefaultPath = "/run/l2tpv3-netdev/admin.sock"

// Listen opens the admin socket at path, mode 0600. Its directory is
// created (0700) if missing. A stale socket file (nobody listening) is
// replaced; one in use, or a file that is not a socket, is refused. The
// file is removed when the listener closes.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	if err := backend.RemoveStaleSocket(path); err != nil {
		return nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	var ln net.Listener
	err := backend.BindPrivate(func() (err error) { ln, err = net.Listen("unix", path); return err })
	if err != nil {
		return nil, fmt.Errorf("admin socket %s: listen: %w", path, err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(true)
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	return ln, nil
}
