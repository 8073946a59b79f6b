package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/l2tpv3-netdev/l2tpv3-netdev/backend"
	"github.com/l2tpv3-netdev/l2tpv3-netdev/l2tp"
)

// errHelpShown ends the program successfully after --help or --version.
var errHelpShown = errors.New("help shown")

// options is everything the command line says, validated.
type options struct {
	ports    []backend.PortConfig
	logLevel slog.Level
}

const usageHead = `Usage: l2tpv3-netdev --stream unix:PATH[,server=on|off] --l2tpv3 OPTIONS [flags]
       l2tpv3-netdev --vhost-user PATH[,server=on|off] --l2tpv3 OPTIONS [flags]

Carries a QEMU VM's NIC over a static L2TPv3 pseudowire (RFC 3931/4719).

QEMU side:
  --stream unix:PATH[,server=on|off][,reconnect=S|,reconnect-ms=MS]
  --stream tcp:HOST:PORT[,...]
        QEMU's -netdev stream socket. server=on (default): the sidecar listens
        and QEMU connects with -netdev stream,server=off,addr.type=unix,addr.path=PATH.
        server=off: the sidecar connects to QEMU's server=on socket and
        reconnects every reconnect seconds (default 1) when it drops.

  --vhost-user PATH[,server=on|off][,queues=1][,mtu=N]   (also --socket-path PATH)
        A vhost-user socket: the VM's virtio-net rings are served straight from
        guest memory. server=on (default): the sidecar listens; QEMU uses
        -chardev socket,id=c0,path=PATH,reconnect=1 -netdev vhost-user,chardev=c0
        and needs shared guest RAM (-object memory-backend-memfd,share=on).
        mtu=N offers the guest an MTU (VIRTIO_NET_F_MTU). One queue pair so far.
  --print-capabilities
        print {"type":"net"} (the vhost-user back-end convention) and exit

L2TPv3 side:
  --l2tpv3 OPTIONS
        QEMU's own -netdev l2tpv3 option string, e.g.
        src=192.0.2.1,dst=198.51.100.7,udp=on,srcport=1701,dstport=1701,txsession=0x10,rxsession=0x20

Other flags:
  --batch N          frames per batch in each direction (default 64, 1..1024)
  --log-level LEVEL  debug, info, warn or error (default info)
  --version          print the version and exit
  --help             this text

Signals: SIGUSR1 prints the counters; SIGTERM or SIGINT exits cleanly (counters printed).

`

// parseArgs reads the command line; every wrong option is refused with a
// message naming it.
func parseArgs(args []string, out io.Writer) (options, error) {
	var o options
	var spec backend.PortSpec
	fs := flag.NewFlagSet("l2tpv3-netdev", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&spec.Name, "name", "port0", "")
	fs.StringVar(&spec.Stream, "stream", "", "")
	fs.StringVar(&spec.VhostUser, "vhost-user", "", "")
	fs.StringVar(&spec.VhostUser, "socket-path", "", "")
	caps := fs.Bool("print-capabilities", false, "")
	fs.StringVar(&spec.L2TPv3, "l2tpv3", "", "")
	fs.IntVar(&spec.Batch, "batch", backend.DefaultBatch, "")
	level := fs.String("log-level", "info", "")
	showVersion := fs.Bool("version", false, "")
	help := fs.Bool("help", false, "")
	fs.BoolVar(help, "h", false, "")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case *help:
		fmt.Fprint(out, usageHead, "L2TPv3 options (--l2tpv3):\n", l2tp.OptionHelp())
		return o, errHelpShown
	case *caps:
		fmt.Fprintln(out, `{"type":"net"}`)
		return o, errHelpShown
	case *showVersion:
		fmt.Fprintf(out, "l2tpv3-netdev %s\n", version)
		return o, errHelpShown
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err := o.logLevel.UnmarshalText([]byte(*level)); err != nil {
		return o, fmt.Errorf("--log-level %q: want debug, info, warn or error", *level)
	}
	if spec.Batch == 0 {
		return o, errors.New("--batch 0: must be 1..1024")
	}
	cfg, err := spec.Parse()
	if err != nil {
		return o, err
	}
	o.ports = []backend.PortConfig{cfg}
	return o, nil
}
