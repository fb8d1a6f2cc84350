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
:class:`BadArguments` *before* anything is proposed.  It then returns a
coroutine that proposes the encoded :ref:`envelope <envelope>` with
``stamp_time=True`` and resolves with what the body returned once the entry
is applied on this node.

``apply`` runs on every replica: it decodes the envelope, looks the command
up by name, decodes and validates the arguments, and only then runs the body
with :attr:`Replicated.leader_time` and :attr:`Replicated.log_index` set.  An
unknown command or bad arguments raise (:class:`UnknownCommand`,
:class:`BadArguments`) before the body runs, so the state is unchanged and
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
"""

from __future__ import annotations

import copy
import functools
import inspect
import math
import struct
import typing
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Concatenate, Generic, NamedTuple, ParamSpec, TypeVar, overload

import msgspec

from .statemachine import (
    DEFAULT_CHUNK_SIZE,
    ChunkReader,
    Proposer,
    SnapshotFormatError,
    StateSnapshot,
    rechunk,
)

__all__ = [
    "ENVELOPE_VERSION",
    "SNAPSHOT_VERSION",
    "BadArguments",
    "BadEnvelope",
    "BoundCommand",
    "BoundQuery",
    "Command",
    "CommandError",
    "Envelope",
    "NotAttached",
    "Query",
    "Replicated",
    "UnknownCommand",
    "command",
    "decode_envelope",
    "query",
]

S = TypeVar("S", bound="Replicated")
P = ParamSpec("P")
R = TypeVar("R")

#: Version byte of the command envelope (offset 8 of every entry).
ENVELOPE_VERSION = 1
#: Version byte of the snapshot stream (after the ``"LRSM"`` magic).
SNAPSHOT_VERSION = 1

_STAMP = struct.Struct("<d")  # offset 0: leader time, written by the leader
_PREFIX = _STAMP.size + 1  # leader time + version byte
_SNAPSHOT_MAGIC = b"LRSM"
_LEN = struct.Struct("<Q")

# What msgspec raises for a value it cannot encode (a type, an int past 64 bits, a cycle).
_ENCODE_ERRORS = (TypeError, ValueError, OverflowError, RecursionError, msgspec.EncodeError)

_BODY_DECODER = msgspec.msgpack.Decoder(tuple[str, list[msgspec.Raw]])
_RECORD_DECODER = msgspec.msgpack.Decoder(tuple[str, msgspec.Raw])


# --- errors -----------------------------------------------------------------


class CommandError(Exception):
    """Base class of the errors of replicated commands and queries."""


class BadArguments(CommandError, TypeError):
    """Arguments do not match the command's signature or type hints.

    Raised by the call, before anything is proposed, and by ``apply`` for an
    entry whose arguments fail validation (the state is then unchanged).
    """


class UnknownCommand(CommandError, LookupError):
    """An entry names a command this class does not register.

    ``apply`` raises it before touching the state, e.g. when a newer
    version of the class proposed a command this replica does not know yet.
    """

    def __init__(self, message: str, name: str) -> None:
        super().__init__(message)
        self.name = name


class BadEnvelope(CommandError, ValueError):
    """An entry is not a command envelope (too short, bad version, bad msgpack)."""


class NotAttached(CommandError, RuntimeError):
    """A command or query was called on an instance no node has attached to."""


# --- envelope ---------------------------------------------------------------


class Envelope(NamedTuple):
    """A decoded command entry.  ``args`` are still-encoded msgpack values."""

    leader_time: float
    command: str
    args: list[msgspec.Raw]


def _encode_envelope(body: bytes) -> bytes:
    return bytes(_STAMP.size) + bytes((ENVELOPE_VERSION,)) + body


def decode_envelope(data: bytes) -> Envelope:
    """Split an entry into leader time, command name and encoded arguments.

    Raises :class:`BadEnvelope` for anything that is not a version-1 envelope.
    """
    if len(data) < _PREFIX:
        raise BadEnvelope(f"entry of {len(data)} bytes is too short for a command envelope")
    version = data[_STAMP.size]
    if version != ENVELOPE_VERSION:
        raise BadEnvelope(
            f"unsupported command envelope version {version} (this replica reads "
            f"version {ENVELOPE_VERSION})"
        )
    (leader_time,) = _STAMP.unpack_from(data, 0)
    if not math.isfinite(leader_time):
        raise BadEnvelope(f"leader time {leader_time!r} is not a finite number")
    try:
        name, args = _BODY_DECODER.decode(memoryview(data)[_PREFIX:])
    except msgspec.DecodeError as e:
        raise BadEnvelope(f"malformed command envelope: {e}") from None
    return Envelope(leader_time, name, args)


# --- commands and queries ---------------------------------------------------


@dataclass(frozen=True)
class _Param:
    name: str
    kind: inspect._ParameterKind
    default: Any  # inspect.Parameter.empty when required
    decoder: msgspec.msgpack.Decoder[Any]


def _signature_without_self(fn: Callable[..., Any], what: str) -> inspect.Signature:
    sig = inspect.signature(fn)
    params = list(sig.parameters.values())
    if not params or params[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        raise TypeError(f"@{what} {fn.__qualname__} must be a method taking self first")
    for p in params[1:]:
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise TypeError(
                f"@{what} {fn.__qualname__}: *{p.name} parameters are not supported; "
                "declare every argument so it can be encoded and validated"
            )
    return sig.replace(parameters=params[1:])


class Command(Generic[S, P, R]):
    """A replicated method, made by :func:`command`.

    On the class (``Counter.add``) it is this descriptor: ``Counter.add.name``
    is the registered name, ``Counter.add.local(counter, 5)`` runs the body
    directly (for tests), ``Counter.add.encode(5)`` builds the entry bytes.
    On an instance (``counter.add``) it is a :class:`BoundCommand`.
    """

    def __init__(
        self,
        fn: Callable[Concatenate[S, P], R],
        *,
        name: str | None = None,
        timeout: float | None = None,
    ) -> None:
        if name is not None and (not isinstance(name, str) or not name):
            raise TypeError(f"@command name must be a non-empty str, not {name!r}")
        self.fn = fn
        self.signature = _signature_without_self(fn, "command")
        self.name: str = name if name is not None else fn.__name__
        self._explicit_name = name is not None
        self.qualname: str = fn.__qualname__
        self.timeout = timeout
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn
        self._params: tuple[_Param, ...] | None = None

    def __set_name__(self, owner: type, attr: str) -> None:
        if not self._explicit_name:
            self.name = attr
        self.qualname = f"{owner.__qualname__}.{attr}"

    def __repr__(self) -> str:
        return f"<command {self.name!r} of {self.qualname}>"

    @overload
    def __get__(self, instance: None, owner: type[Any]) -> Command[S, P, R]: ...
    @overload
    def __get__(self, instance: S, owner: type[Any]) -> BoundCommand[P, R]: ...
    def __get__(
        self, instance: S | None, owner: type[Any]
    ) -> Command[S, P, R] | BoundCommand[P, R]:
        if instance is None:
            return self
        return BoundCommand(self, instance, self.timeout)

    @property
    def params(self) -> tuple[_Param, ...]:
        """The parameters with their decoders; type hints are resolved on first use."""
        if self._params is None:
            try:
                hints = typing.get_type_hints(self.fn, include_extras=True)
            except Exception as e:  # NameError, or anything a bad annotation raises
                raise TypeError(f"@command {self.qualname}: cannot resolve type hints: {e}") from e
            params = []
            for p in self.signature.parameters.values():
                hint = hints.get(p.name, Any)
                try:
                    decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(hint)
                except TypeError as e:
                    raise TypeError(
                        f"@command {self.qualname}: parameter {p.name!r} has a type msgspec "
                        f"cannot encode: {e}"
                    ) from e
                params.append(_Param(p.name, p.kind, p.default, decoder))
            self._params = tuple(params)
        return self._params

    def encode(self, /, *args: P.args, **kwargs: P.kwargs) -> bytes:
        """The entry bytes for a call with these arguments (leader time zero).

        Raises :class:`BadArguments` if the arguments do not bind to the
        signature, cannot be encoded, or would not decode as the type hints
        say, exactly as ``apply`` would decode them.
        """
        params = self.params
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as e:
            raise BadArguments(f"{self.qualname}(): {e}") from None
        bound.apply_defaults()
        values = [bound.arguments[p.name] for p in params]
        try:
            body = msgspec.msgpack.encode((self.name, values))
        except _ENCODE_ERRORS as e:
            culprit = ""
            for p, v in zip(params, values, strict=True):
                try:
                    msgspec.msgpack.encode(v)
                except _ENCODE_ERRORS:
                    culprit = f"argument {p.name!r} "
                    break
            raise BadArguments(f"{self.qualname}(): {culprit}cannot be encoded: {e}") from None
        _, raws = _BODY_DECODER.decode(body)
        self.decode_args(raws)  # validate exactly as every replica will
        return _encode_envelope(body)

    def decode_args(self, raws: list[msgspec.Raw]) -> tuple[list[Any], dict[str, Any]]:
        """Decode and validate encoded arguments into ``(args, kwargs)`` for the body."""
        params = self.params
        if len(raws) > len(params):
            raise BadArguments(
                f"{self.qualname}() takes {len(params)} arguments but the entry carries {len(raws)}"
            )
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for i, p in enumerate(params):
            if i < len(raws):
                try:
                    value = p.decoder.decode(raws[i])
                except msgspec.DecodeError as e:  # ValidationError is a DecodeError
                    raise BadArguments(f"{self.qualname}(): argument {p.name!r}: {e}") from None
            elif p.default is not inspect.Parameter.empty:
                value = p.default
            else:
                raise BadArguments(f"{self.qualname}(): missing argument {p.name!r}")
            if p.kind is inspect.Parameter.KEYWORD_ONLY:
                kwargs[p.name] = value
            else:
                args.append(value)
        return args, kwargs

    def local(self, instance: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the body directly on ``instance``: nothing is encoded or replicated."""
        return self.fn(instance, *args, **kwargs)


