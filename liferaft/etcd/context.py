"""What every etcd handler works with: the node's KV service, its etcd
ids, and the ResponseHeader every answer carries."""

from __future__ import annotations

from dataclasses import dataclass, field

from liferaft.kv.service import KVService

from . import ids
from .proto import rpc_pb2 as pb


@dataclass
class EtcdContext:
    """One node's etcd front: ``service`` under every call, the names its
    ids derive from, and the auth secret (None: no auth, as etcd before
    ``auth enable``).  The gRPC server and the JSON gateway share one."""

    service: KVService
    cluster: str
    token: str | None = None
    #: The ids every answer's header carries: fixed for the node's life,
    #: hashed once rather than per response.
    cluster_id: int = field(init=False)
    member_id: int = field(init=False)

    def __post_init__(self) -> None:
        self.cluster_id = ids.cluster_id(self.cluster)
        self.member_id = ids.member_id(self.cluster, self.service.node.id)

    @property
    def node_id(self) -> str:
        return self.service.node.id

    def member_of(self, node_id: str) -> int:
        """``node_id``'s etcd member id."""
        return ids.member_id(self.cluster, node_id)

    def node_of(self, mid: int) -> str | None:
        """The member (node id) with etcd member id ``mid``; None if none.
        Derived from the membership each time: a cache would remember
        removed members."""
        return ids.node_of(self.cluster, mid, self.service.node.members)

    def term(self) -> int:
        rn = self.service.node.rn
        return rn.term if rn is not None else 0

    def header(self, revision: int | None = None) -> pb.ResponseHeader:
        """A ResponseHeader at ``revision`` (None: the store revision this
        node has applied)."""
        rev = self.service.store_revision() if revision is None else revision
        return pb.ResponseHeader(
            cluster_id=self.cluster_id,
            member_id=self.member_id,
            revision=rev,
            raft_term=self.term(),
        )
