#!/bin/sh
# The shell the harness drives on the serial console (see VM.Run).
# No echo, no prompt, no line editing: the console carries only output.
stty -echo -onlcr 2>/dev/null
# Ctrl-C ends the running command, not this shell.
trap 'echo L2T-INT' INT
# busybox sh runs its own applets before searching PATH: iproute2's ip
# (needed for "ip l2tp") is reached through this function.
ip() { /usr/sbin/ip "$@"; }
cd /root
echo L2T-READY
. /dev/stdin
