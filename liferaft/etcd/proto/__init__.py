"""etcd 3.4's v3 wire format: the messages and services liferaft-kv serves.

``kv.proto`` (package ``mvccpb``) and ``rpc.proto`` (``etcdserverpb``) are
written here; ``kv_pb2``, ``rpc_pb2`` (with ``.pyi`` stubs) and
``rpc_pb2_grpc`` are generated from them by ``scripts/gen-proto.sh`` and
committed; never edit them by hand (docs/etcd.md).
"""
