#!/usr/bin/env bash
# The test suite: makes sure FUSE, Docker and the local test image are there,
# then runs every test (unit and integration) with cargo-nextest.
set -euo pipefail
cd "$(dirname "$0")/.."

contrib/deps.sh
contrib/make-test-image.sh

# Documentation examples first: nextest does not run them.
cargo test --doc --quiet
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --all-targets --no-fail-fast "$@"
else
    cargo test --workspace --all-targets --no-fail-fast "$@"
fi
