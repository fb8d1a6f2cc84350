"""Replicated objects: methods marked ``@command`` replicate themselves when called.

This is the high-level user API, goraft's ``RegisterCommand`` made Pythonic::

    class Counter(Replicated):
        def __init__(self) -> None:
            super().__init__()
            self.value = 0

        @command
        def add(self, n: int) -> int:
            self.value += n
            return self.value

        @query
        def get(self) -> int:
            return self.value

    counter = Counter()
    node = Node(..., state_machine=counter)   # the node calls counter.attach(node)
    await counter.add(5)                      # -> 5, once the entry is applied here
    await counter.get()                       # linearizable read, not replicated

Theory of operation
-------------------

Class creation registers every ``@command`` by name in ``cls.commands``
(and every ``@query`` in ``cls.queries``).  Calling a command on an attached
instance does *not* run its body.  It binds the arguments to the method's
signature, encodes them with msgspec (msgpack) and validates them against the
type hints exactly as ``apply`` will decode them, so a bad call raises
:class:`BadArgumentsError` *before* anything is proposed.  It then returns a
coroutine that proposes the encoded :ref:`envelope <envelope>` with
``stamp_time=True`` and resolves with what the body returned once the entry
is applied on this node.

``apply`` runs on every replica: it decodes the envelope, looks the command
up by name, decodes and validates the arguments, and only then runs the body
with :attr:`Replicated.leader_time` and :attr:`Replicated.log_index` set.  An
unknown command or bad arguments raise (:class:`UnknownCommandError`,
:class:`BadArgumentsError`) before the body runs, so the state is unchanged and
the runtime fails only that proposal.  A body that raises must do so before
it mutates anything (validate first, then change).

Bodies must be deterministic: use ``self.leader_time`` instead of
``time.time()``, never global ``random``, and nothing that differs between
machines.  Return values are never encoded: the proposer gets the Python
object its own replica's body returned.

.. _envelope:

Envelope (one log entry per command call)::

    offset 0   float64 little-endian  leader time, zero when proposed; the leader
                                      overwrites it (Proposer stamp_time=True)
    offset 8   u8                     envelope version, ENVELOPE_VERSION (1)
    offset 9   msgpack                [command_name: str, [arg0, arg1, ...]]

Arguments are a msgpack array of every parameter in signature order
(keyword-only ones included), defaults filled in by the caller.  A decoder
accepts fewer trailing arguments when their parameters have defaults, so a
command may grow new trailing parameters with defaults; never reorder,
rename (the command, ``@command(name=...)`` pins it) or retype existing ones.

Snapshots: ``snapshot()`` captures the state fields with ``copy.copy`` (a
shallow copy: containers are copied, their values are shared and must never
be mutated in place; replace them instead).  ``chunks()`` encodes the
capture, possibly in a worker thread, as::

    "LRSM" | u8 version (1) | record* | u64 0
    record = u64 little-endian length | msgpack payload
    first record: {"type": type_name, "index": int, "leader_time": float, "fields": n}
    then n records: [field_name, value]

A stream never holds more than one encoded field at a time.

Where each part lives (this module re-exports all of them, so
``from liferaft.runtime.commands import ...`` keeps working):

* :mod:`liferaft.runtime.descriptors`: ``@command``, ``@query`` and what they
  make (:class:`Command`, :class:`BoundCommand`, :class:`Query`,
  :class:`BoundQuery`);
* :mod:`liferaft.runtime.replicated`: the :class:`Replicated` base class;
* :mod:`liferaft.runtime.envelope`: the bytes of a command entry;
* :mod:`liferaft.runtime.snapshot_format`: the bytes of a snapshot;
* :mod:`liferaft.runtime.errors`: :class:`CommandError` and its subclasses.
"""

from __future__ import annotations

from .descriptors import BoundCommand, BoundQuery, Command, Query, command, query
from .envelope import ENVELOPE_VERSION, Envelope, decode_envelope, encode_envelope
from .errors import (
    BadArguments,
    BadArgumentsError,
    BadEnvelope,
    BadEnvelopeError,
    CommandError,
    NotAttached,
    NotAttachedError,
    UnknownCommand,
    UnknownCommandError,
)
from .replicated import Replicated
from .snapshot_format import SNAPSHOT_VERSION, CapturedSnapshot, SnapshotHeader

# The private names of the single module this was, for code that reached in;
# they go with the old error names in 0.2.0.
_SnapshotHeader = SnapshotHeader
_CapturedSnapshot = CapturedSnapshot
_encode_envelope = encode_envelope

__all__ = [
    "ENVELOPE_VERSION",
    "SNAPSHOT_VERSION",
    "BadArguments",
    "BadArgumentsError",
    "BadEnvelope",
    "BadEnvelopeError",
    "BoundCommand",
    "BoundQuery",
    "Command",
    "CommandError",
    "Envelope",
    "NotAttached",
    "NotAttachedError",
    "Query",
    "Replicated",
    "UnknownCommand",
    "UnknownCommandError",
    "command",
    "decode_envelope",
    "query",
]
