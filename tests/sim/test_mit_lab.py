"""The MIT 6.5840 (6.824) Raft lab scenarios (3A-3D), on the simulator.

Each test follows what the lab's test of the same name checks, re-stated in
the vocabulary of :mod:`liferaft.sim.lab`.  Simulated time is in
milliseconds at the lab's scale (ELECTION_TIMEOUT is the lab's one second).
The :class:`~liferaft.sim.checker.Checker` runs after every simulated step,
so every scenario is also checked against the Raft safety rules throughout.

Where the lab checks an exact log index, the translation accounts for the
one difference between the lab's Raft and this one: a new leader here
appends a no-op entry first (and index 1 is the bootstrap snapshot), so
commands do not start at index 1 and a change of leader adds an entry.
"""

from __future__ import annotations

import pytest

from liferaft.sim.lab import (
    ELECTION_TIMEOUT,
    SECOND,
    SNAPSHOT_INTERVAL,
    Client,
    Lab,
    LabFailure,
    Task,
    TermChanged,
)

SEEDS = [1, 2, 3, 4, 5]


def cmd(x: int) -> bytes:
    return str(x).encode()


# -- 3A: leader election ----------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_initial_election_3a(seed: int) -> None:
    lab = Lab(3, seed)
    leader1 = lab.check_one_leader()
    # Let every server hear of the election before comparing terms.
    lab.sleep(50)
    term1 = lab.check_terms()
    assert term1 >= 1, f"term is {term1}, but should be at least 1"
    # With no failures, the leader and the term stay put (the lab only warns
    # about a changed term; pre-vote and check-quorum make it a hard rule).
    lab.sleep(2 * ELECTION_TIMEOUT)
    assert lab.check_terms() == term1, "term changed even though there were no failures"
    assert lab.check_one_leader() == leader1


@pytest.mark.parametrize("seed", SEEDS)
def test_re_election_3a(seed: int) -> None:
    n = 3
    lab = Lab(n, seed)
    leader1 = lab.check_one_leader()
    # The leader disconnects: a new one must be elected.
    lab.disconnect(leader1)
    new_leader = lab.check_one_leader()
    assert new_leader != leader1
    # The old leader rejoins; that must not disturb the new leader.
    lab.connect(leader1)
    leader2 = lab.check_one_leader()
    assert leader2 == new_leader, "a returning old leader deposed the new one"
    # No quorum: no leader may be elected.
    lab.disconnect(leader2)
    lab.disconnect((leader2 + 1) % n)
    lab.sleep(2 * ELECTION_TIMEOUT)
    lab.check_no_leader()
    # A quorum arises: it elects a leader.
    lab.connect((leader2 + 1) % n)
    lab.check_one_leader()
    # Rejoining the last node must not prevent a leader from existing.
    lab.connect(leader2)
    lab.check_one_leader()


@pytest.mark.parametrize("seed", SEEDS)
def test_many_elections_3a(seed: int) -> None:
    n = 7
    lab = Lab(n, seed)
    lab.check_one_leader()
    for _ in range(10):
        # Disconnect three servers (not always distinct, as in the lab): the
        # old leader survives, or the four that remain elect a new one.
        victims = [lab.rng.randrange(n) for _ in range(3)]
        for v in victims:
            lab.disconnect(v)
        lab.check_one_leader()
        for v in victims:
            lab.connect(v)
    lab.check_one_leader()


# -- 3B: log agreement ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_basic_agree_3b(seed: int) -> None:
    n = 3
    lab = Lab(n, seed)
    sent: list[bytes] = []
    first = prev = -1
    for k in range(1, 4):
        if prev == -1:
            assert not lab.values, "some have committed before Start()"
        else:
            nd, _ = lab.n_committed(prev + 1)
            assert nd == 0, "some have committed before Start()"
        c = cmd(k * 100)
        index = lab.one(c, n, retry=False)
        if prev != -1:
            assert index == prev + 1, f"got index {index} but expected {prev + 1}"
        else:
            first = index
        prev = index
        sent.append(c)
    # Nothing but the three commands, in order, with no gaps between them.
    assert lab.commands(0, prev + 1) == sent
    assert prev - first == len(sent) - 1
    lab.check_replicas_agree()


