#!/usr/bin/env bash
# Installs what vmtest/run.sh needs and fetches a stock Debian cloud kernel with
# the modules the kernel IPsec backend uses (SPEC §5). Safe to run again: every
# step checks first and says what it does.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache="$here/.cache"

# Load order matters: drbg before the AEAD templates (seqiv/echainiv need a
# default RNG, else every SA add fails with "Kernel was unable to initialize
# cryptographic operations"), then the SPEC §5 list. drbg's self-tests want
# ctr(aes), sha512 and jitterentropy (which wants sha3), all asked for through
# the crypto API rather than linked, so modinfo names none of them: they go
# first. Each module's depends= is resolved below and loaded before it.
# af_packet is listed because the encryption checks capture with AF_PACKET
# (built in on Debian's cloud kernel); sch_tbf, sch_htb and cls_u32 because
# bandwidth specs are emulated with them. des_generic is cbc(des) and
# cbc(des3_ede) of the provider's des/3des (md5, sha1, sha256 and cbc are
# built in; sha512_generic above also gives hmac(sha384)).
modules=(sha3_generic jitterentropy_rng ctr sha512_generic drbg
	xfrm_algo xfrm_user tunnel4 xfrm4_tunnel tunnel6 xfrm6_tunnel
	gf128mul ghash-generic gcm seqiv echainiv authenc esp4 xfrm_interface des_generic
	veth tun nfnetlink libcrc32c nf_tables cryptd crypto_simd aesni-intel
	af_packet sch_tbf sch_htb cls_u32)

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (apt-get install)"

tools=(qemu-system-x86_64:qemu-system-x86 cpio:cpio modinfo:kmod xz:xz-utils)
missing=()
for t in "${tools[@]}"; do
	command -v "${t%%:*}" >/dev/null || missing+=("${t#*:}")
done
# busybox-static, not busybox: the initramfs has no libc.
dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
# apt-get update only when apt does not know what we ask for (no lists yet).
apt_update_unless_known() {
	apt-cache show "$@" >/dev/null 2>&1 && return 0
	say "apt-get update (apt does not know: $*)"
	apt-get update
}
if ((${#missing[@]})); then
	apt_update_unless_known "${missing[@]}"
	say "apt-get install -y ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
else
	say "host tools present: qemu-system-x86_64 busybox(static) cpio modinfo xz"
fi

# The kernel version the cloud metapackage points at today.
apt_update_unless_known linux-image-cloud-amd64
pkg=$(apt-cache depends linux-image-cloud-amd64 |
	awk '/Depends: linux-image-[0-9].*-cloud-amd64/ {print $2; exit}')
[[ -n $pkg ]] || die "apt-cache depends linux-image-cloud-amd64 names no kernel package"
kver=${pkg#linux-image-}
say "kernel package: $pkg (version $kver)"

kdir="$cache/kernel/$kver"
if [[ -f $kdir/vmlinuz && -f $kdir/modules/load-order &&
	$(cat "$kdir/modules/wanted" 2>/dev/null) == "${modules[*]}" ]]; then
	say "already prepared: $kdir"
	ln -sfn "$kver" "$cache/kernel/current"
	exit 0
fi

mkdir -p "$cache/debs"
shopt -s nullglob
debs=("$cache/debs/${pkg}_"*.deb)
if ((${#debs[@]} == 0)); then
	say "apt-get download $pkg into $cache/debs"
	# _apt cannot write into a root-owned work tree: download as root.
	download() { (cd "$cache/debs" && apt-get -o APT::Sandbox::User=root download "$pkg"); }
	# Stale lists name a version the archive has dropped: refresh once.
	download || { say "download failed: apt-get update and retry"; apt-get update && download; }
	debs=("$cache/debs/${pkg}_"*.deb)
	((${#debs[@]})) || die "apt-get download $pkg left no .deb in $cache/debs"
fi
deb=${debs[0]}
say "using $deb"

tmp=$(mktemp -d "$cache/extract.XXXXXX")
trap 'rm -rf "$tmp" "$kdir.new"' EXIT
say "dpkg-deb -x $(basename "$deb")"
dpkg-deb -x "$deb" "$tmp/root"
mroot="$tmp/root/lib/modules/$kver"
[[ -d $mroot ]] || die "package has no lib/modules/$kver"

rm -rf "$kdir.new"
mkdir -p "$kdir.new/modules"
cp "$tmp/root/boot/vmlinuz-$kver" "$kdir.new/vmlinuz"
cp "$tmp/root/boot/config-$kver" "$kdir.new/config"

# name -> path of the module file; kernel module names treat - and _ alike.
declare -A path_of
while IFS= read -r f; do
	n=$(basename "$f"); n=${n%%.ko*}; n=${n//-/_}
	path_of[$n]=$f
done < <(find "$mroot" -name '*.ko' -o -name '*.ko.xz' -o -name '*.ko.zst')

# Plain .ko for insmod: decompress what Debian may ship compressed.
module_file() {
	local src=$1 dst=$2
	case $src in
	*.ko.xz) xz -dc "$src" >"$dst" ;;
	*.ko.zst) unzstd -qc "$src" >"$dst" ;;
	*) cp "$src" "$dst" ;;
	esac
}

declare -A done_mod
order=()
add_module() {
	local n=${1//-/_} dep src
	[[ -n ${done_mod[$n]:-} ]] && return 0
	src=${path_of[$n]:-}
	if [[ -z $src ]]; then
		# modules.builtin spells names with _ or -, as the source files do.
		grep -q -e "/$n\.ko\$" -e "/${n//_/-}\.ko\$" "$mroot/modules.builtin" ||
			die "$pkg has no module $n, and it is not built in"
		done_mod[$n]=builtin
		say "  $n: built in"
		return 0
	fi
	done_mod[$n]=pending
	module_file "$src" "$kdir.new/modules/$n.ko"
	for dep in $(modinfo -F depends "$kdir.new/modules/$n.ko" | tr ',' ' '); do
		add_module "$dep"
	done
	order+=("$n")
	done_mod[$n]=loaded
}
say "modules (dependencies first):"
for m in "${modules[@]}"; do add_module "$m"; done
printf '%s\n' "${order[@]}" >"$kdir.new/modules/load-order"
echo "${modules[*]}" >"$kdir.new/modules/wanted"
say "  load order: ${order[*]}"

rm -rf "$kdir"
mv "$kdir.new" "$kdir"
ln -sfn "$kver" "$cache/kernel/current"
say "ready: $kdir (vmlinuz, config, ${#order[@]} modules)"
