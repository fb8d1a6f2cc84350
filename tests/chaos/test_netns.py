"""liferaft.chaos.netns against real network namespaces: connectivity through
the hub bridge, partitions by blackhole routes (checked with TCP probes run
inside the namespaces), and cleanup, including after a crashed run.

Needs root and iproute2; skipped (with netns.available()'s reason) otherwise.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from liferaft.chaos import netns
from liferaft.chaos.netns import CLIENT, NetLab, NetLabError

OK, WHY = netns.available()
pytestmark = pytest.mark.skipif(not OK, reason=WHY)

PORT = 7071
PROBE_TIMEOUT = 1.5  # a blackholed connect fails at once (EINVAL); this bounds a bug

# A listener that greets every connection with its node's name.
SERVER = textwrap.dedent(
    """
    import socket, sys
    name, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, port))
    srv.listen(64)
    print("ready", flush=True)
    while True:
        conn, _ = srv.accept()
        try:
            conn.sendall(name.encode())
        except OSError:
            pass
        conn.close()
    """
)

# Connect to every HOST:PORT argument at once; print {target: [ok, greeting or error, secs]}.
PROBE = textwrap.dedent(
    """
    import json, socket, sys, threading, time
    timeout, res = float(sys.argv[1]), {}
    def one(target):
        host, port = target.rsplit(":", 1)
        t0 = time.monotonic()
        try:
            with socket.create_connection((host, int(port)), timeout=timeout) as s:
                s.settimeout(timeout)
                got = s.recv(64).decode()
            res[target] = [True, got, time.monotonic() - t0]
        except OSError as e:
            res[target] = [False, f"{type(e).__name__}: {e}", time.monotonic() - t0]
    threads = [threading.Thread(target=one, args=(t,)) for t in sys.argv[2:]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps(res))
    """
)


def ns_list() -> set[str]:
    out = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def host_links() -> set[str]:
    out = subprocess.run(
        ["ip", "-o", "link", "show"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line}


def kill(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        if p.poll() is None:
            os.kill(p.pid, 9)
        p.wait(timeout=10)


@contextmanager
def servers(lab: NetLab, members: list[str] | None = None) -> Iterator[None]:
    """A greeting listener on ADDR:PORT in each member's namespace."""
    procs: list[subprocess.Popen[str]] = []
    try:
        for m in members or list(lab.members):
            cmd = [*lab.exec_prefix(m), sys.executable, "-c", SERVER, m, lab.addr(m), str(PORT)]
            procs.append(
                subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            )
        for p in procs:
            assert p.stdout is not None
            ready, _, _ = select.select([p.stdout], [], [], 10)
            line = p.stdout.readline() if ready else ""
            if line.strip() != "ready":
                raise AssertionError(f"server {p.args} did not start: {line!r}")
        yield
    finally:
        kill(procs)


def probe(lab: NetLab, sources: list[str], targets: list[str]) -> dict[tuple[str, str], list]:
    """Connect from every source namespace to every target (all in parallel);
    return {(src, dst): [ok, greeting or error, seconds]}."""
    procs: dict[str, subprocess.Popen[str]] = {}
    try:
        for s in sources:
            dsts = [f"{lab.addr(t)}:{PORT}" for t in targets if t != s]
            cmd = [*lab.exec_prefix(s), sys.executable, "-c", PROBE, str(PROBE_TIMEOUT), *dsts]
            procs[s] = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        out: dict[tuple[str, str], list] = {}
        for s, p in procs.items():
            stdout, stderr = p.communicate(timeout=20)
            assert p.returncode == 0, stderr
            res = json.loads(stdout)
            for t in targets:
                if t != s:
                    out[(s, t)] = res[f"{lab.addr(t)}:{PORT}"]
        return out
    finally:
        kill(list(procs.values()))


def check_matrix(lab: NetLab, cut: set[frozenset[str]]) -> None:
    """Probe all pairs (client included as a source); exactly the pairs in
    ``cut`` must fail, fast and at the sender's own blackhole route."""
    members = list(lab.members)
    res = probe(lab, [*members, CLIENT], members)
    assert lab.cuts == cut
    bad = []
    for (s, t), (ok, what, secs) in sorted(res.items()):
        want = frozenset((s, t)) not in cut
        if ok != want or (ok and what != t):
            bad.append(f"{s}->{t}: expected {'ok' if want else 'cut'}, got {ok} {what!r}")
        if not ok and ("Errno 22" not in what or secs > 0.5):  # EINVAL: local blackhole
            bad.append(f"{s}->{t}: cut but not by a local blackhole: {what!r} in {secs:.2f}s")
    assert not bad, "\n".join(bad)


def pairs(*links: str) -> set[frozenset[str]]:
    return {frozenset(link.split("-")) for link in links}


