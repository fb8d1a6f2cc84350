"""etcd's v3 API for liferaft-kv (docs/etcd.md): the protocol's messages
(:mod:`liferaft.etcd.proto`), one handler per call (calls.py, registry.py),
served over gRPC (grpc_server.py) and etcd's JSON gateway (gateway.py).
"""

import os

# grpcio's C core logs every failed TLS handshake at INFO to stderr, in its
# own format: only errors belong in a node's log (an operator may lower it).
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
