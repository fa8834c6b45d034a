"""Talks to a channels server with the Python `websockets` client: echo, then a clean close.

Usage: python ws_close.py ws://HOST:PORT/PATH CODE
Prints one JSON line: what was echoed, and the close frame the server sent back (None if none).
"""

import asyncio
import json
import sys

from websockets.asyncio.client import connect


async def main(url: str, code: int) -> None:
    async with connect(url, close_timeout=3) as ws:
        await ws.send("hello from python")
        echoed = await asyncio.wait_for(ws.recv(), 5)
        await ws.close(code, "bye")
        received = ws.protocol.close_rcvd
        print(json.dumps({
            "echoed": echoed,
            "close_rcvd": None if received is None else {"code": received.code, "reason": received.reason},
            "close_code": ws.close_code,
        }))


asyncio.run(main(sys.argv[1], int(sys.argv[2])))
