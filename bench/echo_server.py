"""A tiny asyncio TCP echo server in its own process, for the loopback round
trip that bench/raft_bench.py measures (it announces its port the way the
node processes announce theirs, and exits when its stdin closes)."""

from __future__ import annotations

import asyncio
import json
import sys

import _ctl


async def main() -> None:
    _ctl.exit_with_parent(300.0)

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    sys.stdout.write(json.dumps({"ctl": server.sockets[0].getsockname()[1]}) + "\n")
    sys.stdout.flush()
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
