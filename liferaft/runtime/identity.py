"""What a :class:`~liferaft.runtime.Node` is built from, settled once.

The node id and cluster id are given once, in ``NodeConfig`` (issue 14):
they used to be passed to the config and to the transport, and a mismatch
showed only as refused handshakes once the node ran.  And the state machine
may be one object or several (each then its own section of the log and the
snapshots: :mod:`liferaft.runtime.composite`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import cast

from liferaft.transport.base import Transport

from .composite import Composite
from .config import NodeConfig
from .errors import BadConfigError
from .statemachine import StateMachine

#: The cluster id of a node whose config and transport both leave it out.
DEFAULT_CLUSTER_ID = "liferaft"


def one_identity(config: NodeConfig, transport: Transport) -> NodeConfig:
    """The config with its cluster id settled, the transport told both ids.

    The ids used to be passed to ``NodeConfig`` and to the transport, and a
    mismatch showed only as handshake refusals once the node ran (issue 14).
    Now ``config`` is the source: a transport with a ``bind_node(id,
    cluster_id)`` method (``TcpTransport``) takes them from it; ids the
    transport already holds (the old call form, the memory transport's
    ``node_id``) must be the same, or :class:`BadConfigError` names both.  A
    config without ``cluster_id`` takes the transport's (so the old form
    ``TcpTransport(id, "demo", addr)`` keeps working), else
    :data:`DEFAULT_CLUSTER_ID`.
    """
    t_id = getattr(transport, "node_id", None)
    t_cluster = getattr(transport, "cluster_id", None)
    if t_id is not None and t_id != config.id:
        raise BadConfigError(
            f"the node id is given twice and differs: NodeConfig(id={config.id!r}), transport "
            f"{t_id!r}; give it once, in NodeConfig, and build the transport without it"
        )
    cluster = config.cluster_id
    if cluster is None:
        cluster = t_cluster if isinstance(t_cluster, str) and t_cluster else DEFAULT_CLUSTER_ID
    elif isinstance(t_cluster, str) and t_cluster != cluster:
        raise BadConfigError(
            f"the cluster id is given twice and differs: NodeConfig(cluster_id={cluster!r}), "
            f"transport {t_cluster!r}; give it once, in NodeConfig, and build the transport "
            "without it"
        )
    bind = getattr(transport, "bind_node", None)
    if callable(bind):
        try:
            bind(config.id, cluster)
        except ValueError as exc:
            raise BadConfigError(str(exc)) from None
    if cluster == config.cluster_id:
        return config
    return dataclasses.replace(config, cluster_id=cluster)


def one_state_machine(
    state_machine: StateMachine | Sequence[StateMachine] | Mapping[str, StateMachine],
) -> StateMachine:
    """One state machine for the node: ``state_machine`` itself, or a
    :class:`Composite` of a list (or a mapping of names) of several.
    :class:`BadConfigError` if it lacks a method the runtime calls."""
    sm: StateMachine
    if isinstance(state_machine, Mapping | list | tuple):
        sm = Composite(state_machine)
    else:
        sm = cast(StateMachine, state_machine)
    for attr in ("apply", "snapshot", "restore"):
        if not callable(getattr(sm, attr, None)):
            raise BadConfigError(f"state_machine has no {attr}() method")
    return sm
