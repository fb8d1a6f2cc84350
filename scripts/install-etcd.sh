#!/usr/bin/env bash
# Install etcd 3.4 from Debian's etcd-server package: the peer that
# `make bench-kv` (bench/kv_bench.py) measures liferaft-kv against.
# Idempotent: does nothing but print the version when etcd is already there.
# Needs root (or sudo) and apt.  The package's systemd unit is not used by the
# benchmark, which starts its own 3-node cluster on 127.0.0.1.
set -euo pipefail

find_etcd() {
    command -v etcd 2>/dev/null || { [ -x /usr/bin/etcd ] && echo /usr/bin/etcd; } || true
}

ETCD="$(find_etcd)"
if [ -z "$ETCD" ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "install-etcd: apt-get not found; install etcd 3.4 by other means" >&2
        exit 1
    fi
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            SUDO="sudo"
        else
            echo "install-etcd: run as root (apt-get install needs it)" >&2
            exit 1
        fi
    fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update
    $SUDO apt-get install -y --no-install-recommends etcd-server
    # Debian enables and may start the packaged service (a one-node etcd on
    # 2379/2380).  The benchmark starts its own clusters on free ports and
    # wants no idle etcd beside them, so stop the one we just installed.
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
        $SUDO systemctl disable --now etcd || true
    fi
    ETCD="$(find_etcd)"
    if [ -z "$ETCD" ]; then
        echo "install-etcd: etcd-server installed but no etcd binary found" >&2
        exit 1
    fi
fi
echo "etcd: $ETCD"
"$ETCD" --version
