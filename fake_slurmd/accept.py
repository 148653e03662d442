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

Handler = Callable[[socket.socket, Any], Coroutine[Any, Any, None]]


async def accept_forever(listener: socket.socket, handle: Handler, tasks: set[asyncio.Task[None]],
                         on_error: Callable[[OSError], None],
                         on_crash: Callable[[BaseException], None] | None = None) -> None:
    """Accept connections on a non-blocking listener and run `handle(sock, address)` for each as a task in
    `tasks`. The address is accept()'s: a client that has already reset has no getpeername() any more.

    `on_error` hears of accept failures at most once a second while they last; `on_crash` of an exception
    a handler let escape (its task's exception is always retrieved, so asyncio never logs a traceback).
    """
    loop = asyncio.get_running_loop()
    last_report = -1.0

    def finished(task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        exc = None if task.cancelled() else task.exception()
        if exc is not None and on_crash is not None:
            on_crash(exc)

    while True:
        try:
            sock, address = await loop.sock_accept(listener)
        except OSError as exc:
            if exc.errno in (errno.ECONNABORTED, errno.EINTR, errno.EAGAIN):
                continue
            if loop.time() - last_report >= 1.0:
                on_error(exc)
                last_report = loop.time()
            await asyncio.sleep(ACCEPT_RETRY_DELAY)
            continue
        task = loop.create_task(handle(sock, address))
        tasks.add(task)
        task.add_done_callback(finished)
