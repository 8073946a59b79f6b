// Command l2tpv3-netdev is a QEMU network back end in a process of its own:
// it takes a VM's NIC over QEMU's -netdev stream socket (or vhost-user) and
// carries its Ethernet frames in a static L2TPv3 pseudowire.
//
// With no subcommand it is the daemon; `l2tpv3-netdev SUBCOMMAND ...` runs
// one of the subcommands below instead (a client of a running daemon, or a
// helper that prints configuration).
//
// This package is the thin top: flags, merged over the config file that
// package config reads (args.go, daemon.go), wiring and signals (run.go), the admin client subcommands
// (client.go), the plug/unplug command lines (plugargs.go; the work is
// package plug's) and libvirt-xml. It may import every package of the
// module; none imports it.
package main
