#!/usr/bin/env bash
# The test suite: makes sure FUSE, Docker and the local test image are there,
# then runs every test (unit and integration) with cargo-nextest.
set -euo pipefail
cd "$(dirname "$0")/.."

contrib/deps.sh
contrib/make-test-image.sh

# Tools the tests drive the filesystem with, beyond a shell and coreutils:
# command -> Debian package.
pkgs=()
for pair in curl:curl ed:ed vim:vim python3:python3 cpio:cpio ip:iproute2 \
            systemd-analyze:systemd gcc:gcc ld:binutils xz:xz-utils; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || pkgs+=("${pair#*:}")
done
if [ ${#pkgs[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi

# The VM tests run against real VMMs: the ones beside the checkout (as CI
# has them) unless HYPERFLEET_FIRECRACKER_BIN / ..._CLOUD_HYPERVISOR_BIN say.
vmm="$(cd .. && pwd)/shared/vmm"
if [ -z "${HYPERFLEET_FIRECRACKER_BIN:-}" ] && [ -x "$vmm/firecracker" ]; then
    export HYPERFLEET_FIRECRACKER_BIN="$vmm/firecracker"
fi
if [ -z "${HYPERFLEET_CLOUD_HYPERVISOR_BIN:-}" ] && [ -x "$vmm/cloud-hypervisor" ]; then
    export HYPERFLEET_CLOUD_HYPERVISOR_BIN="$vmm/cloud-hypervisor"
fi

# Documentation examples first: nextest does not run them.
cargo test --doc --quiet
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --all-targets --no-fail-fast "$@"
else
    cargo test --workspace --all-targets --no-fail-fast "$@"
fi
