"""etcdctl's KV commands against a 3-node liferaft-kv over gRPC (etcd's
v3 API, issue 16): the output a user of etcd would see."""

from __future__ import annotations

import base64
import json
import subprocess

from tests.etcd.etcdctl import Etcdctl


def test_put_get_delete(ctl: Etcdctl) -> None:
    assert ctl.ok("put", "smoke/a", "1").strip() == "OK"
    assert ctl.ok("get", "smoke/a").splitlines() == ["smoke/a", "1"]
    got = json.loads(ctl.ok("get", "smoke/", "--prefix", "-w", "json"))
    assert [kv["version"] for kv in got["kvs"]] == [1]
    assert got["header"]["revision"] >= got["kvs"][0]["mod_revision"] > 0
    assert ctl.ok("del", "smoke/a").strip() == "1"
    assert ctl.ok("get", "smoke/a") == ""


def _err(r: subprocess.CompletedProcess[str]) -> str:
    """etcdctl's error line (its retry interceptor logs JSON lines first)."""
    assert r.returncode != 0, r.stdout
    return [ln for ln in r.stderr.splitlines() if ln.startswith("Error:")][-1]


def test_get_options(ctl: Etcdctl) -> None:
    for k, v in (("g/a", "3"), ("g/b", "1"), ("g/c", "2"), ("g/b", "4"), ("h", "x")):
        ctl.ok("put", k, v)
    assert ctl.ok("get", "g/", "--prefix").split() == ["g/a", "3", "g/b", "4", "g/c", "2"]
    assert ctl.ok("get", "g/", "--prefix", "--keys-only").split() == ["g/a", "g/b", "g/c"]
    assert ctl.ok("get", "g/", "--prefix", "--print-value-only").split() == ["3", "4", "2"]
    got = json.loads(ctl.ok("get", "g/", "--prefix", "--limit", "2", "-w", "json"))
    assert [base64.b64decode(kv["key"]) for kv in got["kvs"]] == [b"g/a", b"g/b"]
    assert got["more"] is True and got["count"] == 3
    by_value = ctl.ok("get", "g/", "--prefix", "--sort-by=VALUE", "--order=DESCEND")
    assert by_value.split()[::2] == ["g/b", "g/a", "g/c"]
    by_mod = ctl.ok("get", "g/", "--prefix", "--sort-by=MODIFY", "--order=ASCEND", "--keys-only")
    assert by_mod.split() == ["g/a", "g/c", "g/b"]
    assert ctl.ok("get", "g/c", "--from-key", "--keys-only").split() == ["g/c", "h"]
    assert ctl.ok("get", "g/a", "g/c", "--keys-only").split() == ["g/a", "g/b"]  # [a, c)
    # --rev reads history: g/b before its second put.
    b = json.loads(ctl.ok("get", "g/b", "-w", "json"))["kvs"][0]
    assert b["version"] == 2
    old = ctl.ok("get", "g/b", "--rev", str(b["mod_revision"] - 1), "--print-value-only")
    assert old.split() == ["1"]
    future = ctl.run("get", "g/b", "--rev", "99999999")
    assert _err(future) == "Error: etcdserver: mvcc: required revision is a future revision"


def test_put_prev_kv_ignore_value_and_del_prefix(ctl: Etcdctl) -> None:
    ctl.ok("put", "p/a", "1")
    assert ctl.ok("put", "p/a", "2", "--prev-kv").split() == ["OK", "p/a", "1"]
    assert ctl.ok("put", "p/a", "--ignore-value").strip() == "OK"
    kv = json.loads(ctl.ok("get", "p/a", "-w", "json"))["kvs"][0]
    assert (base64.b64decode(kv["value"]), kv["version"]) == (b"2", 3)
    assert _err(ctl.run("put", "p/none", "--ignore-value")) == "Error: etcdserver: key not found"
    ctl.ok("put", "p/b", "x")
    out = ctl.ok("del", "p/", "--prefix", "--prev-kv").split()
    assert out == ["2", "p/a", "2", "p/b", "x"]
    assert ctl.ok("get", "p/", "--prefix") == ""


def test_txn_interactive(ctl: Etcdctl) -> None:
    ctl.ok("put", "t/a", "1")
    stdin = 'value("t/a") = "1"\nversion("t/none") = "0"\n\nput t/b 2\nget t/a\n\nput t/c 3\n\n'
    out = ctl.ok("txn", "-i", input=stdin)
    assert out.splitlines()[-6:] == ["SUCCESS", "", "OK", "", "t/a", "1"]
    stdin = 'mod("t/a") > "999999"\n\nput t/b 9\n\nput t/c 3\ndel t/b\n\n'
    out = ctl.ok("txn", "-i", input=stdin)
    assert out.splitlines()[-5:] == ["FAILURE", "", "OK", "", "1"]
    assert ctl.ok("get", "t/", "--prefix", "--keys-only").split() == ["t/a", "t/c"]
    dup = ctl.run("txn", "-i", input='\nput t/x 1\nput t/x 2\n\n\n')
    assert _err(dup) == "Error: etcdserver: duplicate key given in txn request"
    js = json.loads(ctl.ok("txn", "-i", "-w", "json", input='\nget t/c\n\n\n').splitlines()[-1])
    assert js["succeeded"] is True
    assert base64.b64decode(js["responses"][0]["Response"]["ResponseRange"]["kvs"][0]["value"]) \
        == b"3"


def test_compaction_then_an_old_rev_is_compacted(ctl: Etcdctl) -> None:
    ctl.ok("put", "c/k", "1")
    first = json.loads(ctl.ok("get", "c/k", "-w", "json"))["kvs"][0]["mod_revision"]
    ctl.ok("put", "c/k", "2")
    now = json.loads(ctl.ok("put", "c/k", "3", "-w", "json"))["header"]["revision"]
    assert ctl.ok("compaction", str(now)).strip() == f"compacted revision {now}"
    r = ctl.run("get", "c/k", "--rev", str(first))
    assert _err(r) == "Error: etcdserver: mvcc: required revision has been compacted"
    assert ctl.ok("get", "c/k", "--print-value-only").split() == ["3"]
