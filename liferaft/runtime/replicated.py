"""``Replicated``: the base class of replicated objects (a ``StateMachine``).

It registers the :mod:`~liferaft.runtime.descriptors` of a subclass at class
creation, applies command entries (:mod:`liferaft.runtime.envelope` reads
them), and captures and restores its state in the stream that
:mod:`liferaft.runtime.snapshot_format` writes and reads.  docs/statemachine.md
describes the API.
"""

from __future__ import annotations

import copy
import inspect
import typing
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, ClassVar

import msgspec

from .descriptors import Command, Query
from .envelope import decode_envelope
from .errors import NotAttachedError, UnknownCommandError
from .snapshot_format import CapturedSnapshot, SnapshotHeader, read_snapshot
from .statemachine import DEFAULT_CHUNK_SIZE, Proposer, SnapshotFormatError, StateSnapshot

__all__ = ["Replicated"]


class Replicated:
    """Base class of replicated objects; implements ``StateMachine``.

    Subclasses mark methods with :func:`command` (replicated mutations) and
    :func:`query` (reads).  The runtime calls :meth:`attach` with its node.

    Snapshot state.  ``__state__`` says what a snapshot holds:

    - a tuple of attribute names; each value is decoded with the class's
      annotation of that attribute (``Any`` if none), e.g.
      ``__state__ = ("_data",)`` with ``_data: dict[str, int]``;
    - a mapping of names to types, when the names are not attributes or the
      attribute's type is not encodable (override :meth:`snapshot_state` and
      :meth:`restore_state` then);
    - ``None`` (the default): every public instance attribute (name not
      starting with ``_``), typed by annotations where present.

    Values must be msgspec-encodable and never mutated in place (a snapshot
    shares them with the live state; see :meth:`snapshot_state`).
    """

    #: Commands by registered name; filled at class creation.
    commands: ClassVar[Mapping[str, Command[Any, ..., Any]]] = MappingProxyType({})
    #: Queries by attribute name; filled at class creation.
    queries: ClassVar[Mapping[str, Query[Any, ..., Any]]] = MappingProxyType({})
    #: What snapshots hold (see the class docstring).
    __state__: ClassVar[tuple[str, ...] | Mapping[str, Any] | None] = None
    #: Name written in snapshots and checked on restore; default: the class's qualname.
    type_name: ClassVar[str] = "Replicated"
    #: Size of the chunks a snapshot streams.
    snapshot_chunk_size: ClassVar[int] = DEFAULT_CHUNK_SIZE

    _state_types_cache: ClassVar[dict[str, Any] | None] = None
    _state_decoders: ClassVar[dict[str, msgspec.msgpack.Decoder[Any]]] = {}

    # Class-level defaults, so a subclass that forgets super().__init__() works.
    _proposer: Proposer | None = None
    _leader_time: float = 0.0
    _log_index: int = 0

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        namespace: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            namespace.update(vars(klass))
        reserved = set(vars(Replicated))
        commands: dict[str, Command[Any, ..., Any]] = {}
        queries: dict[str, Query[Any, ..., Any]] = {}
        for attr, obj in namespace.items():
            if isinstance(obj, Command | Query) and attr in reserved:
                raise TypeError(
                    f"{cls.__qualname__}.{attr}: the name belongs to Replicated itself; "
                    "rename the method (@command(name=...) can keep the wire name)"
                )
            if isinstance(obj, Command):
                if obj.name in commands:
                    raise TypeError(
                        f"{cls.__qualname__}: two commands are registered as {obj.name!r} "
                        f"({commands[obj.name].qualname} and {obj.qualname})"
                    )
                commands[obj.name] = obj
            elif isinstance(obj, Query):
                queries[attr] = obj
        cls.commands = MappingProxyType(commands)
        cls.queries = MappingProxyType(queries)
        if "type_name" not in cls.__dict__:
            cls.type_name = cls.__qualname__
        state = cls.__dict__.get("__state__")
        if state is not None:
            if isinstance(state, str) or not isinstance(state, tuple | list | Mapping):
                raise TypeError(
                    f"{cls.__qualname__}.__state__ must be a tuple of attribute names or a "
                    f"mapping of names to types, not {state!r}"
                )
            if not all(isinstance(n, str) and n for n in state):
                raise TypeError(f"{cls.__qualname__}.__state__ names must be non-empty strs")
            if not isinstance(state, Mapping):
                cls.__state__ = tuple(state)
        cls._state_types_cache = None
        cls._state_decoders = {}

    def __init__(self) -> None:
        self._proposer = None
        self._leader_time = 0.0
        self._log_index = 0

    # --- wiring ---

    def attach(self, proposer: Proposer) -> None:
        """Bind this object to the node that replicates it (called by the runtime).

        Resolves every command's type hints now, so a bad annotation fails at
        start-up rather than at the first call.
        """
        for cmd in type(self).commands.values():
            _ = cmd.params
        self._proposer = proposer

    @property
    def proposer(self) -> Proposer | None:
        """The attached node, or None."""
        return self._proposer

    def _require_proposer(self, what: str) -> Proposer:
        if self._proposer is None:
            raise NotAttachedError(
                f"{what}: this {type(self).__qualname__} is not attached to a node; pass it "
                "as Node(state_machine=...) or call attach() first"
            )
        return self._proposer

    @property
    def leader_time(self) -> float:
        """Leader wall-clock time (``time.time()`` seconds) of the entry being applied.

        The same on every replica, so a body may use it where it would
        otherwise read a clock.  Between applies it is the time of the last
        applied entry; 0.0 before any, or if the runtime did not stamp.
        It is not monotonic across leader changes (see docs/statemachine.md).
        """
        return self._leader_time

    @property
    def log_index(self) -> int:
        """Log index of the entry being applied (the last applied one between applies)."""
        return self._log_index

    # --- StateMachine ---

    def apply(self, index: int, data: bytes, *, leader_time: float = 0.0) -> Any:
        """Decode the command entry at ``index`` and run its body; return its result.

        The body's :attr:`leader_time` is the runtime's ``leader_time`` (the
        runtime envelope of a cluster of entry format 2) or, when that is 0.0
        (a cluster of format 1), the time the leader stamped into the command
        envelope itself.

        Raises :class:`BadEnvelopeError`, :class:`UnknownCommandError`
        or :class:`BadArgumentsError` before the body runs (the state is unchanged),
        or whatever the body raises.
        """
        envelope = decode_envelope(data)
        cmd = type(self).commands.get(envelope.command)
        if cmd is None:
            known = ", ".join(sorted(type(self).commands)) or "none"
            raise UnknownCommandError(
                f"entry {index}: {type(self).__qualname__} has no command "
                f"{envelope.command!r} (known: {known})",
                envelope.command,
            )
        args, kwargs = cmd.decode_args(envelope.args)
        self._leader_time = leader_time or envelope.leader_time
        self._log_index = index
        return cmd.fn(self, *args, **kwargs)

    def snapshot(self) -> StateSnapshot:
        """Capture the state with :meth:`snapshot_state` (cheap); encode it later in chunks."""
        captured = dict(self.snapshot_state())
        header = SnapshotHeader(
            type=type(self).type_name,
            index=self._log_index,
            leader_time=self._leader_time,
            fields=len(captured),
        )
        return CapturedSnapshot(header, captured, type(self).snapshot_chunk_size)

    def restore(self, chunks: Iterable[bytes]) -> None:
        """Replace the whole state with a snapshot stream made by :meth:`snapshot`.

        Everything is decoded and validated first: a malformed stream raises
        :class:`~liferaft.runtime.statemachine.SnapshotFormatError` and leaves
        the state as it was.  Then :meth:`restore_state` installs the values.
        """
        cls = type(self)
        declared = cls._declared_state_names()

        def field_decoder(name: str) -> msgspec.msgpack.Decoder[Any]:
            if declared is not None:
                if name not in declared:
                    raise SnapshotFormatError(
                        f"snapshot field {name!r} is not in {cls.__qualname__}.__state__"
                    )
            elif not _is_public_field(cls, name):
                raise SnapshotFormatError(f"snapshot field {name!r} is not a public attribute")
            return cls._state_decoder(name)

        header, values = read_snapshot(chunks, type_name=cls.type_name, field_decoder=field_decoder)
        if declared is not None and (missing := [n for n in declared if n not in values]):
            raise SnapshotFormatError(f"snapshot lacks fields {missing}")
        self.restore_state(values)
        self._leader_time = header.leader_time
        self._log_index = header.index

    # --- snapshot hooks ---

    def snapshot_state(self) -> Mapping[str, Any]:
        """The state to snapshot, captured now, on the loop; override to customize.

        Must be cheap and must not serialize: the default copies each field
        with ``copy.copy`` (a new dict, list, set... holding the same values).
        The result is encoded later, possibly in another thread, while
        commands keep running, so neither it nor the values it holds may be
        mutated afterwards; commands replace values, never mutate them.
        """
        return {name: copy.copy(getattr(self, name)) for name in self._state_names()}

    def restore_state(self, state: Mapping[str, Any]) -> None:
        """Install decoded snapshot fields; override with :meth:`snapshot_state`.

        The default sets each attribute; without ``__state__`` it also deletes
        public instance attributes the snapshot does not hold.
        """
        if type(self)._declared_state_names() is None:
            for name in [n for n in vars(self) if not n.startswith("_") and n not in state]:
                delattr(self, name)
        for name, value in state.items():
            setattr(self, name, value)

    def _state_names(self) -> tuple[str, ...]:
        declared = type(self)._declared_state_names()
        if declared is not None:
            return declared
        return tuple(sorted(n for n in vars(self) if not n.startswith("_")))

    @classmethod
    def _declared_state_names(cls) -> tuple[str, ...] | None:
        state = cls.__state__
        return None if state is None else tuple(state)

    @classmethod
    def _state_types(cls) -> dict[str, Any]:
        if cls._state_types_cache is None:
            state = cls.__state__
            if isinstance(state, Mapping):
                types = dict(state)
            else:
                try:
                    hints = typing.get_type_hints(cls, include_extras=True)
                except Exception as e:
                    raise TypeError(
                        f"{cls.__qualname__}: cannot resolve annotations ({e}); declare "
                        "__state__ as a mapping of names to types"
                    ) from e
                types = {n: t for n, t in hints.items() if typing.get_origin(t) is not ClassVar}
            cls._state_types_cache = types
        return cls._state_types_cache

    @classmethod
    def _state_decoder(cls, name: str) -> msgspec.msgpack.Decoder[Any]:
        decoder = cls._state_decoders.get(name)
        if decoder is None:
            decoder = msgspec.msgpack.Decoder(cls._state_types().get(name, Any))
            cls._state_decoders[name] = decoder
        return decoder


def _is_public_field(cls: type, name: str) -> bool:
    # Without __state__, a snapshot may only set public data attributes: never a
    # private one, and never shadow a method, command, property or other descriptor.
    if not name.isidentifier() or name.startswith("_"):
        return False
    on_class = inspect.getattr_static(cls, name, None)
    return not (callable(on_class) or hasattr(on_class, "__get__"))