@pytest.fixture(autouse=True)
def no_leftovers() -> Iterator[None]:
    """Every test must leave no namespace of this process behind."""
    yield
    mine = f"lrc-{os.getpid():x}"
    left = {n for n in ns_list() if n.startswith((mine + "-", mine + "."))}
    for n in left:
        subprocess.run(["ip", "netns", "del", n], capture_output=True, timeout=10)
    assert not left, f"namespaces left behind: {sorted(left)}"


def test_topology_names_and_addresses() -> None:
    before = ns_list()
    links_before = host_links()
    with NetLab(["n1", "n2", "n3"]) as lab:
        tag = f"{os.getpid():x}"
        assert lab.tag == tag
        assert lab.ns("n2") == f"lrc-{tag}-n2"
        assert lab.client_ns == lab.ns(CLIENT) == f"lrc-{tag}-client"
        assert [lab.addr(m) for m in ("n1", "n2", "n3", CLIENT)] == [
            "10.231.0.1",
            "10.231.0.2",
            "10.231.0.3",
            "10.231.0.200",
        ]
        assert lab.exec_prefix("n1")[1:] == ["netns", "exec", lab.ns("n1")]
        assert os.path.basename(lab.exec_prefix("n1")[0]) == "ip"
        assert set(lab.namespaces()) <= ns_list() - before
        assert host_links() - links_before == set(), "an interface appeared in the host netns"
        out = subprocess.run(
            [*lab.exec_prefix("n3"), "ip", "-o", "-4", "addr", "show"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout
        assert "lo" in out and "127.0.0.1" in out and "10.231.0.3/24" in out
        assert lab.cuts == frozenset() and lab.describe() == "healed"
    assert not set(lab.namespaces()) & ns_list()


def test_client_to_server_cut_and_heal() -> None:
    with NetLab(["n1", "n2", "n3"]) as lab, servers(lab):
        # the client reaches a server listening in n1's namespace on n1's address
        res = probe(lab, [CLIENT], ["n1"])
        assert res[(CLIENT, "n1")][:2] == [True, "n1"]
        # n1 reaches n2 (and everyone everyone)
        check_matrix(lab, set())

        lab.cut("n1", "n2")
        assert not lab.reachable("n1", "n2") and lab.reachable("n1", "n3")
        assert lab.describe() == "n1-n2"
        check_matrix(lab, pairs("n1-n2"))  # n1->n2 fails; client->n2, n1->n3 still work
        lab.cut("n2", "n1")  # already cut: nothing changes
        assert lab.cuts == pairs("n1-n2")

        lab.heal()
        check_matrix(lab, set())

        lab.cut("n1", "n3")
        lab.mend("n3", "n1")
        lab.mend("n1", "n2")  # not cut: nothing to do
        check_matrix(lab, set())


def test_partition_and_isolate() -> None:
    with NetLab(["n1", "n2", "n3"]) as lab, servers(lab):
        lab.partition([["n1"], ["n2", "n3"]])
        check_matrix(lab, pairs("n1-n2", "n1-n3"))

        lab.isolate("n2")  # replaces the partition above
        check_matrix(lab, pairs("n1-n2", "n2-n3"))

        lab.partition([["n1", "n2", "n3"]])
        check_matrix(lab, set())


def test_bridge_five() -> None:
    members = ["n1", "n2", "n3", "n4", "n5"]
    want = pairs("n1-n4", "n1-n5", "n2-n4", "n2-n5")
    with NetLab(members) as lab, servers(lab):
        lab.isolate("n3")
        lab.bridge(["n1", "n2"], ["n3"], ["n4", "n5"])  # as the nemesis calls it
        check_matrix(lab, want)

        lab.heal()
        lab.bridge()  # default split of the member list: the same topology
        assert lab.cuts == want
        lab.bridge(["n5", "n1"], "n4", ["n2", "n3"])
        assert lab.cuts == pairs("n5-n2", "n5-n3", "n1-n2", "n1-n3")
        lab.partition([["n1", "n2"], ["n3", "n4", "n5"]])
        check_matrix(lab, pairs("n1-n3", "n1-n4", "n1-n5", "n2-n3", "n2-n4", "n2-n5"))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        NetLab([])
    with pytest.raises(ValueError):
        NetLab(["n1", "n1"])
    with pytest.raises(ValueError):
        NetLab(["n1", CLIENT])
    with pytest.raises(ValueError):
        NetLab(["n1"], tag="has-dash")
    with pytest.raises(ValueError):
        NetLab(["bad name"])
    lab = NetLab(["n1", "n2", "n3"])
    with pytest.raises(NetLabError):
        lab.cut("n1", "n2")  # not open
    with lab:
        for bad in (
            lambda: lab.cut("n1", CLIENT),
            lambda: lab.cut(CLIENT, "n2"),
            lambda: lab.cut("n1", "n1"),
            lambda: lab.cut("n1", "n9"),
            lambda: lab.isolate(CLIENT),
            lambda: lab.partition([["n1"], ["n2"]]),  # n3 in no group
            lambda: lab.partition([["n1", "n2"], ["n2", "n3"]]),
            lambda: lab.partition([["n1", "n2", "n3", CLIENT]]),
            lambda: lab.bridge(["n1"], [], ["n2", "n3"]),
            lambda: lab.bridge(["n1"], "n2"),
        ):
            with pytest.raises(ValueError):
                bad()
        assert lab.cuts == frozenset()


def test_cleanup_on_exception_and_concurrent_labs() -> None:
    names: list[str] = []
    one, two = NetLab(["a", "b"]), NetLab(["a", "b"])  # same process, same subnet
    with pytest.raises(RuntimeError, match="boom"), one, two:
        assert one.tag != two.tag and two.tag.startswith(f"{os.getpid():x}.")
        names += one.namespaces() + two.namespaces()
        assert set(names) <= ns_list()
        one.cut("a", "b")
        raise RuntimeError("boom")
    assert not set(names) & ns_list()
    one.close()  # again: nothing left, no error
    one.heal()  # closed: nothing to heal


def test_taken_name_is_not_adopted() -> None:
    tag = f"taken{os.getpid():x}"
    with NetLab(["a"], tag=tag) as lab:
        with pytest.raises(NetLabError, match="netns add"), NetLab(["a"], tag=tag):
            pass
        assert set(lab.namespaces()) <= ns_list()  # the failed lab deleted none of them
    assert not set(lab.namespaces()) & ns_list()


def _run_child(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_atexit_cleans_an_unclosed_lab() -> None:
    child = _run_child(
        """
        from liferaft.chaos.netns import NetLab
        lab = NetLab(["n1", "n2"])
        lab.__enter__()
        lab.cut("n1", "n2")
        print(" ".join(lab.namespaces()))
        """
    )
    assert child.returncode == 0, child.stderr
    names = set(child.stdout.split())
    assert len(names) == 4
    assert not names & ns_list()


def test_cleanup_stale_after_a_crash() -> None:
    # a tag that is no PID: only the owner record can tell the lab is stale
    tag = f"crash{os.getpid():x}"
    child = _run_child(
        f"""
        import os, signal
        from liferaft.chaos.netns import NetLab
        lab = NetLab(["n1", "n2"], tag="{tag}")
        lab.__enter__()
        print(" ".join(lab.namespaces()), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # no atexit
        """
    )
    assert child.returncode == -9, child.stderr
    names = set(child.stdout.split())
    try:
        assert len(names) == 4
        netns.cleanup_stale()
        assert not names & ns_list()
    finally:
        for n in names:
            subprocess.run(["ip", "netns", "del", n], capture_output=True, timeout=10)


def test_cleanup_stale_judges_by_owner_then_tag() -> None:
    me = f"{os.getpid():x}"
    dead = "7ffffffe"  # above PID_MAX_LIMIT: no process can have it
    # member names carry our PID so that concurrent runs of this test do not collide
    stale = [
        f"lrc-{dead}-n1x{me}",  # no owner record, tag a dead PID
        f"lrc-{dead}-hubx{me}",
        f"lrc-{me}.kept-x",  # tag our live PID, but the owner record names a dead process
    ]
    kept = [
        f"lrc-{me}.live-n1",  # no owner record, tag our live PID
        f"lrc-zz{me}-n1",  # no owner record, tag not hex
        f"lrc-{dead}.owned-x{me}",  # tag a dead PID, but the owner record names us
        f"lrcx-{dead}-x{me}",  # another prefix
    ]
    start = netns._proc_start(os.getpid())
    owners = {
        stale[2]: f"liferaft-netlab:pid={0x7FFFFFFE}:start=1",
        kept[2]: f"liferaft-netlab:pid={os.getpid()}:start={start}",
    }
    made: list[str] = []
    try:
        for n in stale + kept:
            subprocess.run(["ip", "netns", "add", n], check=True, timeout=10)
            made.append(n)
            if n in owners:
                subprocess.run(
                    ["ip", "-n", n, "link", "set", "lo", "alias", owners[n]],
                    check=True,
                    timeout=10,
                )
        removed = netns.cleanup_stale()
        assert not set(removed) & set(kept)
        present = ns_list()
        assert not set(stale) & present  # (a concurrent run may have removed some first)
        assert set(kept) <= present
        netns.cleanup_stale(prefix="lrcx-")  # now the other prefix
        assert kept[3] not in ns_list()
        netns.cleanup_stale()  # nothing stale left: no error
    finally:
        for n in made:
            subprocess.run(["ip", "netns", "del", n], capture_output=True, timeout=10)
    assert not set(made) & ns_list()


def test_available_leaves_nothing() -> None:
    before = ns_list()
    t0 = time.monotonic()
    ok, why = netns.available()
    assert ok, why
    assert time.monotonic() - t0 < 5
    assert not {n for n in ns_list() - before if ".probe-" in n}
