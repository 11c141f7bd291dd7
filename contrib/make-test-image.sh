#!/usr/bin/env bash
# Builds the local test image hyperfleet-test/busybox:latest from Debian's
# busybox-static, because the tests must not depend on a reachable registry.
# Idempotent: does nothing if the image already exists.
#
# Usage: contrib/make-test-image.sh [image-name]
#   BUSYBOX=/path/to/static/busybox overrides the binary.
set -euo pipefail

image="${1:-${HYPERFLEET_TEST_IMAGE:-hyperfleet-test/busybox:latest}}"
busybox="${BUSYBOX:-/bin/busybox}"

if ! command -v docker >/dev/null 2>&1; then
    echo "error: the docker CLI is not installed" >&2
    exit 1
fi
if ! docker version >/dev/null 2>&1; then
    echo "error: cannot reach the Docker engine; start it (e.g. 'nohup dockerd >/tmp/dockerd.log 2>&1 &')" >&2
    exit 1
fi

if docker image inspect "$image" >/dev/null 2>&1; then
    echo "$image already exists"
    exit 0
fi

if [[ ! -x "$busybox" ]]; then
    echo "error: $busybox not found; install Debian's busybox-static (apt-get install busybox-static)" >&2
    exit 1
fi
# A dynamically linked busybox would need the host's libc inside the image.
if command -v ldd >/dev/null 2>&1 && ldd "$busybox" >/dev/null 2>&1; then
    echo "error: $busybox is dynamically linked; a static busybox is required" >&2
    exit 1
fi

staging="$(mktemp -d)"
trap 'rm -rf "$staging"' EXIT

mkdir -p "$staging"/{bin,sbin,usr/bin,usr/sbin,etc,root,proc,sys,dev,tmp}
chmod 1777 "$staging/tmp"
cp "$busybox" "$staging/bin/busybox"
chmod 755 "$staging/bin/busybox"

# Relative symlinks so the links resolve inside the container, not on the host.
# The applet list comes from the binary itself, so every applet it has is linked.
for applet in $("$staging/bin/busybox" --list-full); do
    [[ "$applet" == bin/busybox ]] && continue
    dir="$(dirname "$applet")"
    # Computed by hand: realpath would follow the host's own /bin -> usr/bin.
    if [[ "$dir" == bin ]]; then
        up=busybox
    else
        up="$(sed -e 's#[^/][^/]*#..#g' <<<"$dir")/bin/busybox"
    fi
    mkdir -p "$staging/$dir"
    ln -sfn "$up" "$staging/$applet"
done
# A few applets the tests rely on; fail early if this busybox lacks them.
for applet in sh ls cat echo sleep true false ps kill uname env id head tail printf; do
    if [[ ! -e "$staging/bin/$applet" && ! -e "$staging/usr/bin/$applet" && ! -e "$staging/sbin/$applet" ]]; then
        echo "error: $busybox has no '$applet' applet" >&2
        exit 1
    fi
done

cat >"$staging/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat >"$staging/etc/group" <<'GROUP'
root:x:0:
nogroup:x:65534:
GROUP

tar --numeric-owner --owner=0 --group=0 -C "$staging" -cf "$staging.tar" .
trap 'rm -rf "$staging" "$staging.tar"' EXIT

docker import \
    --change 'CMD ["/bin/sh"]' \
    --change 'ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin' \
    "$staging.tar" "$image" >/dev/null
echo "built $image"
