#!/bin/sh
# /init of the l2tpv3-netdev test guest (busybox sh, PID 1).
# Settings come from the kernel command line, see package guest's doc.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb
/bin/busybox --install -s /bin
# busybox sh runs its own applets before searching PATH: iproute2's ip
# (needed for "ip l2tp") is reached through this function.
ip() { /usr/sbin/ip "$@"; }

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /tmp /run /root
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
ln -s /proc/self/fd /dev/fd
ln -s fd/0 /dev/stdin
ln -s fd/1 /dev/stdout
ln -s fd/2 /dev/stderr

# arg KEY prints the value of KEY=VALUE from the kernel command line.
arg() {
	for w in $(cat /proc/cmdline); do
		case "$w" in "$1="*) echo "${w#*=}"; return 0 ;; esac
	done
	return 1
}

# load LIST insmods the modules named in /lib/l2t/LIST, in order.
load() {
	for m in $(cat "/lib/l2t/$1"); do
		insmod "/lib/l2t/modules/$m.ko" || echo "L2T-ERROR: insmod $m failed"
	done
}

# No duplicate address detection: link-local IPv6 is usable at once.
echo 0 >/proc/sys/net/ipv6/conf/default/accept_dad
echo 0 >/proc/sys/net/ipv6/conf/all/accept_dad
load net.list
[ "$(arg l2t.l2tp)" = 1 ] && load l2tp.list
# Keep the console for the harness: kernel messages go to dmesg only.
dmesg -n 1

hostname "$(arg l2t.name || echo guest)"
ip link set lo up

# The NICs the command line asks for may take a moment to register.
want=0 n=0
while [ $n -lt 8 ]; do
	s=$n s6=_$n; [ $n -eq 0 ] && s= s6=
	if arg "l2t.ip$s" >/dev/null || arg "l2t.mtu$s" >/dev/null || arg "l2t.ip6$s6" >/dev/null; then
		want=$((n + 1))
	fi
	n=$((n + 1))
done
t=0
while [ "$want" -gt 0 ] && [ ! -e "/sys/class/net/eth$((want - 1))" ] && [ $t -lt 50 ]; do
	sleep 0.1; t=$((t + 1))
done

i=0
while [ -e "/sys/class/net/eth$i" ]; do
	s=$i s6=_$i; [ $i -eq 0 ] && s= s6=
	mtu=$(arg "l2t.mtu$s") && ip link set "eth$i" mtu "$mtu"
	ip link set "eth$i" up
	v4=$(arg "l2t.ip$s") && ip addr add "$v4" dev "eth$i"
	v6=$(arg "l2t.ip6$s6") && ip -6 addr add "$v6" dev "eth$i" nodad
	i=$((i + 1))
done
gw=$(arg l2t.gw) && ip route add default via "$gw"

# PID 1 must never exit: the driven shell runs as a child and is restarted.
# (No trap here: a signal ignored by PID 1 would stay ignored in the shell.)
while :; do
	setsid cttyhack sh /lib/l2t/shell
	echo "L2T-SHELL-EXITED"
	sleep 1
done
