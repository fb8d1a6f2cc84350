"""Codec micro-benchmark: ``python -m liferaft.codec.bench``.

Times :func:`encode_message` and :func:`decode_message` on an AppendEntries
of ``entries`` entries of ``size`` bytes each (default: 256 x 100 B), and a
Heartbeat.  Prints the median and minimum over ``rounds`` rounds.
"""

from __future__ import annotations

import argparse
import statistics
import time

from liferaft.core.messages import AppendEntries, Entry, Heartbeat, Message

from ._messages import decode_message, encode_message


def _time_per_call(fn: object, arg: object, n: int) -> float:
    f = fn  # local for speed
    t0 = time.perf_counter()
    for _ in range(n):
        f(arg)  # type: ignore[operator]
    return (time.perf_counter() - t0) / n * 1e6


def _measure_one(msg: Message, rounds: int, per_round: int) -> dict[str, float]:
    buf = encode_message(msg)
    enc = [_time_per_call(encode_message, msg, per_round) for _ in range(rounds)]
    dec = [_time_per_call(decode_message, buf, per_round) for _ in range(rounds)]
    return {
        "encode_us": statistics.median(enc),
        "encode_us_min": min(enc),
        "decode_us": statistics.median(dec),
        "decode_us_min": min(dec),
        "frame_bytes": float(len(buf)),
    }


def measure(entries: int = 256, size: int = 100, rounds: int = 25) -> dict[str, float]:
    """Median/min microseconds per call for an AppendEntries of ``entries`` x ``size`` B."""
    ents = tuple(Entry(1001 + i, 7, bytes([i % 256]) * size) for i in range(entries))
    msg = AppendEntries(7, "n1", "n2", 1000, 7, ents, 990)
    return _measure_one(msg, rounds, per_round=200)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--entries", type=int, default=256)
    p.add_argument("--size", type=int, default=100)
    p.add_argument("--rounds", type=int, default=25)
    a = p.parse_args(argv)
    ae = measure(a.entries, a.size, a.rounds)
    hb = _measure_one(Heartbeat(7, "n1", "n2", 990, b""), a.rounds, per_round=2000)
    for name, r in (
        (f"AppendEntries {a.entries} x {a.size} B", ae),
        ("Heartbeat", hb),
    ):
        total = r["encode_us"] + r["decode_us"]
        print(
            f"{name:<28} {int(r['frame_bytes']):>7} B  "
            f"encode {r['encode_us']:7.1f} us (min {r['encode_us_min']:.1f})  "
            f"decode {r['decode_us']:7.1f} us (min {r['decode_us_min']:.1f})  "
            f"both {total:7.1f} us"
        )


if __name__ == "__main__":
    main()
