#!/usr/bin/env bash
# Builds the guest agent as one static executable (glibc's static libc on
# the gnu target; no musl toolchain needed) and prints its path.
# Usage: contrib/build-agent.sh   (extra arguments go to cargo rustc)
set -euo pipefail
cd "$(dirname "$0")/.."

# crt-static links glibc statically; a non-PIE executable (relocation-model
# static) is what ldd calls "not a dynamic executable" (a static PIE still
# carries a dynamic section); symbols are stripped to keep the initramfs small.
cargo rustc --quiet --release --no-default-features --bin hyperfleet-agent "$@" -- \
    -C target-feature=+crt-static -C relocation-model=static -C strip=symbols
bin="$PWD/target/release/hyperfleet-agent"

# A dynamic agent would not start in a guest that has no libc.
said=$(ldd "$bin" 2>&1 || true)
case "$said" in
    *"not a dynamic executable"*) echo "$bin" ;;
    *) echo "build-agent: $bin is not static: $said" >&2; exit 1 ;;
esac
