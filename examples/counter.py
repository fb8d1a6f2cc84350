"""A replicated counter on three nodes: the README's library example, runnable.

All three nodes run in this one process for the example; in real life each
node is its own process or machine (see config_service.py).  Needs only
``pip install liferaft`` (no extras)::

    python examples/counter.py            # peers on 127.0.0.1:7101-7103
    python examples/counter.py 9100       # peers on 127.0.0.1:9101-9103

It prints 5, then 7.
"""

import argparse
import asyncio
import tempfile

from liferaft.runtime import Node, NodeConfig, Replicated, command
from liferaft.transport import TcpTransport


class Counter(Replicated):
    def __init__(self) -> None:
        super().__init__()
        self.value = 0

    @command                      # replicated: runs on every node, in log order
    def add(self, n: int) -> int:
        self.value += n
        return self.value


async def main(base_port: int = 7100) -> None:
    peers = {f"n{i}": f"127.0.0.1:{base_port + i}" for i in (1, 2, 3)}
    with tempfile.TemporaryDirectory() as data:
        counters = {nid: Counter() for nid in peers}
        nodes = [
            Node(NodeConfig(id=nid, cluster_id="demo"), counters[nid],  # the ids, given once
                 TcpTransport(listen_addr=addr), data_dir=f"{data}/{nid}", initial_members=peers)
            for nid, addr in peers.items()
        ]
        for node in nodes:
            await node.start()
        print(await counters["n2"].add(5))  # 5: any node works, followers forward to the leader
        print(await counters["n3"].add(2))  # 7
        for node in nodes:
            await node.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Three replicated counters in one process.")
    parser.add_argument("base_port", nargs="?", type=int, default=7100,
                        help="peers listen on 127.0.0.1:BASE_PORT+1..+3 (default 7100)")
    asyncio.run(main(parser.parse_args().base_port))
