"""A command-line option's number of seconds."""

from __future__ import annotations

import math
from typing import Any

import click


class Seconds(click.FloatRange):
    """``click.FloatRange`` that refuses ``nan`` and ``inf``: Python's float()
    takes both, and a range check lets NaN through (every comparison with
    it is false).  A NaN timeout or interval is no bound at all: uvloop
    raises on the first timer set with it (a watch hub's progress task died
    on it, silently), asyncio's loop fires such a timer at once."""

    name = "seconds"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number of seconds", param, ctx)
        return rv


__all__ = ["Seconds"]
