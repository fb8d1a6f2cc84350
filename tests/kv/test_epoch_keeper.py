"""The data dir's side of cluster epochs (liferaft/kv/rebuild.py EpochKeeper,
identity.read_epoch): what is recorded when a node is told it was removed,
and which recorded epochs a node refuses to start on."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from liferaft.kv.identity import IdentityError, read_epoch, record_identity
from liferaft.kv.rebuild import STALE_RECORD, EpochKeeper, RebuildError, check_stale


def _dir(tmp_path: Path, epoch: object) -> Path:
    record_identity(tmp_path, "n1", "c1")
    doc = json.loads((tmp_path / "node").read_text())
    (tmp_path / "node").write_text(json.dumps({**doc, "epoch": epoch}))
    return tmp_path


@pytest.mark.parametrize("epoch", [-1, 2**63, True, "1", 1.5])
def test_a_hand_edited_epoch_is_refused_in_one_line(tmp_path: Path, epoch: object) -> None:
    with pytest.raises(IdentityError, match="is not a cluster epoch"):
        read_epoch(_dir(tmp_path, epoch))


def test_a_recorded_epoch_is_read(tmp_path: Path) -> None:
    assert read_epoch(_dir(tmp_path, 3)) == 3


async def test_a_proven_removal_is_recorded_for_good(tmp_path: Path) -> None:
    keeper = EpochKeeper(_dir(tmp_path, 0), joining=False)
    keeper.removed("n1 (epoch 1) answers REMOVED")
    assert keeper.stale.is_set() and (tmp_path / STALE_RECORD).exists()
    with pytest.raises(RebuildError, match="removed from its cluster"):
        check_stale(tmp_path)


async def test_an_unproven_removal_stops_the_node_but_records_nothing(tmp_path: Path) -> None:
    """Without peer authentication anyone can claim a member's id: the node
    stops (it cannot tell), but its data dir still starts."""
    keeper = EpochKeeper(_dir(tmp_path, 0), joining=False)
    keeper.proven = False
    keeper.removed("n1 (epoch 1) answers REMOVED")
    await asyncio.wait_for(keeper.stale.wait(), 1)
    assert not (tmp_path / STALE_RECORD).exists()
    check_stale(tmp_path)  # starts again
