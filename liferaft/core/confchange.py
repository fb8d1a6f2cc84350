"""Membership changes: joint consensus, simple changes and learners.

Theory of operation
-------------------
A :class:`ConfChange` is a list of single changes (add voter, add learner,
remove) proposed as one log entry.  :func:`apply_conf_change` maps the
current :class:`ConfState` and a change to the next ``ConfState``.  It never
mutates its input: callers compute the new configuration on a copy and swap
it in only if it is valid.

Three transitions exist (thesis §4.3 and etcd's ConfChangeV2):

* *simple*: at most one voter changes.  Any two majorities of configurations
  that differ by one voter overlap, so this is safe as long as changes are
  applied one at a time (thesis §4.1); the leader enforces that.
* *enter joint*: the new voter set becomes ``voters`` and the old one moves to
  ``voters_outgoing``; decisions then need a majority of both.  With
  ``auto_leave`` the leader proposes the leave entry itself once the enter
  entry is applied.
* *leave joint*: an empty change; drops the outgoing half and turns demoted
  voters (``learners_next``) into learners.

Invariants (checked by :func:`check_invariants` after every transition):
learners never overlap voters of either half, and ``learners_next`` is a
subset of the outgoing voters.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass

from .errors import ConfChangeError
from .messages import ConfState, NodeId


class ChangeType(enum.IntEnum):
    ADD_VOTER = 0
    ADD_LEARNER = 1
    REMOVE_NODE = 2


class Transition(enum.IntEnum):
    AUTO = 0
    """Simple if at most one voter changes, otherwise joint with auto-leave."""
    JOINT = 1
    """Always joint; the leader leaves the joint state automatically."""
    JOINT_EXPLICIT = 2
    """Always joint; the application proposes the (empty) leave change itself."""


@dataclass(frozen=True, slots=True)
class ConfChangeSingle:
    type: ChangeType
    node_id: NodeId


@dataclass(frozen=True, slots=True)
class ConfChange:
    """A membership change.  No changes at all means "leave the joint state"."""

    changes: tuple[ConfChangeSingle, ...] = ()
    transition: Transition = Transition.AUTO
    context: bytes = b""

    @property
    def leave_joint(self) -> bool:
        return not self.changes

    def encode(self) -> bytes:
        """Stable, stdlib-only encoding used as the entry payload."""
        doc = {
            "c": [[int(c.type), c.node_id] for c in self.changes],
            "t": int(self.transition),
            "x": self.context.hex(),
        }
        return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes) -> ConfChange:
        """Inverse of :meth:`encode`; raises ConfChangeError on malformed input."""
        try:
            doc = json.loads(data)
            changes = tuple(
                ConfChangeSingle(ChangeType(int(t)), str(n)) for t, n in doc["c"]
            )
            return cls(changes, Transition(int(doc["t"])), bytes.fromhex(doc["x"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfChangeError(f"malformed conf change entry: {exc}") from exc


def add_voter(node_id: NodeId) -> ConfChangeSingle:
    return ConfChangeSingle(ChangeType.ADD_VOTER, node_id)


def add_learner(node_id: NodeId) -> ConfChangeSingle:
    return ConfChangeSingle(ChangeType.ADD_LEARNER, node_id)


def remove_node(node_id: NodeId) -> ConfChangeSingle:
    return ConfChangeSingle(ChangeType.REMOVE_NODE, node_id)


def is_joint(cs: ConfState) -> bool:
    return bool(cs.voters_outgoing)


def check_invariants(cs: ConfState) -> None:
    """Raise ConfChangeError if ``cs`` is not a well-formed configuration."""
    all_voters = cs.voters | cs.voters_outgoing
    if cs.learners & all_voters:
        raise ConfChangeError(f"learners {sorted(cs.learners & all_voters)} are also voters")
    # learners_next within the outgoing voters also keeps it apart from learners.
    if not cs.learners_next <= cs.voters_outgoing:
        raise ConfChangeError("learners_next must be outgoing voters")
    if cs.auto_leave and not is_joint(cs):
        raise ConfChangeError("auto_leave set outside a joint configuration")


def _apply_singles(
    cs: ConfState, changes: tuple[ConfChangeSingle, ...]
) -> tuple[set[NodeId], set[NodeId], set[NodeId]]:
    voters, learners, learners_next = set(cs.voters), set(cs.learners), set(cs.learners_next)
    for c in changes:
        nid = c.node_id
        if not nid:
            raise ConfChangeError("empty node id in conf change")
        if c.type is ChangeType.ADD_VOTER:
            learners.discard(nid)
            learners_next.discard(nid)
            voters.add(nid)
        elif c.type is ChangeType.ADD_LEARNER:
            voters.discard(nid)
            if nid in cs.voters_outgoing:
                # Still a voter in the outgoing half: becomes a learner on leave.
                learners_next.add(nid)
            else:
                learners.add(nid)
        else:
            voters.discard(nid)
            learners.discard(nid)
            learners_next.discard(nid)
    return voters, learners, learners_next


def apply_conf_change(cs: ConfState, cc: ConfChange) -> ConfState:
    """Return the configuration that follows ``cs`` after ``cc``; never mutates."""
    if cc.leave_joint:
        if not is_joint(cs):
            raise ConfChangeError("cannot leave a joint configuration: not in one")
        out = ConfState(
            voters=cs.voters,
            learners=cs.learners | cs.learners_next,
        )
        check_invariants(out)
        return out
    if is_joint(cs):
        raise ConfChangeError("a joint configuration must be left before the next change")
    voters, learners, learners_next = _apply_singles(cs, cc.changes)
    if not voters:
        raise ConfChangeError("the change would remove every voter")
    simple = cc.transition is Transition.AUTO and len(voters ^ cs.voters) <= 1
    if simple:
        out = ConfState(voters=frozenset(voters), learners=frozenset(learners))
    else:
        if not cs.voters:
            raise ConfChangeError("cannot enter a joint configuration from zero voters")
        # Re-apply with the outgoing half in place so demotions land in learners_next.
        base = ConfState(voters=cs.voters, learners=cs.learners, voters_outgoing=cs.voters)
        voters, learners, learners_next = _apply_singles(base, cc.changes)
        out = ConfState(
            voters=frozenset(voters),
            learners=frozenset(learners),
            voters_outgoing=cs.voters,
            learners_next=frozenset(learners_next),
            auto_leave=cc.transition is not Transition.JOINT_EXPLICIT,
        )
    check_invariants(out)
    return out
