#!/usr/bin/env bash
# Assembles a bootable microVM guest from Debian packages only:
#   OUTDIR/vmlinux              uncompressed kernel (an ELF with a PVH entry note)
#   OUTDIR/initramfs.cpio.gz    static busybox, the virtio and vsock modules, the agent as /init
#   OUTDIR/rootfs.ext4          the same tree as an ext4 image (with --rootfs)
#   OUTDIR/hyperfleet-agent     the static agent
#   OUTDIR/firecracker.json, OUTDIR/cloud-hypervisor.json   machine configs using them
# and prints the config for --runtime (default firecracker).
#
# Usage: contrib/guest/build.sh [--rootfs] [--runtime firecracker|cloud-hypervisor] OUTDIR
# Downloads are cached in $HYPERFLEET_GUEST_CACHE (default target/guest-cache).
# Needs root (device nodes in the initramfs; apt-get for missing tools).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

rootfs=no
runtime=firecracker
out=
while [ $# -gt 0 ]; do
    case "$1" in
        --rootfs) rootfs=yes ;;
        --runtime) runtime=${2:?--runtime needs a value}; shift ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        -*) echo "build.sh: unknown option $1" >&2; exit 2 ;;
        *) out=$1 ;;
    esac
    shift
done
[ -n "$out" ] || { echo "usage: $0 [--rootfs] [--runtime firecracker|cloud-hypervisor] OUTDIR" >&2; exit 2; }
case "$runtime" in firecracker|cloud-hypervisor) ;; *) echo "build.sh: unknown runtime $runtime" >&2; exit 2 ;; esac
mkdir -p "$out"
out=$(cd "$out" && pwd)
cache=${HYPERFLEET_GUEST_CACHE:-$repo/target/guest-cache}
mkdir -p "$cache"
# One build at a time per cache: two concurrent downloads of one package
# into it would clobber each other.
exec 9>"$cache/.lock"
flock 9

log() { echo "guest: $*" >&2; }
die() { echo "guest: $*" >&2; exit 1; }

# The modules the agent needs when the kernel has them as modules: the
# virtio transports of both VMMs (mmio for Firecracker, pci for Cloud
# Hypervisor), vsock over virtio, and virtio-blk for disks.
wanted_modules=(virtio_mmio virtio_pci vsock vmw_vsock_virtio_transport_common vmw_vsock_virtio_transport virtio_blk)