@pytest.mark.parametrize("seed", SEEDS)
def test_rpc_bytes_3b(seed: int) -> None:
    """Each command should be sent to each follower once, and no more."""
    n = 3
    lab = Lab(n, seed)
    index0 = lab.one(cmd(99), n, retry=False)
    bytes0 = lab.bytes_total()
    iters = 10
    sent = 0
    for k in range(1, iters + 1):
        c = lab.rng.randbytes(5000)
        index = lab.one(c, n, retry=False)
        assert index == index0 + k, f"got index {index} but expected {index0 + k}"
        sent += len(c)
    got = lab.bytes_total() - bytes0
    # The minimum: every follower receives every command once.
    assert got >= (n - 1) * sent
    # The lab's budget is n * sent plus 50 kB of RPC headers; only command
    # bytes are counted here, so no allowance for headers.
    assert got <= n * sent, f"too many RPC bytes; got {got}, expected at most {n * sent}"


@pytest.mark.parametrize("seed", SEEDS)
def test_follower_failure_3b(seed: int) -> None:
    n = 3
    lab = Lab(n, seed)
    lab.one(cmd(101), n, retry=False)
    # Disconnect one follower from the network.
    leader1 = lab.check_one_leader()
    lab.disconnect((leader1 + 1) % n)
    # The leader and the remaining follower should still agree.
    lab.one(cmd(102), n - 1, retry=False)
    lab.sleep(ELECTION_TIMEOUT)
    index103 = lab.one(cmd(103), n - 1, retry=False)
    # Disconnect the remaining follower.
    leader2 = lab.check_one_leader()
    lab.disconnect((leader2 + 1) % n)
    lab.disconnect((leader2 + 2) % n)
    # Submit a command: it must not commit without a majority.
    index, _, ok = lab.start(leader2, cmd(104))
    assert ok, "leader rejected Start()"
    assert index == index103 + 1, f"expected index {index103 + 1}, got {index}"
    lab.sleep(2 * ELECTION_TIMEOUT)
    nd, _ = lab.n_committed(index)
    assert nd == 0, f"{nd} committed but no majority"


@pytest.mark.parametrize("seed", SEEDS)
def test_leader_failure_3b(seed: int) -> None:
    n = 3
    lab = Lab(n, seed)
    lab.one(cmd(101), n, retry=False)
    # Disconnect the first leader.
    leader1 = lab.check_one_leader()
    lab.disconnect(leader1)
    # The remaining followers elect a new leader.
    lab.one(cmd(102), n - 1, retry=False)
    lab.sleep(ELECTION_TIMEOUT)
    index103 = lab.one(cmd(103), n - 1, retry=False)
    # Disconnect the new leader too.
    leader2 = lab.check_one_leader()
    lab.disconnect(leader2)
    # Submit a command to every server: none has a majority.
    for i in range(n):
        lab.start(i, cmd(104))
    lab.sleep(2 * ELECTION_TIMEOUT)
    nd, _ = lab.n_committed(index103 + 1)
    assert nd == 0, f"{nd} committed but no majority"


@pytest.mark.parametrize("seed", SEEDS)
def test_fail_agree_3b(seed: int) -> None:
    """A follower participates first, disconnects, then reconnects."""
    n = 3
    lab = Lab(n, seed)
    lab.one(cmd(101), n, retry=False)
    leader = lab.check_one_leader()
    lab.disconnect((leader + 1) % n)
    # The leader and the remaining follower should still agree.
    lab.one(cmd(102), n - 1, retry=False)
    lab.one(cmd(103), n - 1, retry=False)
    lab.sleep(ELECTION_TIMEOUT)
    lab.one(cmd(104), n - 1, retry=False)
    lab.one(cmd(105), n - 1, retry=False)
    # Reconnect: the follower catches up and agrees on new commands.
    lab.connect((leader + 1) % n)
    lab.one(cmd(106), n, retry=True)
    lab.sleep(ELECTION_TIMEOUT)
    last = lab.one(cmd(107), n, retry=True)
    assert lab.commands(0, last + 1) == [cmd(x) for x in range(101, 108)]
    lab.check_replicas_agree()


