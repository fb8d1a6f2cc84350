"""A careless operator and a node's data dir (issue 15): a dir copied to
another node id, a dir whose kv/ store was deleted, and the error that
names a docs section.  One real ``liferaft serve`` node writes the dir;
every start after it is refused before it opens a port, so each is quick."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from liferaft.harness.ports import free_port
from tests.kv.procs import proc_cluster, run_cli

DOCS = Path(__file__).resolve().parents[2] / "docs" / "kv.md"


def serve(data_dir: Path, node_id: str) -> subprocess.CompletedProcess[str]:
    """``liferaft serve`` on ``data_dir`` as ``node_id`` (a one-node cluster);
    a refused start exits at once (a start that serves hits the bound)."""
    peer, client = free_port(), free_port()
    try:
        return run_cli(
            "serve", "--id", node_id, "--data-dir", str(data_dir),
            "--peer-addr", f"127.0.0.1:{peer}", "--client-addr", f"127.0.0.1:{client}",
            "--initial-cluster", f"{node_id}=127.0.0.1:{peer}",
            timeout=20,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail(f"serve --id {node_id} on {data_dir} started instead of refusing")


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """n1's data dir after a write, the node stopped."""
    root = tmp_path_factory.mktemp("careless-dir")
    with proc_cluster(root) as c:
        c.start_cluster(1)
        status, _ = c.put("n1", "k", "v")
        assert status == 200
        data = c.nodes["n1"].data_dir
        c.stop("n1")
    return data


def one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode != 0, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    return lines[0]


def test_a_data_dir_copied_to_another_node_id_is_refused(written: Path, tmp_path: Path) -> None:
    """n1's hard state (its vote) and log under the id n2 would let n2 vote
    twice in a term and forget entries it acknowledged: two leaders, lost
    commits (etcd refuses a member id that differs from its WAL's)."""
    copy = tmp_path / "n2"
    shutil.copytree(written, copy)
    line = one_line_error(serve(copy, "n2")).replace(str(copy), "DIR")
    assert "n1" in line and "n2" in line
    # Nothing was changed: the rightful owner still starts on a copy of it.
    assert sorted(p.name for p in copy.iterdir()) == sorted(p.name for p in written.iterdir())


def test_a_deleted_kv_store_is_not_called_an_old_build(written: Path, tmp_path: Path) -> None:
    """The store deleted by hand (Raft state kept) is not "a node of an
    earlier liferaft-kv": the error must name the missing store."""
    copy = tmp_path / "n1"
    shutil.copytree(written, copy)
    shutil.rmtree(copy / "kv")
    line = one_line_error(serve(copy, "n1")).replace(str(copy), "DIR")
    assert "kv/" in line and "deleted" in line
    assert not (copy / "kv").exists()


def test_the_upgrade_error_names_a_docs_section_that_exists() -> None:
    """The refusal of an in-memory-store data dir sends the operator to a
    docs/kv.md section: it must be there."""
    from liferaft.kv import serve as serve_mod

    cited = re.findall(r'docs/kv\.md, \\?"([^"\\]+)\\?"', Path(serve_mod.__file__).read_text())
    assert cited, "no docs/kv.md section cited"
    headings = {ln.lstrip("#").strip() for ln in DOCS.read_text().splitlines()
                if ln.startswith("#")}  # fmt: skip
    missing = [c for c in cited if c not in headings]
    assert not missing, f"docs/kv.md has no section {missing}"
