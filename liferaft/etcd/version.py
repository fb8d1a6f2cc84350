"""The etcd release whose protocol liferaft-kv speaks: what ``GET /version``
and Maintenance/Status answer (etcd3gw and etcdctl read it)."""

from __future__ import annotations

ETCD_VERSION = "3.4.23"
CLUSTER_VERSION = "3.4.0"
