"""etcd's v3 API for liferaft-kv (issue 16; docs/etcd.md).

So far: the protocol's messages and gRPC services (:mod:`liferaft.etcd.proto`).
"""
