"""fake_slurmd's two runtime helpers: the process stopper and the asyncio loop in a thread."""

from __future__ import annotations

import asyncio
import inspect
import signal
import subprocess
import sys
import threading
import time

import pytest

from fake_slurmd.loop_thread import LoopThread
from fake_slurmd.processes import stop_process

# Prints "ready" once its SIGTERM handler is in place, so the test never signals it too early.
IGNORES_TERM = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); " \
               "time.sleep(60)"


def _python(code: str, stdin: int | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code], stdin=stdin, stdout=subprocess.PIPE, text=True)


def test_stop_process_sends_sigterm_and_reaps() -> None:
    proc = _python("import time; print('ready', flush=True); time.sleep(60)")
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    started = time.monotonic()
    assert stop_process(proc) == -signal.SIGTERM
    assert time.monotonic() - started < 5
    assert proc.returncode == -signal.SIGTERM  # reaped: no zombie left behind


def test_stop_process_kills_what_ignores_sigterm_after_the_grace_period() -> None:
    proc = _python(IGNORES_TERM)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    started = time.monotonic()
    assert stop_process(proc, grace=0.5) == -signal.SIGKILL
    assert 0.4 < time.monotonic() - started < 5


def test_stop_process_asks_first_when_told_how() -> None:
    proc = _python("import sys; sys.stdin.read()", stdin=subprocess.PIPE)
    assert proc.stdin is not None
    started = time.monotonic()
    assert stop_process(proc, grace=10, ask=proc.stdin.close) == 0  # ended by itself, not by a signal
    assert time.monotonic() - started < 5


def test_stop_process_leaves_an_ended_child_alone() -> None:
    proc = _python("raise SystemExit(3)")
    proc.wait(10)
    asked: list[bool] = []
    assert stop_process(proc, ask=lambda: asked.append(True)) == 3
    assert asked == []  # nothing is signalled or asked once the child is reaped: its pid may be another's


async def _answer(value: int) -> int:
    await asyncio.sleep(0)
    return value * 2


async def _fail() -> None:
    raise LookupError("no such thing")


def test_loop_thread_runs_coroutines_on_its_own_thread() -> None:
    with LoopThread("test-loop") as runner:
        assert runner.running
        assert runner.run(_answer(21)) == 42

        async def where() -> str:
            return threading.current_thread().name

        assert runner.run(where()) == "test-loop"
        with pytest.raises(LookupError, match="no such thing"):
            runner.run(_fail())
        assert runner.run(_answer(1)) == 2  # a failed coroutine leaves the loop running
    assert not runner.running


def test_loop_thread_bounds_the_wait_and_refuses_work_once_stopped() -> None:
    runner = LoopThread("test-loop").start()
    started = time.monotonic()
    cancelled = threading.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(TimeoutError):
        runner.run(slow(), timeout=0.2)
    assert time.monotonic() - started < 5
    assert cancelled.wait(5)  # not left running on the loop
    runner.stop()
    runner.stop()  # twice is fine
    coroutine = _answer(1)
    with pytest.raises(RuntimeError, match="not running"):
        runner.run(coroutine)
    assert inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED  # not left to warn "never awaited"


def test_loop_thread_hands_loop_errors_to_its_handler() -> None:
    seen: list[str] = []

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        seen.append(str(context.get("message")))

    with LoopThread("test-loop", handler) as runner:
        async def orphan() -> None:
            asyncio.get_running_loop().call_exception_handler({"message": "lost"})

        runner.run(orphan())
    assert seen == ["lost"]
