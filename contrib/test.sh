#!/usr/bin/env bash
# The test suite: makes sure FUSE, Docker and the local test image are there,
# then runs every test (unit and integration) with cargo-nextest.
set -euo pipefail
cd "$(dirname "$0")/.."

contrib/deps.sh
contrib/make-test-image.sh

# Tools the tests drive the filesystem with, beyond a shell and coreutils.
tools=()
for t in curl ed vim python3; do command -v "$t" >/dev/null 2>&1 || tools+=("$t"); done
if [ ${#tools[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${tools[@]}" >/dev/null
fi

# Documentation examples first: nextest does not run them.
cargo test --doc --quiet
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --all-targets --no-fail-fast "$@"
else
    cargo test --workspace --all-targets --no-fail-fast "$@"
fi
