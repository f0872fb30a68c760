#!/usr/bin/env bash
# The kernel ESP proof (SPEC §5): builds the kernelprobe tests as one static
# binary and runs them inside the VM, where the EMU_VMTEST-gated ones run too.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out="$here/.cache/bin"
mkdir -p "$out"
(cd "$here/.." && CGO_ENABLED=0 go test -c -o "$out/kernelprobe.test" ./internal/ipsec/kernelprobe)
exec "$here/run.sh" "$@" "$out/kernelprobe.test" -test.v
