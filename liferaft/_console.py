"""The ``liferaft`` console script: the CLI, or a one-line install hint.

``pip install liferaft`` is the library alone (msgspec is its only
dependency); the command, the server and the client come with the ``kv``
extra (click, aiohttp, rich, ...).  The console script is installed either
way, so without the extra it must say what to install rather than print an
ImportError traceback.  This module imports nothing but the standard
library until the CLI is there to run (pyproject.toml, ``[project.scripts]``).
"""

from __future__ import annotations

import sys

#: Top-level modules the ``kv`` extra installs (pyproject.toml).
KV_MODULES = frozenset(
    {"click", "aiohttp", "rich", "prometheus_client", "sortedcontainers", "uvloop", "yarl", "lmdb",
     "grpc", "google"}
)

HINT = "liferaft: the command needs the kv extra: pip install 'liferaft[kv]'"


def run() -> None:
    """Run the ``liferaft`` command; exit 1 with :data:`HINT` if the kv extra is missing.

    A missing module that the kv extra does not provide is a real bug and
    keeps its traceback."""
    try:
        from liferaft.cli import run as cli_run

        cli_run()
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in KV_MODULES:
            raise
        print(f"{HINT} (no module named {exc.name!r})", file=sys.stderr)
        sys.exit(1)
