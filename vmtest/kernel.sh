#!/usr/bin/env bash
# The kernel backend proof (SPEC §5): builds the internal/ipsec/kernel tests as
# one static binary and runs them inside the VM, where the EMU_VMTEST-gated
# ones run too: a ping through the XFRM interfaces of two namespaces, as ESP,
# for each cipher; Down leaving nothing.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out="$here/.cache/bin"
mkdir -p "$out"
(cd "$here/.." && CGO_ENABLED=0 go test -c -o "$out/kernel.test" ./internal/ipsec/kernel)
exec "$here/run.sh" "$@" "$out/kernel.test" -test.v
