"""Lease reads are one decision with one default: off, in the library and in
``liferaft serve`` alike (docs/runtime.md, "Lease reads").

If any of these drifts, the documented decision and the code disagree:
change both, or neither.  What "off" means (a lease request gets a
confirmed round) is tested in tests/core/test_read_index.py and
tests/runtime/test_node_memory.py.
"""

from __future__ import annotations

from pathlib import Path

import click

from liferaft.cli.serve import serve_cmd
from liferaft.kv.serve import ServeOptions, node_config
from liferaft.runtime import NodeConfig

DECIDED = False  # docs/runtime.md, "Lease reads: off unless the operator turns them on"


def test_the_library_default_is_the_decision() -> None:
    assert NodeConfig(id="a").lease_reads is DECIDED


def test_the_serve_defaults_are_the_decision() -> None:
    options = ServeOptions(
        id="a", data_dir=Path("unused"), peer_addr="127.0.0.1:1", client_addr="127.0.0.1:2"
    )
    assert options.lease_reads is DECIDED
    assert node_config(options).lease_reads is DECIDED
    (flag,) = [p for p in serve_cmd.params if p.name == "lease_reads"]
    assert isinstance(flag, click.Option) and flag.default is DECIDED
