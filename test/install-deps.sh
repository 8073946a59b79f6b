#!/usr/bin/env bash
# Installs what the demo and the tests need on a fresh Debian 12 machine:
# QEMU, a static busybox for the guests, tshark for capture checks, iperf3
# for traffic, libvirt's schema validator. Installs only what is missing.
set -euo pipefail
need=()
for pkg in qemu-system-x86 busybox-static tshark iperf3 xz-utils cpio iproute2 libvirt-clients; do
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
