"""Leadership transfer (thesis §3.10): hand the lead to another voter.

The loop runs the core's ``transfer_leader`` as one of its operations; this
waits, on the loop's leader changes, until the target has taken over.
"""

from __future__ import annotations

import logging

from liferaft.core import ConfChangeError, Role
from liferaft.core import NotLeaderError as CoreNotLeaderError

from .errors import BadConfigError, MembershipError, NodeTimeoutError, NotLeaderError
from .loop import RaftLoop

log = logging.getLogger("liferaft.runtime")


async def transfer_leadership(loop: RaftLoop, to: str | None, timeout: float | None) -> str:
    """Hand leadership to ``to`` (or the most caught-up voter); returns the
    new leader once it has taken over (``timeout`` defaults to two election
    timeouts)."""
    loop.check_running()
    rn = loop.rn
    node_id, config, clock = loop.id, loop.config, loop.clock
    assert rn is not None
    if rn.role is not Role.LEADER:
        raise NotLeaderError(f"{node_id} is not the leader", rn.leader)
    if to is None:
        st = rn.status()
        cands = [
            (p.match, nid)
            for nid, p in st.progress.items()
            if nid != node_id and nid in st.conf_state.voters
        ]
        if not cands:
            raise MembershipError("no other voter to transfer to")
        to = max(cands)[1]
    elif to != node_id and to not in rn.conf_state().voters:
        raise BadConfigError(f"cannot transfer leadership to {to!r}: it is not a voter")
    target = to

    def start() -> None:
        try:
            rn.transfer_leader(target)
        except (CoreNotLeaderError, ConfChangeError) as exc:
            log.info("node %s: transfer to %s refused: %s", node_id, target, exc)

    loop.call(start)
    t = timeout if timeout is not None else 2 * config.tick_interval * config.election_ticks
    deadline = clock.monotonic() + t
    while rn.leader != target:
        left = deadline - clock.monotonic()
        if left <= 0:
            raise NodeTimeoutError(f"leadership did not move to {target}")
        await loop.wait_leader_change(left)
    return target
