#!/usr/bin/env bash
# Installs what the demo and the tests need on a fresh Debian 12 machine:
# QEMU, a static busybox for the guests, tshark for capture checks, curl for
# the admin socket, iperf3 for traffic, libvirt's schema validator (virt-xml-validate runs xmllint),
# DPDK's testpmd (dpdk-dev) as a foreign vhost-user front end (e2e test and bench), netsniff-ng's
# trafgen as a foreign UDP generator (bench), libvirtd with its QEMU driver
# (the libvirt e2e test starts a domain). Installs only what is missing.
set -euo pipefail
need=()
for pkg in qemu-system-x86 busybox-static tshark iperf3 xz-utils cpio iproute2 libvirt-clients libxml2-utils libvirt-daemon-system libvirt-daemon-driver-qemu curl dpdk-dev netsniff-ng; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages: ${need[*]} (run as root, or apt-get install them)" >&2
  exit 1
fi
echo "install-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
