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
	daemon   daemonOptions // --config, --check, --admin, --metrics, --pcap (daemon.go)
}

const usageHead = `Usage: l2tpv3-netdev --stream unix:PATH[,server=on|off] --l2tpv3 OPTIONS [flags]
       l2tpv3-netdev --vhost-user PATH[,server=on|off] --l2tpv3 OPTIONS [flags]
       l2tpv3-netdev --config FILE [--check] [flags]
       l2tpv3-netdev --admin PATH [flags]   (no port yet: port add and plug fill it)
       l2tpv3-netdev ports|port ... (a running daemon's admin socket; see below)

Carries a QEMU VM's NIC over a static L2TPv3 pseudowire (RFC 3931/4719).

QEMU side:
  --stream unix:PATH[,server=on|off][,reconnect=S|,reconnect-ms=MS]
  --stream tcp:HOST:PORT[,...]
        QEMU's -netdev stream socket. server=on (default): the sidecar listens
        and QEMU connects with -netdev stream,server=off,addr.type=unix,addr.path=PATH.
        server=off: the sidecar connects to QEMU's server=on socket and
        reconnects every reconnect seconds (default 1) when it drops.

  --vhost-user PATH[,server=on|off][,queues=N][,mtu=N][,offload=on|off]   (also --socket-path PATH)
        A vhost-user socket: the VM's virtio-net rings are served straight from
        guest memory. server=on (default): the sidecar listens; QEMU uses
        -chardev socket,id=c0,path=PATH,reconnect=1 -netdev vhost-user,chardev=c0
        and needs shared guest RAM (-object memory-backend-memfd,share=on).
        queues=N (1..16, default 1) offers N queue pairs (QEMU: -netdev
        vhost-user,queues=N and -device virtio-net-pci,mq=on).
        mtu=N (68..65535) is the MTU offered to the guest (VIRTIO_NET_F_MTU;
        QEMU's host_mtu=N must match); default: the inner MTU, what the
        underlay MTU carries after the L2TPv3 overhead (underlay-mtu= in
        --l2tpv3, else the route toward dst: 1446 on 1500 for UDP/IPv4 with
        the sublayer); a larger mtu= is warned about at start.
        offload=on (default) offers the guest checksum and TCP segmentation
        offloads (CSUM, HOST_TSO4/6): the sidecar completes checksums and cuts
        TSO super-frames itself, and sends the segments as one UDP GSO batch;
        offload=off makes the guest do both.
  --print-capabilities
        print {"type":"net"} (the vhost-user back-end convention) and exit

  Who may connect (--stream unix:PATH and --vhost-user PATH with server=on):
        the socket file is created mode 0600, owned by the sidecar's user;
        ,owner=USER|UID ,group=GROUP|GID ,mode=OCTAL change that (e.g.
        group=kvm,mode=0660), and ,allow-uid=USER|UID serves only that peer
        UID (SO_PEERCRED; others are closed, counted as vm_refused, logged
        at most once a second).

L2TPv3 side:
  --l2tpv3 OPTIONS
        QEMU's own -netdev l2tpv3 option string, e.g.
        src=192.0.2.1,dst=198.51.100.7,udp=on,srcport=1701,dstport=1701,txsession=0x10,rxsession=0x20

The wire (a lab's link; change it live with port link / port impair):
  --impair SPEC      impairments both ways in netem's words, e.g. "delay 50ms 10ms
                     distribution normal loss 1% rate 10mbit seed 7"; also loss
                     gemodel p r 1-h 1-k, duplicate P%, corrupt P%, reorder P% gap N,
                     limit N (a full delay line drops instead of holding the VM back)
  --impair-in SPEC, --impair-out SPEC   only into the VM / only from it
  --link down[ in|out]   start with the link cut (frames dropped, counted link_down)
  --qmp unix:PATH [--qmp-id ID]   QEMU's QMP socket: a cut link also sets the
                     guest NIC's link down (set_link ID, default the port's name)

Many ports, admin API, metrics, captures:
  --config FILE      TOML: daemon settings and one [[port]] table per port
                     (name, stream | vhost-user, l2tpv3, batch, pcap, link, impair,
                     impair-in, impair-out, qmp, qmp-id); a port
                     that cannot start is logged by name, the others run
  --check            validate the config and flags, name every bad port, exit 0/1
  --admin PATH[,owner=..][,group=..][,mode=..][,allow-uid=..]
                     admin API (HTTP+JSON) on a unix socket, mode 0600 unless
                     the keys (as for --stream) say, e.g. group=kvm,mode=0660
  --metrics ADDR     Prometheus /metrics on HOST:PORT (also on the admin socket)
  --pcap PORT=FILE   capture port PORT's frames to a pcap file (repeatable)

Subcommands (--admin PATH, default ` + defaultAdminPath + `):
  l2tpv3-netdev ports                 ports with state and counters
  l2tpv3-netdev port add NAME --stream ...|--vhost-user ... --l2tpv3 ... [--batch N]
  l2tpv3-netdev port del NAME         close the port and remove its socket file
  l2tpv3-netdev port show NAME        the port's status as JSON
  l2tpv3-netdev port capture NAME FILE  (or NAME --stop) a pcap of the port's frames
  l2tpv3-netdev port link NAME down|up [in|out]   cut or restore the port's wire
  l2tpv3-netdev port impair NAME [in|out] SPEC...|clear   set, change or clear impairments
  l2tpv3-netdev reload               re-read --config: add, remove, replace changed ports (as SIGHUP)
  l2tpv3-netdev plug --qmp unix:QMP --id ID ...   open a port, then hot-plug its NIC into a running VM
  l2tpv3-netdev unplug --qmp unix:QMP --id ID     hot-unplug the NIC, then close its port
  l2tpv3-netdev libvirt-xml --id ID --vhost-user PATH ...   the libvirt <interface> for a port
  l2tpv3-netdev peer-config --for linux|vyos|qemu --l2tpv3 ...|--config FILE|--port NAME
                     the far end's configuration: ip l2tp commands, VyOS set
                     commands (not run on VyOS) or QEMU's -netdev l2tpv3 string

Other flags:
  --batch N          frames per batch in each direction (default 64, 1..1024)
  --log-level LEVEL  debug, info, warn or error (default info)
  --version          print the version and exit
  --help             this text

Signals: SIGUSR1 prints the counters; SIGHUP reloads --config; SIGTERM or SIGINT exits cleanly (counters printed).

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
	wireFlags(fs, &spec)
	level := fs.String("log-level", "info", "")
	o.daemon.register(fs)
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
	err := o.daemon.finish(&o, fs, spec)
	return o, err
}
