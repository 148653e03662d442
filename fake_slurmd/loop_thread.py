"""An asyncio event loop in a background thread, driven from synchronous code (the one such runner)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Self, TypeVar

T = TypeVar("T")
ExceptionHandler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object]


class LoopThread:
    """`with LoopThread("name") as runner: runner.run(coroutine)`: the coroutine runs on the thread's loop,
    the caller waits for its result (or its exception) at most `timeout` seconds."""

    def __init__(self, name: str, exception_handler: ExceptionHandler | None = None) -> None:
        self.name = name
        self._handler = exception_handler
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._loop is not None

    def start(self) -> Self:
        ready = threading.Event()
        loop = asyncio.new_event_loop()
        if self._handler is not None:
            loop.set_exception_handler(self._handler)
        self._loop = loop
        self._thread = threading.Thread(target=self._serve, args=(loop, ready), name=self.name, daemon=True)
        self._thread.start()
        ready.wait()
        return self

    @staticmethod
    def _serve(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        loop.run_forever()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        """Run `coroutine` on the loop and return its result; raises what it raised, or TimeoutError (and
        cancels it) when it takes longer than `timeout` seconds."""
        if self._loop is None:
            coroutine.close()
            raise RuntimeError(f"{self.name}: the loop is not running")
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def stop(self, timeout: float = 10) -> None:
        """Stop the loop and close it. Safe to call twice."""
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        if not thread.is_alive():
            loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
