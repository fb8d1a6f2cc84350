#!/usr/bin/env bash
# Install etcd 3.4 from Debian's etcd-server package: the peer that
# `make bench-kv` (bench/kv_bench.py) measures liferaft-kv against.
# Idempotent: does nothing but print the version when etcd is already there.
# Needs root (or sudo) and apt.  The package's systemd unit is not used by the
# benchmark, which starts its own 3-node cluster on 127.0.0.1.
# etcdctl (Debian's etcd-client) is scripts/install-etcd-client.sh.
set -euo pipefail
. "$(dirname "$0")/lib/debian-tool.sh"

FRESH="$( [ -z "$(find_debian_tool etcd)" ] && echo 1 || true)"
ETCD="$(install_debian_tool etcd etcd-server)"
# Debian enables and may start the packaged service (a one-node etcd on
# 2379/2380).  The benchmark starts its own clusters on free ports and wants
# no idle etcd beside them, so stop the one we just installed.
if [ -n "$FRESH" ] && command -v systemctl >/dev/null 2>&1 \
        && systemctl is-active --quiet etcd 2>/dev/null; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO systemctl disable --now etcd || true
fi
echo "etcd: $ETCD"
"$ETCD" --version
