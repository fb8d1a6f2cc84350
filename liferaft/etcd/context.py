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
    #: Member id -> node id, for the members seen so far (ids are hashes).
    _names: dict[int, str] = field(default_factory=dict)

    @property
    def node_id(self) -> str:
        return self.service.node.id

    @property
    def cluster_id(self) -> int:
        return ids.cluster_id(self.cluster)

    @property
    def member_id(self) -> int:
        return ids.member_id(self.cluster, self.node_id)

    def member_of(self, node_id: str) -> int:
        """``node_id``'s etcd member id."""
        mid = ids.member_id(self.cluster, node_id)
        self._names[mid] = node_id
        return mid

    def node_of(self, mid: int) -> str | None:
        """The member (node id) with etcd member id ``mid``; None if none."""
        if mid in self._names:
            return self._names[mid]
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
