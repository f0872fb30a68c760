#!/usr/bin/env bash
# The kernel ESP half of the test suite (SPEC §5): each package below is built
# as one static test binary and run inside the VM, where the kernel has ESP.
# There the lab tests deploy with the kernel XFRM dataplane, and the interop
# test puts kernel ESP on one gateway and userspace ESP on the other.
# Usage: vmtest/suite.sh [run.sh options]   (after vmtest/setup.sh)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out="$here/.cache/bin"
mkdir -p "$out"
packages=(
  ./internal/ipsec/kernelprobe   # the probe finds ESP and XFRM interfaces
  ./internal/ipsec/kernel        # XFRM states, policies, interface; each cipher
  ./internal/checks              # the static lab on kernel ESP; kernel/userspace interop; IKE SAs in XFRM
  ./internal/fault               # breaking and repairing a kernel tunnel
  ./internal/lab                 # deploy, rollback and destroy with XFRM objects
)
failed=()
for pkg in "${packages[@]}"; do
  bin="$out/$(basename "$pkg").test"
  (cd "$here/.." && CGO_ENABLED=0 go test -c -o "$bin" "$pkg")
  # The checks package deploys some twenty labs, each under TCG emulation
  # (about 5 minutes here): it gets twice run.sh's default.
  timeout=300
  [[ $pkg == ./internal/checks ]] && timeout=600
  if ! "$here/run.sh" --timeout "$timeout" "$@" "$bin" -test.v; then
    failed+=("$pkg")
  fi
done
if ((${#failed[@]})); then
  echo "vmtest: FAIL ${failed[*]}"
  exit 1
fi
echo "vmtest: all ${#packages[@]} packages passed inside the VM"
