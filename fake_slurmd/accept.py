"""An accept loop for the fake's listeners (TCP and unix) that survives running out of descriptors.

Not asyncio's own server: CPython 3.11's keeps accepting after EMFILE, logging a traceback per pending
client on every tick of a flood. Here the loop waits a moment and retries; pending clients wait in the
listen backlog.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable, Coroutine
from typing import Any

ACCEPT_RETRY_DELAY = 0.1


async def accept_forever(listener: socket.socket, handle: Callable[[socket.socket], Coroutine[Any, Any, None]],
                         tasks: set[asyncio.Task[None]], on_error: Callable[[OSError], None]) -> None:
    """Accept connections on a non-blocking listener and run `handle(sock)` for each as a task in `tasks`.

    `on_error` hears of accept failures at most once a second while they last.
    """
    loop = asyncio.get_running_loop()
    last_report = -1.0
    while True:
        try:
            sock, _ = await loop.sock_accept(listener)
        except OSError as exc:
            if exc.errno in (errno.ECONNABORTED, errno.EINTR, errno.EAGAIN):
                continue
            if loop.time() - last_report >= 1.0:
                on_error(exc)
                last_report = loop.time()
            await asyncio.sleep(ACCEPT_RETRY_DELAY)
            continue
        task = loop.create_task(handle(sock))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
