"""etcdctl's KV commands against a 3-node liferaft-kv over gRPC (etcd's
v3 API, issue 16): the output a user of etcd would see."""

from __future__ import annotations

import json

from tests.etcd.etcdctl import Etcdctl


def test_put_get_delete(ctl: Etcdctl) -> None:
    assert ctl.ok("put", "smoke/a", "1").strip() == "OK"
    assert ctl.ok("get", "smoke/a").splitlines() == ["smoke/a", "1"]
    got = json.loads(ctl.ok("get", "smoke/", "--prefix", "-w", "json"))
    assert [kv["version"] for kv in got["kvs"]] == [1]
    assert got["header"]["revision"] >= got["kvs"][0]["mod_revision"] > 0
    assert ctl.ok("del", "smoke/a").strip() == "1"
    assert ctl.ok("get", "smoke/a") == ""