# --- host tools -------------------------------------------------------------
missing=()
for t in dpkg-deb:dpkg cpio:cpio gzip:gzip lz4:lz4 xz:xz-utils zstd:zstd bzip2:bzip2 readelf:binutils mkfs.ext4:e2fsprogs; do
    command -v "${t%%:*}" >/dev/null 2>&1 || missing+=("${t#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --- packages ---------------------------------------------------------------
kernel_pkg=${HYPERFLEET_KERNEL_PACKAGE:-}
if [ -z "$kernel_pkg" ]; then
    kernel_pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
    if [ -z "$kernel_pkg" ]; then
        apt-get update -qq >&2
        kernel_pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')
    fi
fi
[ -n "$kernel_pkg" ] || die "cannot find Debian's cloud kernel package"
fetch() { # package -> path of its .deb in the cache
    local deb
    deb=$(ls "$cache/$1"_*.deb 2>/dev/null | head -n1 || true)
    if [ -z "$deb" ]; then
        log "downloading $1"
        (cd "$cache" && apt-get download -o APT::Sandbox::User=root "$1" >&2)
        deb=$(ls "$cache/$1"_*.deb | head -n1)
    fi
    echo "$deb"
}
kernel_deb=$(fetch "$kernel_pkg")
busybox_deb=$(fetch busybox-static)
dpkg-deb -x "$kernel_deb" "$work/kernel"
dpkg-deb -x "$busybox_deb" "$work/busybox"

# --- vmlinux ----------------------------------------------------------------
# A bzImage is real-mode setup code followed by a decompressor carrying the
# compressed kernel ELF. The boot protocol header (2.08+) says exactly where
# that payload lies: payload_offset (0x248) and payload_length (0x24c) from
# the start of the protected-mode part, which follows (setup_sects + 1) 512-byte
# sectors. The payload's magic names the compressor; its last 4 bytes are
# the uncompressed size (little-endian), which checks the result.
u8_at()  { od -An -tu1 -j "$2" -N1 "$1" | tr -d ' '; }
u32_at() { od -An -tu4 -j "$2" -N4 "$1" | tr -d ' '; }
extract_vmlinux() {
    local img=$1 dst=$2
    [ "$(dd if="$img" bs=1 skip=$((0x202)) count=4 status=none)" = HdrS ] || die "$img is not a bzImage"
    local setup_sects pm_start offset length start magic
    setup_sects=$(u8_at "$img" $((0x1f1)))
    [ "$setup_sects" -eq 0 ] && setup_sects=4
    pm_start=$(( (setup_sects + 1) * 512 ))
    offset=$(u32_at "$img" $((0x248)))
    length=$(u32_at "$img" $((0x24c)))
    start=$((pm_start + offset))
    magic=$(od -An -tx1 -j "$start" -N6 "$img" | tr -d ' \n')
    local expected
    expected=$(u32_at "$img" $((start + length - 4)))
    payload() { dd if="$img" iflag=skip_bytes,count_bytes skip="$start" count="$1" bs=64K status=none; }
    case "$magic" in
        1f8b*)         log "kernel payload: gzip"; payload "$length" | gzip -dc >"$dst" ;;
        fd377a585a00*) log "kernel payload: xz"; payload $((length - 4)) | xz -dc >"$dst" ;;
        02214c18*)     log "kernel payload: lz4"; payload $((length - 4)) | lz4 -dc >"$dst" ;;
        28b52ffd*)     log "kernel payload: zstd"; payload $((length - 4)) | zstd -dc >"$dst" ;;
        425a68*)       log "kernel payload: bzip2"; payload $((length - 4)) | bzip2 -dc >"$dst" ;;
        5d0000*)       log "kernel payload: lzma"; payload $((length - 4)) | xz -dc --format=lzma >"$dst" ;;
        *) die "unknown kernel compression (payload starts $magic)" ;;
    esac
    [ "$(od -An -tx1 -N4 "$dst" | tr -d ' \n')" = 7f454c46 ] || die "the decompressed kernel is not an ELF"
    local size
    size=$(stat -c %s "$dst")
    [ "$size" -eq "$expected" ] || die "the decompressed kernel has $size bytes, its header says $expected"
    # Both VMMs enter a vmlinux through its PVH note (Xen, type 18).
    readelf -n "$dst" | grep -Eq 'Xen[[:space:]]+0x[0-9a-f]+[[:space:]]+.*(0x00000012|PHYS32_ENTRY)' \
        || die "the kernel has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)"
}
vmlinuz=$(ls "$work"/kernel/boot/vmlinuz-*)
extract_vmlinux "$vmlinuz" "$out/vmlinux"
kver=${vmlinuz##*/vmlinuz-}
log "kernel $kver"

# --- modules ----------------------------------------------------------------
moddir=$work/kernel/lib/modules/$kver
stage=$work/root
mkdir -p "$stage"
norm() { echo "${1//-/_}"; }
builtin() { grep -Eq "/$(norm "$1" | sed 's/_/[-_]/g')\.ko(\.[a-z]+)?$" "$moddir/modules.builtin"; }
module_file() { # module name -> its file in the package
    find "$moddir/kernel" -regextype posix-extended \
        -regex ".*/$(norm "$1" | sed 's/_/[-_]/g')\.ko(\.(xz|zst|gz))?" | head -n1
}
depends_of() { # file -> its dependencies, one a line
    local f=$1
    case "$f" in
        *.xz) xz -dc "$f" ;; *.zst) zstd -dc "$f" ;; *.gz) gzip -dc "$f" ;; *) cat "$f" ;;
    esac | tr '\0' '\n' | sed -n 's/^depends=//p' | tr ',' '\n' | sed '/^$/d'
}
order=()
declare -A seen=()
add_module() { # dependencies first (depth-first, post-order)
    local name
    name=$(norm "$1")
    [ -n "${seen[$name]:-}" ] && return
    seen[$name]=1
    if builtin "$name"; then
        log "module $name is built in"
        return
    fi
    local file dep
    file=$(module_file "$name")
    [ -n "$file" ] || die "module $name is neither built in nor shipped"
    for dep in $(depends_of "$file"); do add_module "$dep"; done
    order+=("$file")
}
for m in "${wanted_modules[@]}"; do add_module "$m"; done
mkdir -p "$stage/etc/hyperfleet"
list=$stage/etc/hyperfleet/modules
echo "# Loaded in this order by hyperfleet-agent as init (dependencies first)." >"$list"
for file in "${order[@]}"; do
    rel=${file#"$work/kernel"}
    # The agent could hand compressed modules to the kernel, but only if the
    # kernel can decompress them; storing them plain works everywhere.
    plain=${rel%.xz}; plain=${plain%.zst}; plain=${plain%.gz}
    mkdir -p "$stage$(dirname "$plain")"
    case "$rel" in
        *.xz) xz -dc "$file" >"$stage$plain" ;; *.zst) zstd -dc "$file" >"$stage$plain" ;;
        *.gz) gzip -dc "$file" >"$stage$plain" ;; *) cp "$file" "$stage$plain" ;;
    esac
    echo "$plain" >>"$list"
    log "module $(basename "$plain")"