class BoundCommand(Generic[P, R]):
    """A command bound to an instance: calling it proposes and returns a coroutine."""

    __slots__ = ("_command", "_instance", "_timeout")

    def __init__(
        self, command: Command[Any, P, R], instance: Replicated, timeout: float | None
    ) -> None:
        self._command = command
        self._instance = instance
        self._timeout = timeout

    @property
    def name(self) -> str:
        """The registered command name."""
        return self._command.name

    def __repr__(self) -> str:
        return f"<bound command {self._command.qualname} of {self._instance!r}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
        """Validate and encode now; return a coroutine that proposes the entry.

        Raises :class:`BadArguments` or :class:`NotAttached` at once, before
        anything is proposed.  The coroutine resolves with the body's return
        value once the entry is applied on this node, and raises what the body
        raised, or the runtime's ``NotLeader``, ``Timeout`` or ``Stopped``.
        """
        proposer = self._instance._require_proposer(self._command.qualname)
        data = self._command.encode(*args, **kwargs)
        return self._propose(proposer, data)

    async def _propose(self, proposer: Proposer, data: bytes) -> R:
        result: R = await proposer.propose(data, stamp_time=True, timeout=self._timeout)
        return result

    def with_timeout(self, timeout: float | None) -> BoundCommand[P, R]:
        """The same command with a proposal timeout: ``await c.add.with_timeout(2)(5)``."""
        return BoundCommand(self._command, self._instance, timeout)

    def local(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the body directly on the instance: nothing is replicated."""
        return self._command.fn(self._instance, *args, **kwargs)


class Query(Generic[S, P, R]):
    """A read-only method, made by :func:`query`; run through ``Proposer.read``.

    Queries are not replicated: they run on this node's state once a read
    index at the requested consistency is applied.  They must not mutate.
    """

    def __init__(self, fn: Callable[Concatenate[S, P], R], *, consistency: str) -> None:
        self.fn = fn
        self.signature = _signature_without_self(fn, "query")
        self.name: str = fn.__name__
        self.qualname: str = fn.__qualname__
        self.consistency = consistency
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __set_name__(self, owner: type, attr: str) -> None:
        self.name = attr
        self.qualname = f"{owner.__qualname__}.{attr}"

    def __repr__(self) -> str:
        return f"<query {self.qualname}>"

    @overload
    def __get__(self, instance: None, owner: type[Any]) -> Query[S, P, R]: ...
    @overload
    def __get__(self, instance: S, owner: type[Any]) -> BoundQuery[P, R]: ...
    def __get__(self, instance: S | None, owner: type[Any]) -> Query[S, P, R] | BoundQuery[P, R]:
        if instance is None:
            return self
        return BoundQuery(self, instance, self.consistency)

    def local(self, instance: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the body directly on ``instance``, without a read index."""
        return self.fn(instance, *args, **kwargs)


class BoundQuery(Generic[P, R]):
    """A query bound to an instance: calling it returns a coroutine that reads."""

    __slots__ = ("_consistency", "_instance", "_query")

    def __init__(self, query: Query[Any, P, R], instance: Replicated, consistency: str) -> None:
        self._query = query
        self._instance = instance
        self._consistency = consistency

    def __repr__(self) -> str:
        return f"<bound query {self._query.qualname} of {self._instance!r}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
        """Check the arguments now; return a coroutine resolving with the query's result."""
        proposer = self._instance._require_proposer(self._query.qualname)
        try:
            self._query.signature.bind(*args, **kwargs)
        except TypeError as e:
            raise BadArguments(f"{self._query.qualname}(): {e}") from None
        fn = functools.partial(self._query.fn, self._instance, *args, **kwargs)
        return proposer.read(fn, consistency=self._consistency)

    def with_consistency(self, consistency: str) -> BoundQuery[P, R]:
        """The same query at another consistency, e.g. ``"lease"`` or ``"stale"``."""
        return BoundQuery(self._query, self._instance, consistency)

    def local(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the body directly on this node's state, without a read index."""
        return self._query.fn(self._instance, *args, **kwargs)


@overload
def command(fn: Callable[Concatenate[S, P], R], /) -> Command[S, P, R]: ...
@overload
def command(
    *, name: str | None = None, timeout: float | None = None
) -> Callable[[Callable[Concatenate[S, P], R]], Command[S, P, R]]: ...
def command(
    fn: Callable[Concatenate[S, P], R] | None = None,
    /,
    *,
    name: str | None = None,
    timeout: float | None = None,
) -> Command[S, P, R] | Callable[[Callable[Concatenate[S, P], R]], Command[S, P, R]]:
    """Mark a method of a :class:`Replicated` subclass as a replicated command.

    ``name`` pins the registered name (default: the method name), so the
    method can be renamed without breaking logs already written.
    ``timeout`` is the default proposal timeout of its calls.
    """

    if name is not None and (not isinstance(name, str) or not name):
        raise TypeError(f"@command name must be a non-empty str, not {name!r}")

    def wrap(f: Callable[Concatenate[S, P], R]) -> Command[S, P, R]:
        return Command(f, name=name, timeout=timeout)

    return wrap if fn is None else wrap(fn)


@overload
def query(fn: Callable[Concatenate[S, P], R], /) -> Query[S, P, R]: ...
@overload
def query(
    *, consistency: str = "linearizable"
) -> Callable[[Callable[Concatenate[S, P], R]], Query[S, P, R]]: ...
def query(
    fn: Callable[Concatenate[S, P], R] | None = None,
    /,
    *,
    consistency: str = "linearizable",
) -> Query[S, P, R] | Callable[[Callable[Concatenate[S, P], R]], Query[S, P, R]]:
    """Mark a read-only method as a query, run through ``Proposer.read``.

    ``consistency`` is its default (``"linearizable"``; ``"lease"`` or
    ``"stale"`` where the runtime offers them).
    """

    def wrap(f: Callable[Concatenate[S, P], R]) -> Query[S, P, R]:
        return Query(f, consistency=consistency)

    return wrap if fn is None else wrap(fn)


# --- the base class ---------------------------------------------------------


class _SnapshotHeader(msgspec.Struct):
    type: str
    index: int
    leader_time: float
    fields: int


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
            raise NotAttached(
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

    def apply(self, index: int, data: bytes) -> Any:
        """Decode the command entry at ``index`` and run its body; return its result.

        Raises :class:`BadEnvelope`, :class:`UnknownCommand` or
        :class:`BadArguments` before the body runs (the state is unchanged),
        or whatever the body raises.
        """
        envelope = decode_envelope(data)
        cmd = type(self).commands.get(envelope.command)
        if cmd is None:
            known = ", ".join(sorted(type(self).commands)) or "none"
            raise UnknownCommand(
                f"entry {index}: {type(self).__qualname__} has no command "
                f"{envelope.command!r} (known: {known})",
                envelope.command,
            )
        args, kwargs = cmd.decode_args(envelope.args)
        self._leader_time = envelope.leader_time
        self._log_index = index
        return cmd.fn(self, *args, **kwargs)

    def snapshot(self) -> StateSnapshot:
        """Capture the state with :meth:`snapshot_state` (cheap); encode it later in chunks."""
        header = _SnapshotHeader(
            type=type(self).type_name,
            index=self._log_index,
            leader_time=self._leader_time,
            fields=0,
        )
        captured = dict(self.snapshot_state())
        header.fields = len(captured)
        return _CapturedSnapshot(header, captured, type(self).snapshot_chunk_size)

    def restore(self, chunks: Iterable[bytes]) -> None:
        """Replace the whole state with a snapshot stream made by :meth:`snapshot`.

        Everything is decoded and validated first: a malformed stream raises
        :class:`~liferaft.runtime.statemachine.SnapshotFormatError` and leaves
        the state as it was.  Then :meth:`restore_state` installs the values.
        """
        cls = type(self)
        reader = ChunkReader(chunks)
        magic = reader.read_exact(len(_SNAPSHOT_MAGIC) + 1)
        if magic[:-1] != _SNAPSHOT_MAGIC:
            raise SnapshotFormatError("not a liferaft Replicated snapshot (bad magic)")
        if magic[-1] != SNAPSHOT_VERSION:
            raise SnapshotFormatError(f"unsupported snapshot version {magic[-1]}")
        try:
            header = msgspec.msgpack.decode(_read_record(reader), type=_SnapshotHeader)
        except msgspec.DecodeError as e:
            raise SnapshotFormatError(f"bad snapshot header: {e}") from None
        if header.type != cls.type_name:
            raise SnapshotFormatError(
                f"snapshot is of {header.type!r}, cannot restore it into {cls.type_name!r}"
            )
        declared = cls._declared_state_names()
        values: dict[str, Any] = {}
        for _ in range(header.fields):
            record = _read_record(reader)
            try:
                name, raw = _RECORD_DECODER.decode(record)
            except msgspec.DecodeError as e:
                raise SnapshotFormatError(f"bad snapshot record: {e}") from None
            if name in values:
                raise SnapshotFormatError(f"snapshot holds field {name!r} twice")
            if declared is not None:
                if name not in declared:
                    raise SnapshotFormatError(
                        f"snapshot field {name!r} is not in {cls.__qualname__}.__state__"
                    )
            elif not _is_public_field(cls, name):
                raise SnapshotFormatError(f"snapshot field {name!r} is not a public attribute")
            try:
                values[name] = cls._state_decoder(name).decode(raw)
            except msgspec.DecodeError as e:
                raise SnapshotFormatError(f"snapshot field {name!r}: {e}") from None
        if _LEN.unpack(reader.read_exact(_LEN.size))[0] != 0:
            raise SnapshotFormatError(f"snapshot has more records than its {header.fields} fields")
        if not reader.at_eof():
            raise SnapshotFormatError(f"trailing bytes after the snapshot at byte {reader.offset}")
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


def _read_record(reader: ChunkReader) -> bytes:
    (length,) = _LEN.unpack(reader.read_exact(_LEN.size))
    if length == 0:
        raise SnapshotFormatError(f"snapshot ends early, at byte {reader.offset}")
    return reader.read_exact(length)


class _CapturedSnapshot:
    """The state captured by ``Replicated.snapshot``, encoded lazily by :meth:`chunks`."""

    def __init__(self, header: _SnapshotHeader, captured: dict[str, Any], chunk_size: int) -> None:
        self._header = header
        self._captured: dict[str, Any] | None = captured
        self._chunk_size = chunk_size

    def chunks(self) -> Iterator[bytes]:
        """Encode the capture one field at a time, regrouped into fixed-size chunks."""
        captured = self._captured
        if captured is None:
            raise RuntimeError("snapshot already released")
        return rechunk(self._pieces(captured), self._chunk_size)

    def _pieces(self, captured: dict[str, Any]) -> Iterator[bytes]:
        yield _SNAPSHOT_MAGIC + bytes((SNAPSHOT_VERSION,))
        header = msgspec.msgpack.encode(self._header)
        yield _LEN.pack(len(header))
        yield header
        for name, value in captured.items():
            try:
                payload = msgspec.msgpack.encode((name, value))
            except _ENCODE_ERRORS as e:
                raise TypeError(
                    f"{self._header.type}: state field {name!r} cannot be encoded ({e}); "
                    "declare __state__ or override snapshot_state()"
                ) from None
            yield _LEN.pack(len(payload))
            yield payload
        yield _LEN.pack(0)

    def release(self) -> None:
        """Drop the captured state."""
        self._captured = None
