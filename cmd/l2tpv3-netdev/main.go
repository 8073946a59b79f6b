// Command l2tpv3-netdev is a QEMU network back end in a process of its own:
// it takes a VM's NIC over QEMU's -netdev stream socket (or vhost-user) and
// carries its Ethernet frames in a static L2TPv3 pseudowire.
package main

import (
	"errors"
	"fmt"
	"os"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "0.1.0-dev"

// exitUsage is the exit status for a refused command line, as flag uses.
const exitUsage = 2

// main parses the command line and runs the daemon; all work is in run.
func main() {
	opts, err := parseArgs(os.Args[1:], os.Stdout)
	if errors.Is(err, errHelpShown) {
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "l2tpv3-netdev: %v\nTry 'l2tpv3-netdev --help'.\n", err)
		os.Exit(exitUsage)
	}
	if err := run(opts); err != nil {
		fmt.Fprintf(os.Stderr, "l2tpv3-netdev: %v\n", err)
		os.Exit(1)
	}
}
