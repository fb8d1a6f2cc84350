"""The descriptor pool that liferaft's etcd messages live in.

Not protobuf's default pool: an etcd client library in the same process
(aetcd, etcd3, ...) registers its own ``etcdserverpb.RangeRequest`` and the
like there, and a second, different definition of the same name is an error
when the later module is imported.  A pool of our own keeps both usable; the
bytes on the wire are the same either way.  scripts/gen-proto.sh points the
generated modules here.
"""

from __future__ import annotations

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
