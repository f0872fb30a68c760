#!/usr/bin/env bash
# Installs what emu's build and tests need on a fresh Debian machine: Go comes
# with the machine; iproute2, tshark and strace are independent witnesses some
# tests use (tshark proves the lab's esp_sa file decrypts a capture, strace that
# --dry-run makes no system call that changes the host); busybox-static fills
# the container-node tests' image; FRR and
# strongSwan (charon with kernel-libipsec from libcharon-extra-plugins, swanctl)
# are the real third-party on-prem gateways the interop tests run.
set -euo pipefail
need=()
command -v ip >/dev/null || need+=(iproute2)
command -v tshark >/dev/null || need+=(tshark)
command -v strace >/dev/null || need+=(strace)
# tcpdump: what users look at a lab's links with (`ip netns exec emu-<lab>-vbr tcpdump -ni eth1`).
command -v tcpdump >/dev/null || need+=(tcpdump)
# The container-node tests build their users' image from a static busybox.
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
[ -x /usr/lib/frr/bgpd ] && [ -x /usr/lib/frr/zebra ] || need+=(frr)
[ -x /usr/lib/ipsec/charon ] || need+=(strongswan-charon)
[ -e /usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so ] || need+=(libcharon-extra-plugins)
# AES-GCM (the provider example's aes128gcm16) lives in the gcm plugin of the standard plugins.
[ -e /usr/lib/ipsec/plugins/libstrongswan-gcm.so ] || need+=(libstrongswan-standard-plugins)
command -v swanctl >/dev/null || need+=(strongswan-swanctl)
if ((${#need[@]})); then
  echo "setup: installing ${need[*]}"
  apt-get update -qq
  # Daemons must not start on the host: emu runs them inside lab nodes only.
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
command -v go >/dev/null || { echo "setup: Go 1.26 is required (not found on PATH)" >&2; exit 1; }
echo "setup: ok ($(go version | cut -d' ' -f3), $(ip -V), frr $(dpkg-query -W -f='${Version}' frr), strongSwan $(dpkg-query -W -f='${Version}' strongswan-charon))"
