"""Typed errors of the codec."""

from __future__ import annotations


class CodecError(ValueError):
    """Base class of every codec error."""


class DecodeError(CodecError):
    """A buffer is not a valid encoding.

    ``reason`` says what is wrong in words fit for a log line, e.g.
    ``"unsupported codec version 7"`` or ``"Expected `int` >= 0, got -1 - at `$[1]`"``.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EncodeError(CodecError):
    """An object cannot be encoded (it is not a supported type)."""