@pytest.mark.parametrize("seed", SEEDS)
def test_fail_no_agree_3b(seed: int) -> None:
    """No agreement if too many followers disconnect."""
    n = 5
    lab = Lab(n, seed)
    index10 = lab.one(cmd(10), n, retry=False)
    # Three of five followers disconnect.
    leader = lab.check_one_leader()
    for k in (1, 2, 3):
        lab.disconnect((leader + k) % n)
    index, _, ok = lab.start(leader, cmd(20))
    assert ok, "leader rejected Start()"
    assert index == index10 + 1, f"expected index {index10 + 1}, got {index}"
    lab.sleep(2 * ELECTION_TIMEOUT)
    nd, _ = lab.n_committed(index)
    assert nd == 0, f"{nd} committed but no majority"
    # Repair.
    for k in (1, 2, 3):
        lab.connect((leader + k) % n)
    # The disconnected majority may have chosen a leader from among their own
    # ranks, forgetting index+1; or the old leader keeps 20.  Either way the
    # new leader's no-op comes next, then 30.
    leader2 = lab.check_one_leader()
    index2, _, ok2 = lab.start(leader2, cmd(30))
    assert ok2, "leader2 rejected Start()"
    assert index10 + 2 <= index2 <= index10 + 3, f"unexpected index {index2}"
    last = lab.one(cmd(1000), n, retry=True)
    tail = lab.commands(index10 + 1, last)
    assert cmd(30) in tail and set(tail) <= {cmd(20), cmd(30)}, tail
    lab.check_replicas_agree()


@pytest.mark.parametrize("seed", SEEDS)
def test_concurrent_starts_3b(seed: int) -> None:
    n = 3
    lab = Lab(n, seed)
    success = False
    for attempt in range(5):
        if attempt > 0:
            # Give the solution some time to settle.
            lab.sleep(3 * SECOND)
        leader = lab.check_one_leader()
        _, term, ok = lab.start(leader, cmd(1))
        if not ok:
            continue  # leader moved on really quickly

        def starter(x: int, leader: int = leader) -> Client[tuple[int, int, bool]]:
            yield lab.rng.randint(0, 2)
            return lab.start(leader, cmd(100 + x))

        tasks = [lab.spawn(starter(x), f"start{x}") for x in range(5)]
        lab.join(tasks)
        results = [t.result for t in tasks]
        if any(t != term or not ok for _, t, ok in results):
            continue  # the term changed while starting
        if any(lab.get_state(i)[0] != term for i in range(n)):
            continue  # peers have moved on to later terms
        try:
            got = {lab.wait(index, n, term) for index, _, _ in results}
        except TermChanged:
            continue
        assert got == {cmd(100 + x) for x in range(5)}, f"cmds {got}"
        assert len({index for index, _, _ in results}) == 5
        success = True
        break
    assert success, "term changed too often"


@pytest.mark.parametrize("seed", SEEDS)
def test_rejoin_3b(seed: int) -> None:
    """A partitioned leader with stale entries rejoins."""
    n = 3
    lab = Lab(n, seed)
    lab.one(cmd(101), n, retry=True)
    # The leader is partitioned; it still accepts commands that cannot commit.
    leader1 = lab.check_one_leader()
    lab.disconnect(leader1)
    for x in (102, 103, 104):
        assert lab.start(leader1, cmd(x))[2], "partitioned leader rejected Start()"
    # The new leader commits, also for index=2.
    lab.one(cmd(103), 2, retry=True)
    # The new leader's network fails; the old leader is connected again.
    leader2 = lab.check_one_leader()
    lab.disconnect(leader2)
    lab.connect(leader1)
    lab.one(cmd(104), 2, retry=True)
    # Everyone together again.
    lab.connect(leader2)
    last = lab.one(cmd(105), n, retry=True)
    assert lab.commands(0, last + 1) == [cmd(101), cmd(103), cmd(104), cmd(105)]
    lab.check_replicas_agree()


