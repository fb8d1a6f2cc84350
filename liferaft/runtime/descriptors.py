"""Command and query descriptors: what ``@command`` and ``@query`` make.

A :class:`Command` sits on a :class:`~liferaft.runtime.commands.Replicated`
class; on an instance it is a :class:`BoundCommand`, whose call validates
and encodes the arguments exactly as every replica will decode them, then
proposes the entry (:mod:`liferaft.runtime.envelope` owns its bytes).
A :class:`Query` is the read-only counterpart, run through
``Proposer.read``.  docs/statemachine.md describes the whole API; the class
that registers these descriptors is ``Replicated``
(:mod:`liferaft.runtime.replicated`).
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar, overload

import msgspec

from .envelope import decode_body, encode_envelope
from .errors import ENCODE_ERRORS, BadArgumentsError
from .statemachine import Proposer

__all__ = ["BoundCommand", "BoundQuery", "Command", "Query", "command", "query"]


class Attachable(Protocol):
    """What a descriptor needs of the object it is bound to (``Replicated`` is one)."""

    def _require_proposer(self, what: str) -> Proposer: ...


S = TypeVar("S", bound=Attachable)
P = ParamSpec("P")
R = TypeVar("R")


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


class _Method(Generic[S, P, R]):
    """What a command and a query share: the method, its signature, its name."""

    def __init__(self, fn: Callable[Concatenate[S, P], R], what: str) -> None:
        self.fn = fn
        self.signature = _signature_without_self(fn, what)
        self.name: str = fn.__name__
        self.qualname: str = fn.__qualname__
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __set_name__(self, owner: type, attr: str) -> None:
        self.name = attr
        self.qualname = f"{owner.__qualname__}.{attr}"

    def local(self, instance: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the body directly on ``instance``: nothing is replicated or read-indexed."""
        return self.fn(instance, *args, **kwargs)


class Command(_Method[S, P, R]):
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
        super().__init__(fn, "command")
        self._explicit_name = name
        self.timeout = timeout
        self._params: tuple[_Param, ...] | None = None
        if name is not None:
            self.name = name

    def __set_name__(self, owner: type, attr: str) -> None:
        super().__set_name__(owner, attr)
        if self._explicit_name is not None:
            self.name = self._explicit_name  # the wire name stays pinned

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

        Raises :class:`BadArgumentsError` if the arguments do not bind to the
        signature, cannot be encoded, or would not decode as the type hints
        say, exactly as ``apply`` would decode them.
        """
        params = self.params
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as e:
            raise BadArgumentsError(f"{self.qualname}(): {e}") from None
        bound.apply_defaults()
        values = [bound.arguments[p.name] for p in params]
        try:
            body = msgspec.msgpack.encode((self.name, values))
        except ENCODE_ERRORS as e:
            culprit = ""
            for p, v in zip(params, values, strict=True):
                try:
                    msgspec.msgpack.encode(v)
                except ENCODE_ERRORS:
                    culprit = f"argument {p.name!r} "
                    break
            raise BadArgumentsError(f"{self.qualname}(): {culprit}cannot be encoded: {e}") from None
        _, raws = decode_body(body)
        self.decode_args(raws)  # validate exactly as every replica will
        return encode_envelope(body)

    def decode_args(self, raws: list[msgspec.Raw]) -> tuple[list[Any], dict[str, Any]]:
        """Decode and validate encoded arguments into ``(args, kwargs)`` for the body."""
        params = self.params
        if len(raws) > len(params):
            raise BadArgumentsError(
                f"{self.qualname}() takes {len(params)} arguments but the entry carries {len(raws)}"
            )
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for i, p in enumerate(params):
            if i < len(raws):
                try:
                    value = p.decoder.decode(raws[i])
                except msgspec.DecodeError as e:  # ValidationError is a DecodeError
                    raise BadArgumentsError(
                        f"{self.qualname}(): argument {p.name!r}: {e}"
                    ) from None
            elif p.default is not inspect.Parameter.empty:
                value = p.default
            else:
                raise BadArgumentsError(f"{self.qualname}(): missing argument {p.name!r}")
            if p.kind is inspect.Parameter.KEYWORD_ONLY:
                kwargs[p.name] = value
            else:
                args.append(value)
        return args, kwargs


class BoundCommand(Generic[P, R]):
    """A command bound to an instance: calling it proposes and returns a coroutine."""

    __slots__ = ("_command", "_instance", "_timeout")

    def __init__(
        self, command: Command[Any, P, R], instance: Attachable, timeout: float | None
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

        Raises :class:`BadArgumentsError` or :class:`NotAttachedError` at once, before
        anything is proposed.  The coroutine resolves with the body's return
        value once the entry is applied on this node, and raises what the body
        raised, or the runtime's ``NotLeaderError``, ``NodeTimeoutError`` or
        ``StoppedError``.
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


class Query(_Method[S, P, R]):
    """A read-only method, made by :func:`query`; run through ``Proposer.read``.

    Queries are not replicated: they run on this node's state once a read
    index at the requested consistency is applied.  They must not mutate.
    """

    def __init__(self, fn: Callable[Concatenate[S, P], R], *, consistency: str) -> None:
        super().__init__(fn, "query")
        self.consistency = consistency

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


class BoundQuery(Generic[P, R]):
    """A query bound to an instance: calling it returns a coroutine that reads."""

    __slots__ = ("_consistency", "_instance", "_query")

    def __init__(self, query: Query[Any, P, R], instance: Attachable, consistency: str) -> None:
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
            raise BadArgumentsError(f"{self._query.qualname}(): {e}") from None
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
