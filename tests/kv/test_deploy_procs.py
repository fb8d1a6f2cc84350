"""Three real ``liferaft serve`` processes deployed as in a container
(docs/deploy.md): they listen on 127.0.0.1 and advertise DNS names
(``localhost:PORT``) for peers and clients, so what the address book,
``/v1/status`` and the member list show is the advertised name; and SIGTERM
on the leader hands leadership over before it stops (the new leader comes
from the transfer, one term up, and the old leader logs it).  One cluster
for the module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from liferaft.harness.ports import free_port
from liferaft.harness.serve import ServeCluster

from .procs import FAST_TIMING, http, wait_for


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeCluster]:
    root: Path = tmp_path_factory.mktemp("deploy")
    with ServeCluster(root, flags=FAST_TIMING, env=None) as c:
        for i in (1, 2, 3):
            peer, client = free_port(), free_port()
            # --peer-addr/--client-addr (the aliases) give the advertised
            # names; the listen flags override their half.
            c.add(
                f"n{i}",
                peer=f"localhost:{peer}",
                client=f"localhost:{client}",
                flags=[
                    "--listen-peer-addr", f"127.0.0.1:{peer}",
                    "--listen-client-addr", f"127.0.0.1:{client}",
                ],
            )  # fmt: skip
        c.start_all()
        c.wait_ready(timeout=60)
        yield c


def status(c: ServeCluster, nid: str) -> dict[str, object] | None:
    code, body = http(c.nodes[nid].client, "GET", "/v1/status", timeout=2.0)
    return body if code == 200 and isinstance(body, dict) else None


def leader_of(c: ServeCluster, among: list[str]) -> tuple[str, int] | None:
    """(leader, term) once every node in ``among`` agrees on a leader."""
    seen = {(s["leader"], s["term"]) for n in among if (s := status(c, n)) is not None}
    if len(seen) == 1:
        leader, term = seen.pop()
        if isinstance(leader, str) and isinstance(term, int):
            return leader, term
    return None


def test_clients_and_members_see_the_advertised_names(cluster: ServeCluster) -> None:
    leader, _ = wait_for(lambda: leader_of(cluster, list(cluster.nodes)), 30, "a leader")
    st = wait_for(lambda: status(cluster, "n1"), 10, "n1's status")
    assert st["leader_client_addr"] == cluster.nodes[leader].client
    assert str(st["leader_client_addr"]).startswith("localhost:")
    # Each node records its own advertised client address once it is a member.
    want = {n.id: (n.peer, n.client) for n in cluster.nodes.values()}

    def members() -> dict[str, tuple[str, str]] | None:
        code, body = http(cluster.nodes["n2"].client, "GET", "/v1/members")
        got = {m["id"]: (m["peer_addr"], m["client_addr"]) for m in body["members"]}
        return got if code == 200 and got == want else None

    wait_for(members, 20, "every member listed by its advertised names")


def test_sigterm_on_the_leader_hands_leadership_over_first(cluster: ServeCluster) -> None:
    nodes = list(cluster.nodes)
    old, term = wait_for(lambda: leader_of(cluster, nodes), 30, "a leader")
    assert cluster.stop(old, grace=10.0) == 0
    rest = [n for n in nodes if n != old]
    new, new_term = wait_for(lambda: leader_of(cluster, rest), 30, "a new leader")
    log = cluster.nodes[old].log.read_text()
    assert f"leadership transferred to {new}" in log, cluster.nodes[old].log_tail(20)
    # A transfer's TimeoutNow starts one election at once: exactly one term up
    # (an election after a timeout would also do that, but not be logged).
    assert new_term == term + 1
