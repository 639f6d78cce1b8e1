"""Serve a directory of photos the way a shop's image CDN does: HTTP/1.1 keep-alive.

`python -m http.server` is no stand-in for one: it closes every connection
and listens with a backlog of 5, so 16 concurrent fetches overflow the
accept queue and the dropped connections retry after a second (the kernel's
SYN timeout), which the embed benchmark then measured as the pipeline's loss.

Usage: python bench/photo_server.py DIRECTORY   (prints "port N" once listening)
"""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web


async def serve(directory: str) -> None:
    app = web.Application()
    app.router.add_static("/", directory)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, backlog=1024).start()
    print(f"port {runner.addresses[0][1]}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))
