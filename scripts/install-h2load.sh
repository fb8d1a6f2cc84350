#!/usr/bin/env bash
# Install h2load from Debian's nghttp2-client package: the gRPC load
# generator of bench/kv_etcd_api.py (`make bench-kv`), which sends prebuilt
# gRPC frames over HTTP/2 to liferaft-kv's --grpc-addr and to etcd's client
# port.  Without it the gRPC rows fall back to the Python generator
# (several grpc.aio processes), which costs far more CPU per call.
# Idempotent: does nothing but print the version when h2load is already there.
# Needs root (or sudo) and apt.
set -euo pipefail
. "$(dirname "$0")/lib/debian-tool.sh"

H2LOAD="$(install_debian_tool h2load nghttp2-client)"
echo "h2load: $H2LOAD"
"$H2LOAD" --version
