#!/usr/bin/env bash
# Installs and starts what hyperfleet needs on a Debian host, idempotently:
# FUSE 3 tools, the Docker engine (Debian's docker.io) answering on its
# socket, busybox-static (for the local test image) and curl (REST tests).
set -euo pipefail

missing=()
command -v fusermount3 >/dev/null 2>&1 || missing+=(fuse3)
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "deps: missing ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}" >&2
        exit 1
    fi
    echo "deps: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! docker version >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "deps: no Docker engine answers; start dockerd (as root)" >&2
        exit 1
    fi
    echo "deps: starting dockerd"
    if command -v systemctl >/dev/null 2>&1 && systemctl start docker 2>/dev/null; then
        :
    else
        nohup dockerd >/var/log/hyperfleet-dockerd.log 2>&1 &
    fi
    for _ in $(seq 1 120); do
        docker version >/dev/null 2>&1 && break
        sleep 0.5
    done
    docker version >/dev/null 2>&1 || { echo "deps: dockerd did not come up; see /var/log/hyperfleet-dockerd.log" >&2; exit 1; }
fi
