"""Child of test_machine_restore.py: restore a checkpoint, dying at one step.

argv: data dir, checkpoint file, step.  The step is a
:func:`liferaft.kv.mvcc.storedir.crash_point` name, ``receiving`` (half the
checkpoint received) or ``none``; at it the process exits at once
(``os._exit``: no cleanup, no finally blocks, like a kill).
"""

import os
import sys
from collections.abc import Iterator
from pathlib import Path

from liferaft.kv import machine
from liferaft.kv.mvcc import storedir

DIED = 17


def main() -> None:
    path, source, step = sys.argv[1], sys.argv[2], sys.argv[3]

    def at(step_: str, /) -> None:
        if step_ == step:
            os._exit(DIED)

    storedir.crash_point = at  # every step's crash_point is called through the module
    data = Path(source).read_bytes()

    def chunks() -> Iterator[bytes]:
        yield data[: len(data) // 2]
        at("receiving")
        yield data[len(data) // 2 :]

    m = machine.KVMachine(path)
    m.restore(chunks())
    m.close()


if __name__ == "__main__":
    main()
