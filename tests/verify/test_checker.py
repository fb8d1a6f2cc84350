"""The linearizability checker on known-good and known-bad histories, and
against a brute-force oracle on random small histories."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest

from liferaft.verify import Op, Register, SetModel, check, check_key, load, save
from liferaft.verify.__main__ import main as verify_main

R = Register()
_ids = itertools.count(1)


def op(p: int, f: str, call: float, ret: float | None, inp: object = None, out: object = None,
       status: str = "ok", key: str = "k") -> Op:
    return Op(next(_ids), p, key, f, inp, out, call, ret, status)


def w(p: int, v: str, call: float, ret: float | None, status: str = "ok", key: str = "k") -> Op:
    return op(p, "write", call, ret, v, None, status, key)


def r(p: int, v: str | None, call: float, ret: float, key: str = "k") -> Op:
    return op(p, "read", call, ret, None, v, key=key)


def verdict(ops: list[Op]) -> str:
    return check(ops, R, 5).verdict


# -- known good -------------------------------------------------------------------------


def test_sequential_and_overlapping_histories_are_linearizable() -> None:
    assert verdict([w(1, "a", 0, 1), r(2, "a", 2, 3), w(1, "b", 4, 5), r(2, "b", 6, 7)]) == "yes"
    # A read overlapping a write may see the old or the new value.
    assert verdict([w(1, "a", 0, 1), w(1, "b", 2, 6), r(2, "a", 3, 4)]) == "yes"
    assert verdict([w(1, "a", 0, 1), w(1, "b", 2, 6), r(2, "b", 3, 4)]) == "yes"
    assert verdict([r(1, None, 0, 1)]) == "yes"  # a missing key reads as None
    assert verdict([]) == "yes"


def test_an_indeterminate_write_may_appear_later_or_never() -> None:
    assert verdict([w(1, "a", 0, 1), w(2, "b", 2, None, "info"), r(3, "a", 3, 4),
                    r(3, "b", 10, 11)]) == "yes"
    assert verdict([w(1, "a", 0, 1), w(2, "b", 2, None, "info"), r(3, "a", 10, 11)]) == "yes"


def test_a_failed_write_is_ignored() -> None:
    assert verdict([w(1, "a", 0, 1), w(2, "b", 2, 3, "fail"), r(3, "a", 4, 5)]) == "yes"


def test_cas_and_delete() -> None:
    h = [
        w(1, "a", 0, 1),
        op(2, "cas", 2, 3, ("a", "b"), True),
        op(3, "cas", 4, 5, ("a", "c"), False),
        r(1, "b", 6, 7),
        op(2, "delete", 8, 9, None, True),
        op(2, "delete", 10, 11, None, False),
        r(1, None, 12, 13),
    ]
    assert verdict(h) == "yes"


def test_keys_are_checked_apart() -> None:
    h = [w(1, "a", 0, 1, key="x"), w(1, "a", 0, 1, key="y"), r(2, "a", 2, 3, key="x"),
         r(2, None, 2, 3, key="z")]
    res = check(h, R)
    assert res.verdict == "yes" and [k.key for k in res.keys] == ["x", "y", "z"]


# -- known bad --------------------------------------------------------------------------


def test_a_stale_read_after_a_completed_write() -> None:
    h = [w(1, "a", 0, 1), w(1, "b", 2, 3), r(2, "a", 4, 5)]
    res = check(h, R)
    assert res.verdict == "NO"
    text = res.explain()
    assert "key 'k'" in text and "read" in text and "'b'" in text  # it names the state


def test_concurrent_writes_read_in_two_orders() -> None:
    """Two writes overlap; one reader sees a then b, another b then a."""
    h = [
        w(1, "a", 0, 10),
        w(2, "b", 0, 10),
        r(3, "a", 11, 12), r(3, "b", 13, 14),
        r(4, "b", 11, 12), r(4, "a", 13, 14),
    ]
    assert verdict(h) == "NO"


def test_a_cas_that_contradicts_an_earlier_read() -> None:
    h = [w(1, "a", 0, 1), r(2, "a", 2, 3), op(3, "cas", 4, 5, ("z", "c"), True)]
    assert verdict(h) == "NO"
    h = [w(1, "a", 0, 1), r(2, "a", 2, 3), op(3, "cas", 4, 5, ("a", "c"), False)]
    assert verdict(h) == "NO"


def test_a_lost_acknowledged_write() -> None:
    h = [w(1, "a", 0, 1), w(2, "b", 2, 3), r(3, "a", 10, 11), r(3, "a", 12, 13)]
    assert verdict(h) == "NO"
    # ... and a value nobody wrote.
    assert verdict([w(1, "a", 0, 1), r(2, "x", 2, 3)]) == "NO"


def test_an_indeterminate_write_cannot_appear_before_its_call() -> None:
    h = [r(1, "b", 0, 1), w(2, "b", 2, None, "info")]
    assert verdict(h) == "NO"


def test_set_model_lost_add() -> None:
    s = SetModel()
    good = [op(1, "add", 0, 1, 1, key="s"), op(2, "add", 0, 2, 2, key="s"),
            op(3, "read", 3, 4, None, [1, 2], key="s")]
    assert check(good, s).verdict == "yes"
    bad = [op(1, "add", 0, 1, 1, key="s"), op(3, "read", 3, 4, None, [], key="s")]
    assert check(bad, s).verdict == "NO"
    maybe = [op(1, "add", 0, None, 1, status="info", key="s"),
             op(3, "read", 3, 4, None, [], key="s"), op(3, "read", 5, 6, None, [1], key="s")]
    assert check(maybe, s).verdict == "yes"


def test_budget_gives_unknown_not_ok() -> None:
    """n overlapping writes, then reads of every value: not linearizable, but
    refuting it takes ~2^n configurations (the known hard case of the
    search).  Small n: a definite NO; large n within a short budget: unknown,
    never ok."""
    def hist(n: int) -> list[Op]:
        h = [w(i, str(i), 0, 100) for i in range(n)]
        return h + [r(200 + i, str(i), 101 + 2 * i, 102 + 2 * i) for i in range(n)]

    assert check_key("k", hist(8), R, budget=10).verdict == "fail"
    res = check_key("k", hist(30), R, budget=0.2)
    assert res.verdict == "unknown" and "budget" in res.explanation
    assert check(hist(30), R, budget_per_key=0.2).verdict == "unknown"


# -- an oracle ----------------------------------------------------------------------------


def brute_force(ops: list[Op]) -> bool:
    """Try every order and subset of indeterminate ops (small histories only)."""
    ops = [o for o in ops if o.status != "fail"]
    must = [o for o in ops if o.status == "ok"]
    maybe = [o for o in ops if o.status == "info"]
    for k in range(len(maybe) + 1):
        for chosen in itertools.combinations(maybe, k):
            seq = must + list(chosen)
            for perm in itertools.permutations(seq):
                ok = True
                for i, a in enumerate(perm):
                    for b in perm[i + 1 :]:
                        if b.status == "ok" and b.ret is not None and b.ret < a.call:
                            ok = False  # b returned before a was called
                            break
                    if not ok:
                        break
                if not ok:
                    continue
                st = R.init()
                for a in perm:
                    st = R.step(st, a)
                    if st is None:
                        break
                else:
                    return True
    return False


@pytest.mark.parametrize("seed", range(200))
def test_agrees_with_brute_force_on_random_histories(seed: int) -> None:
    rng = random.Random(seed)
    ops = []
    for i in range(rng.randint(1, 6)):
        call = rng.uniform(0, 10)
        ret = call + rng.uniform(0, 4)
        kind = rng.random()
        v = rng.choice("ab")
        if kind < 0.4:
            status = rng.choice(["ok", "ok", "info", "fail"])
            ops.append(op(i, "write", call, ret, v, None, status))
        elif kind < 0.55:
            ops.append(op(i, "cas", call, ret, (v, rng.choice("ab")), rng.random() < 0.5))
        elif kind < 0.65:
            ops.append(op(i, "delete", call, ret, None, rng.random() < 0.5))
        else:
            ops.append(op(i, "read", call, ret, None, rng.choice(["a", "b", None])))
    want = "yes" if brute_force(ops) else "NO"
    assert verdict(ops) == want, "\n".join(o.brief() for o in ops)


def test_save_load_and_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    h = [w(1, "a", 0, 1), op(2, "cas", 2, 3, ("a", "b"), True), w(3, "c", 4, None, "info"),
         r(4, "b", 5, 6)]
    path = tmp_path / "h.json"
    save(h, path)
    assert load(path) == h
    assert verify_main([str(path)]) == 0
    assert "linearizable=yes" in capsys.readouterr().out
    save([w(1, "a", 0, 1), r(2, "z", 2, 3)], path)
    assert verify_main([str(path)]) == 1
    out = capsys.readouterr().out
    assert "NOT LINEARIZABLE" in out and "linearizable=NO" in out
    (tmp_path / "bad.json").write_text("{")
    assert verify_main([str(tmp_path / "bad.json")]) == 2