@pytest.mark.parametrize("seed", SEEDS)
def test_backup_3b(seed: int) -> None:
    """A leader backs up quickly over incorrect follower logs."""
    n = 5
    lab = Lab(n, seed)
    lab.one(lab.rand_cmd(), n, retry=True)
    # Put the leader and one follower in a partition.
    leader1 = lab.check_one_leader()
    for k in (2, 3, 4):
        lab.disconnect((leader1 + k) % n)
    # Submit lots of commands that will not commit.
    doomed: set[bytes] = set()
    for _ in range(50):
        c = lab.rand_cmd()
        doomed.add(c)
        lab.start(leader1, c)
    lab.sleep(ELECTION_TIMEOUT // 2)
    lab.disconnect(leader1)
    lab.disconnect((leader1 + 1) % n)
    # Allow the other partition to recover, and give it lots of commands.
    for k in (2, 3, 4):
        lab.connect((leader1 + k) % n)
    for _ in range(50):
        lab.one(lab.rand_cmd(), 3, retry=True)
    # Now another partitioned leader and one follower.
    leader2 = lab.check_one_leader()
    other = (leader1 + 2) % n
    if leader2 == other:
        other = (leader2 + 1) % n
    lab.disconnect(other)
    # Lots more commands that will not commit.
    for _ in range(50):
        c = lab.rand_cmd()
        doomed.add(c)
        lab.start(leader2, c)
    lab.sleep(ELECTION_TIMEOUT // 2)
    # Bring the original leader back to life.
    for i in range(n):
        lab.disconnect(i)
    for i in (leader1, (leader1 + 1) % n, other):
        lab.connect(i)
    for _ in range(50):
        lab.one(lab.rand_cmd(), 3, retry=True)
    # Everyone together again.
    for i in range(n):
        lab.connect(i)
    last = lab.one(lab.rand_cmd(), n, retry=True)
    applied = lab.commands(0, last + 1)
    assert len(applied) == 1 + 50 + 50 + 1
    assert not doomed & set(applied), "a command submitted to a minority was applied"
    lab.check_replicas_agree()


@pytest.mark.parametrize("seed", SEEDS)
def test_count_3b(seed: int) -> None:
    """Not too many RPCs: to elect, to agree, and while idle."""
    n = 3
    lab = Lab(n, seed)
    lab.check_one_leader()
    total1 = lab.rpc_total()
    assert 1 <= total1 <= 30, f"too many or few RPCs ({total1}) to elect initial leader"

    total2 = 0
    success = False
    for attempt in range(5):
        if attempt > 0:
            lab.sleep(3 * SECOND)
        leader = lab.check_one_leader()
        total1 = lab.rpc_total()
        iters = 10
        starti, term, ok = lab.start(leader, cmd(1))
        if not ok:
            continue  # leader moved on really quickly
        cmds: list[bytes] = []
        moved = False
        for i in range(1, iters + 1):
            x = lab.rand_cmd()
            cmds.append(x)
            index1, term1, ok = lab.start(leader, x)
            if term1 != term or not ok:
                moved = True
                break
            assert index1 == starti + i, "Start() failed"
        if moved:
            continue
        try:
            for i in range(1, iters + 1):
                got = lab.wait(starti + i, n, term)
                assert got == cmds[i - 1], f"wrong value {got!r} committed for index {starti + i}"
        except TermChanged:
            continue
        if any(lab.get_state(i)[0] != term for i in range(n)):
            continue  # the term changed: the RPC count is not meaningful
        total2 = lab.rpc_total()
        assert total2 - total1 <= (iters + 1 + 3) * 3, (
            f"too many RPCs ({total2 - total1}) for {iters} entries"
        )
        success = True
        break
    assert success, "term changed too often"

    lab.sleep(ELECTION_TIMEOUT)
    total3 = lab.rpc_total()
    assert total3 - total2 <= 3 * 20, f"too many RPCs ({total3 - total2}) for 1 second of idleness"


# -- 3C: persistence ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_persist1_3c(seed: int) -> None:
    n = 3
    lab = Lab(n, seed)
    lab.one(cmd(11), n, retry=True)
    # Crash and restart all servers.
    for i in range(n):
        lab.start1(i)
    for i in range(n):
        lab.connect(i)
    lab.one(cmd(12), n, retry=True)

    leader1 = lab.check_one_leader()
    lab.start1(leader1)
    lab.connect(leader1)
    lab.one(cmd(13), n, retry=True)

    leader2 = lab.check_one_leader()
    lab.disconnect(leader2)
    index14 = lab.one(cmd(14), n - 1, retry=True)
    lab.start1(leader2)
    lab.connect(leader2)
    # Wait for leader2 to join before killing i3.
    assert lab.wait(index14, n) == cmd(14)

    i3 = (lab.check_one_leader() + 1) % n
    lab.disconnect(i3)
    lab.one(cmd(15), n - 1, retry=True)
    lab.start1(i3)
    lab.connect(i3)
    last = lab.one(cmd(16), n, retry=True)
    assert lab.commands(0, last + 1) == [cmd(x) for x in range(11, 17)]
    lab.check_replicas_agree()


@pytest.mark.parametrize("seed", SEEDS)
def test_persist2_3c(seed: int) -> None:
    n = 5
    lab = Lab(n, seed)
    index = 1
    for _ in range(5):
        lab.one(cmd(10 + index), n, retry=True)
        index += 1
        leader1 = lab.check_one_leader()
        lab.disconnect((leader1 + 1) % n)
        lab.disconnect((leader1 + 2) % n)
        lab.one(cmd(10 + index), n - 2, retry=True)
        index += 1
        lab.disconnect((leader1 + 0) % n)
        lab.disconnect((leader1 + 3) % n)
        lab.disconnect((leader1 + 4) % n)
        # Two servers that missed the last command restart; they alone
        # cannot form a majority, and with the third they must pick it.
        lab.start1((leader1 + 1) % n)
        lab.start1((leader1 + 2) % n)
        lab.connect((leader1 + 1) % n)
        lab.connect((leader1 + 2) % n)
        lab.sleep(ELECTION_TIMEOUT)
        lab.start1((leader1 + 3) % n)
        lab.connect((leader1 + 3) % n)
        lab.one(cmd(10 + index), n - 2, retry=True)
        index += 1
        lab.connect((leader1 + 4) % n)
        lab.connect((leader1 + 0) % n)
    last = lab.one(cmd(1000), n, retry=True)
    assert lab.commands(0, last + 1) == [cmd(10 + k) for k in range(1, index)] + [cmd(1000)]
    lab.check_replicas_agree()


@pytest.mark.parametrize("seed", SEEDS)
def test_persist3_3c(seed: int) -> None:
    """A partitioned leader and one follower crash; the leader restarts."""
    n = 3
    lab = Lab(n, seed)
    lab.one(cmd(101), 3, retry=True)
    leader = lab.check_one_leader()
    lab.disconnect((leader + 2) % n)
    lab.one(cmd(102), 2, retry=True)
    lab.crash1((leader + 0) % n)
    lab.crash1((leader + 1) % n)
    lab.connect((leader + 2) % n)
    lab.start1((leader + 0) % n)
    lab.connect((leader + 0) % n)
    lab.one(cmd(103), 2, retry=True)
    lab.start1((leader + 1) % n)
    lab.connect((leader + 1) % n)
    last = lab.one(cmd(104), n, retry=True)
    assert lab.commands(0, last + 1) == [cmd(x) for x in range(101, 105)]
    lab.check_replicas_agree()


def figure8(lab: Lab, iters: int) -> int:
    """Leaders crash right after they accept a command, again and again, and
    crashed servers come back so that (usually) a majority is up.  Returns
    how many leaders were crashed."""
    n = lab.n
    up = n
    crashed = 0
    for _ in range(iters):
        leader = -1
        for i in range(n):
            if lab.alive(i) and lab.start(i, lab.rand_cmd())[2]:
                leader = i
        if lab.rng.randrange(1000) < 100:
            lab.sleep(lab.rng.randrange(ELECTION_TIMEOUT // 2))
        else:
            lab.sleep(lab.rng.randrange(13))
        if leader != -1:
            lab.crash1(leader)
            crashed += 1
            up -= 1
        if up < 3:
            s = lab.rng.randrange(n)
            if not lab.alive(s):
                lab.start1(s)
                lab.connect(s)
                up += 1
    for i in range(n):
        if not lab.alive(i):
            lab.start1(i)
            lab.connect(i)
    return crashed


@pytest.mark.parametrize("seed", SEEDS)
def test_figure8_3c(seed: int) -> None:
    n = 5
    lab = Lab(n, seed)
    lab.one(lab.rand_cmd(), 1, retry=True)
    crashed = figure8(lab, 1000)
    assert crashed >= 20, f"only {crashed} leaders were elected (and crashed) in the storm"
    lab.one(lab.rand_cmd(), n, retry=True)
    lab.check_replicas_agree()


@pytest.mark.parametrize("seed", SEEDS)
def test_unreliable_agree_3c(seed: int) -> None:
    n = 5
    lab = Lab(n, seed, unreliable=True)
    tasks: list[tuple[bytes, Task[int]]] = []
    for it in range(1, 50):
        for j in range(4):
            c = cmd(100 * it + j)
            tasks.append((c, lab.spawn(lab.one_client(c, 1, True), f"one({c!r})")))
        c = cmd(it)
        tasks.append((c, lab.spawn(lab.one_client(c, 1, True), f"one({c!r})")))
        lab.join([tasks[-1][1]])
    lab.set_unreliable(False)
    lab.join(t for _, t in tasks)
    last = lab.one(cmd(100), n, retry=True)
    # Every one() returned the index where its own command was applied, and
    # the log holds nothing but those commands (a retried one() may have got
    # its command in twice, which the lab allows).
    for c, t in tasks:
        assert lab.values[t.result] == c
    assert set(lab.commands(0, last + 1)) == {c for c, _ in tasks} | {cmd(100)}
    lab.check_replicas_agree()


@pytest.mark.parametrize("seed", SEEDS)
def test_figure8_unreliable_3c(seed: int) -> None:
    n = 5
    lab = Lab(n, seed, unreliable=True)
    lab.one(cmd(lab.rng.randrange(10000)), 1, retry=True)
    up = n
    cut = 0
    for it in range(1000):
        if it == 200:
            lab.set_long_reordering(True)
        leader = -1
        for i in range(n):
            _, _, ok = lab.start(i, cmd(lab.rng.randrange(10000)))
            if ok and lab.connected[i]:
                leader = i
        if lab.rng.randrange(1000) < 100:
            lab.sleep(lab.rng.randrange(ELECTION_TIMEOUT // 2))
        else:
            lab.sleep(lab.rng.randrange(13))
        if leader != -1 and lab.rng.randrange(1000) < ELECTION_TIMEOUT // 2:
            lab.disconnect(leader)
            cut += 1
            up -= 1
        if up < 3:
            s = lab.rng.randrange(n)
            if not lab.connected[s]:
                lab.connect(s)
                up += 1
    assert cut >= 1, "no leader was ever cut off in the storm"
    for i in range(n):
        lab.connect(i)
    lab.one(cmd(lab.rng.randrange(10000)), n, retry=True)
    lab.set_long_reordering(False)
    lab.set_unreliable(False)
    lab.check_replicas_agree()


def churn(lab: Lab, unreliable: bool) -> None:
    n = lab.n
    stop = False
    values: list[bytes] = []

    def client(me: int) -> Client[None]:
        while not stop:
            x = lab.rand_cmd()
            index = -1
            for i in range(n):
                if lab.alive(i):
                    index1, _, ok = lab.start(i, x)
                    if ok:
                        index = index1
            if index != -1:
                for to in (10, 20, 50, 100, 200):
                    nd, got = lab.n_committed(index)
                    if nd > 0:
                        if got == x:
                            values.append(x)
                        break
                    yield to
            else:
                yield 79 + me * 17
        return None

    clients = [lab.spawn(client(k), f"client{k}") for k in range(3)]
    for _ in range(20):
        if lab.rng.randrange(1000) < 200:
            lab.disconnect(lab.rng.randrange(n))
        if lab.rng.randrange(1000) < 500:
            i = lab.rng.randrange(n)
            if not lab.alive(i):
                lab.start1(i)
            lab.connect(i)
        if lab.rng.randrange(1000) < 200:
            i = lab.rng.randrange(n)
            if lab.alive(i):
                lab.crash1(i)
        # Make crash/restart infrequent enough that the cluster can still
        # make progress: 0.7 of an election timeout between changes.
        lab.sleep(ELECTION_TIMEOUT * 7 // 10)
    lab.sleep(ELECTION_TIMEOUT)
    if unreliable:
        lab.set_unreliable(False)
    for i in range(n):
        if not lab.alive(i):
            lab.start1(i)
        lab.connect(i)
    stop = True
    lab.join(clients)

    last = lab.one(lab.rand_cmd(), n, retry=True)
    really = {lab.wait(index, n) for index in range(2, last + 1)}
    assert values, "the clients never got a command committed"
    for v in values:
        assert v in really, f"didn't find a value {v!r}"
    lab.check_replicas_agree()


@pytest.mark.parametrize("seed", SEEDS)
def test_reliable_churn_3c(seed: int) -> None:
    churn(Lab(5, seed), unreliable=False)


@pytest.mark.parametrize("seed", SEEDS)
def test_unreliable_churn_3c(seed: int) -> None:
    churn(Lab(5, seed, unreliable=True), unreliable=True)


# -- 3D: log compaction --------------------------------------------------------------------

#: Entries a server may keep after its snapshot, in the spirit of the lab's
#: MAXLOGSIZE: without compaction the log grows to hundreds of entries.
MAX_LOG_ENTRIES = 2 * SNAPSHOT_INTERVAL


def snap_common(seed: int, disconnect: bool, reliable: bool, crash: bool) -> Lab:
    n = 3
    lab = Lab(n, seed, unreliable=not reliable, snapshot_every=SNAPSHOT_INTERVAL)
    lab.one(lab.rand_cmd(), n, retry=True)
    leader1 = lab.check_one_leader()
    for i in range(30):
        victim = (leader1 + 1) % n
        sender = leader1
        if i % 3 == 1:
            sender = (leader1 + 1) % n
            victim = leader1
        if disconnect:
            lab.disconnect(victim)
            lab.one(lab.rand_cmd(), n - 1, retry=True)
        if crash:
            lab.crash1(victim)
            lab.one(lab.rand_cmd(), n - 1, retry=True)
        # Perhaps send enough to get a snapshot (the sender may not lead).
        for _ in range(SNAPSHOT_INTERVAL // 2 + lab.rng.randrange(SNAPSHOT_INTERVAL)):
            lab.start(sender, lab.rand_cmd())
        # Let the appliers catch up with the Start()s.
        if not disconnect and not crash:
            # Make sure all followers have caught up.
            lab.one(lab.rand_cmd(), n, retry=True)
        else:
            lab.one(lab.rand_cmd(), n - 1, retry=True)
        for s in range(n):
            if lab.alive(s):
                size = lab.log_size(s)
                assert size <= MAX_LOG_ENTRIES, f"server {s} keeps {size} entries: too large"
        if disconnect:
            # Reconnect a follower, which may be behind and need a snapshot.
            lab.connect(victim)
            lab.one(lab.rand_cmd(), n, retry=True)
            leader1 = lab.check_one_leader()
        if crash:
            lab.start1(victim)
            lab.connect(victim)
            lab.one(lab.rand_cmd(), n, retry=True)
            leader1 = lab.check_one_leader()
    lab.set_unreliable(False)
    lab.check_replicas_agree()
    for s in range(n):
        assert lab.snapshot_index(s) > 1, f"server {s} never took or installed a snapshot"
    return lab


@pytest.mark.parametrize("seed", SEEDS)
def test_snapshot_basic_3d(seed: int) -> None:
    snap_common(seed, disconnect=False, reliable=True, crash=False)


@pytest.mark.parametrize("seed", SEEDS)
def test_snapshot_install_3d(seed: int) -> None:
    lab = snap_common(seed, disconnect=True, reliable=True, crash=False)
    assert lab.sent("InstallSnapshot") > 0, "no follower ever needed a snapshot"


@pytest.mark.parametrize("seed", SEEDS)
def test_snapshot_install_unreliable_3d(seed: int) -> None:
    lab = snap_common(seed, disconnect=True, reliable=False, crash=False)
    assert lab.sent("InstallSnapshot") > 0, "no follower ever needed a snapshot"


@pytest.mark.parametrize("seed", SEEDS)
def test_snapshot_install_crash_3d(seed: int) -> None:
    lab = snap_common(seed, disconnect=False, reliable=True, crash=True)
    assert lab.sent("InstallSnapshot") > 0, "no follower ever needed a snapshot"


@pytest.mark.parametrize("seed", SEEDS)
def test_snapshot_install_uncrash_3d(seed: int) -> None:
    lab = snap_common(seed, disconnect=False, reliable=False, crash=True)
    assert lab.sent("InstallSnapshot") > 0, "no follower ever needed a snapshot"


@pytest.mark.parametrize("seed", SEEDS)
def test_snapshot_all_crash_3d(seed: int) -> None:
    """Crash and restart all servers after snapshots were taken."""
    n = 3
    lab = Lab(n, seed, snapshot_every=SNAPSHOT_INTERVAL)
    lab.one(lab.rand_cmd(), n, retry=True)
    for _ in range(5):
        # Perhaps enough to get a snapshot.
        for _ in range(SNAPSHOT_INTERVAL // 2 + lab.rng.randrange(SNAPSHOT_INTERVAL)):
            lab.one(lab.rand_cmd(), n, retry=True)
        index1 = lab.one(lab.rand_cmd(), n, retry=True)
        # Crash all, then revive all.
        for i in range(n):
            lab.crash1(i)
        for i in range(n):
            lab.start1(i)
            lab.connect(i)
        index2 = lab.one(lab.rand_cmd(), n, retry=True)
        assert index2 >= index1 + 1, f"index decreased from {index1} to {index2}"
    assert all(lab.snapshot_index(i) > 1 for i in range(n))
    lab.check_replicas_agree()


@pytest.mark.parametrize("seed", SEEDS)
def test_snapshot_init_3d(seed: int) -> None:
    """A snapshot must survive a restart and be used when a server starts."""
    n = 3
    lab = Lab(n, seed, snapshot_every=SNAPSHOT_INTERVAL)
    lab.one(lab.rand_cmd(), n, retry=True)
    # Enough ops to make a snapshot.
    for _ in range(SNAPSHOT_INTERVAL + 1):
        lab.one(lab.rand_cmd(), n, retry=True)
    snaps = [lab.snapshot_index(i) for i in range(n)]
    assert all(s > 1 for s in snaps), f"no snapshot taken: {snaps}"
    # Crash and restart all: each server starts from its snapshot.
    for i in range(n):
        lab.start1(i)
    for i in range(n):
        assert lab.applied_index(i) == snaps[i], "restart did not load the snapshot"
        lab.connect(i)
    lab.one(lab.rand_cmd(), n, retry=True)
    # Crash and restart all again: the snapshot must still be found.
    snaps = [lab.snapshot_index(i) for i in range(n)]
    for i in range(n):
        lab.start1(i)
    for i in range(n):
        assert lab.applied_index(i) == snaps[i], "restart did not load the snapshot"
        lab.connect(i)
    lab.one(lab.rand_cmd(), n, retry=True)
    lab.check_replicas_agree()


# -- the harness's own checks can fail ------------------------------------------------------


def test_harness_checks_can_fail() -> None:
    lab = Lab(3, 1)
    leader = lab.check_one_leader()
    with pytest.raises(LabFailure):
        lab.check_no_leader()
    lab.one(cmd(1), 3)
    assert lab.n_committed(max(lab.values) + 1) == (0, None)
    # Cut off every server: nothing can be agreed and no leader is elected.
    for i in range(3):
        lab.disconnect(i)
    with pytest.raises(LabFailure):
        lab.one(cmd(2), 1, retry=True)
    lab.connect((leader + 1) % 3)
    with pytest.raises(LabFailure):
        lab.check_one_leader()
    # Crash a server: one() that needs all three cannot succeed.
    for i in range(3):
        lab.connect(i)
    lab.crash1(leader)
    with pytest.raises(LabFailure):
        lab.one(cmd(3), 3, retry=False)