done
cp "$moddir/modules.builtin" "$moddir/modules.order" "$stage/lib/modules/$kver/" 2>/dev/null || true

# --- the tree ---------------------------------------------------------------
mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,etc,dev,proc,sys,tmp,run,root,var}
chmod 1777 "$stage/tmp"
install -m 0755 "$work/busybox/bin/busybox" "$stage/bin/busybox"
# busybox lists where each applet belongs; link them all to it.
"$stage/bin/busybox" --list-full | while read -r applet; do
    [ -e "$stage/$applet" ] || ln -s /bin/busybox "$stage/$applet"
done
agent=$("$repo/contrib/build-agent.sh")
install -m 0755 "$agent" "$out/hyperfleet-agent"
install -m 0755 "$agent" "$stage/init"
ln -sf /init "$stage/sbin/hyperfleet-agent"
cat >"$stage/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$stage/etc/group" <<'EOF'
root:x:0:
tty:x:5:
nogroup:x:65534:
EOF
echo hyperfleet >"$stage/etc/hostname"
# The kernel opens /dev/console for init before anything mounts devtmpfs.
mknod -m 600 "$stage/dev/console" c 5 1
mknod -m 666 "$stage/dev/null" c 1 3

# --- images -----------------------------------------------------------------
(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -9n >"$out/initramfs.cpio.gz"
log "initramfs $(stat -c %s "$out/initramfs.cpio.gz") bytes"
if [ "$rootfs" = yes ]; then
    rm -f "$out/rootfs.ext4"
    mkfs.ext4 -q -F -L hyperfleet -d "$stage" "$out/rootfs.ext4" 64M
    log "rootfs.ext4 (virtio_blk is a module in this kernel: boot it with the initramfs)"
fi

# --- machine configs --------------------------------------------------------
# Firecracker: virtio-mmio, no PCI, and no power management: the guest
# leaves by rebooting through the keyboard controller.
fc_args="console=ttyS0 reboot=k panic=1 pci=off hyperfleet.agent_port=52 hyperfleet.poweroff=reboot"
ch_args="console=ttyS0 panic=1 hyperfleet.agent_port=52"
config() { # runtime args
    printf '{"runtime_type":"%s","kernel_image_path":"%s","initrd_path":"%s","kernel_args":"%s","vcpu_count":1,"mem_size_mib":256}\n' \
        "$1" "$out/vmlinux" "$out/initramfs.cpio.gz" "$2"
}
config firecracker "$fc_args" >"$out/firecracker.json"
config cloud-hypervisor "$ch_args" >"$out/cloud-hypervisor.json"
cat "$out/$runtime.json"
