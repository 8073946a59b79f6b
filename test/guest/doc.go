// Package guest boots tiny throw-away Linux guests under QEMU for the
// project's end-to-end tests.
//
// A guest is a Debian kernel (downloaded with apt-get, never installed) and
// an initramfs made here: a static busybox, the virtio-net modules, the
// kernel's L2TP modules and iproute2's ip with its shared libraries. Both are
// built on demand by [EnsureAssets] and cached under $L2TPV3_GUEST_CACHE
// (default /var/tmp/l2tpv3-netdev-guest), keyed by kernel version and by a
// hash of everything that goes into the initramfs.
//
// The guest's init reads its settings from the kernel command line
// (see [Options]): l2t.ip=ADDR/LEN, l2t.mtu=N and l2t.ip6=ADDR/LEN configure
// eth0, l2t.ip1=…, l2t.mtu1=… configure eth1 and so on; l2t.name sets the host
// name and l2t.l2tp=1 loads the L2TP modules. It then prints [ReadyMarker] on
// the serial console and reads shell commands from it, which [VM.Run] drives.
//
// Tests address guests only with link-local addresses (169.254.0.0/16,
// fe80::/10); the underlay between QEMU processes is loopback.
//
// Tests call [Require] (or [Start], which calls it) so that they skip when not
// root or unless L2TPV3_E2E=1.
package guest
