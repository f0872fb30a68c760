#!/usr/bin/env bash
# Installs what emu's build and tests need on a fresh Debian machine: Go comes
# with the machine; iproute2 and tshark are independent witnesses some tests
# use (tshark proves the lab's esp_sa file decrypts a capture).
set -euo pipefail
need=()
command -v ip >/dev/null || need+=(iproute2)
command -v tshark >/dev/null || need+=(tshark)
if ((${#need[@]})); then
  echo "setup: installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
command -v go >/dev/null || { echo "setup: Go 1.26 is required (not found on PATH)" >&2; exit 1; }
echo "setup: ok ($(go version | cut -d' ' -f3), $(ip -V))"
