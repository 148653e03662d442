"""Stopping the child processes we started: the one stopper for fake_slurmd and the test support."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from typing import Any


def stop_process(proc: subprocess.Popen[Any], grace: float = 10.0, *, ask: Callable[[], None] | None = None) -> int:
    """Stop a child of ours and reap it; its exit status.

    Only a `Popen` we hold is stopped, never a pid found by name: Popen signals nothing once the child is
    reaped, so a reused pid is never hit. `ask` asks it to end (default SIGTERM; e.g. closing its stdin);
    a child still running `grace` seconds later gets SIGKILL.
    """
    if proc.poll() is None:
        if ask is None:
            proc.send_signal(signal.SIGTERM)
        else:
            ask()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode
