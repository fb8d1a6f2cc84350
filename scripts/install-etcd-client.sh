#!/usr/bin/env bash
# Install etcdctl 3.4 from Debian's etcd-client package: the real etcd client
# that the etcd-protocol tests (tests/etcd/) run against liferaft-kv.
# Idempotent: does nothing but print the version when etcdctl is already there.
# Needs root (or sudo) and apt.  The Python etcd clients the tests also use
# (etcd3gw, aetcd) come from PyPI with the project's dev dependencies, not
# from here.  etcd itself (for the benchmarks) is scripts/install-etcd.sh.
set -euo pipefail
. "$(dirname "$0")/lib/debian-tool.sh"

ETCDCTL="$(install_debian_tool etcdctl etcd-client)"
echo "etcdctl: $ETCDCTL"
# ETCDCTL_API=3 is the 3.4 default; set it so an inherited ETCDCTL_API=2
# cannot make this print the v2 client's version.
ETCDCTL_API=3 "$ETCDCTL" version
