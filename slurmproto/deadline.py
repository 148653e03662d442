"""Bounding calls that cannot be interrupted (libmunge, NSS lookups) by the time a caller has left.

libmunge retries a munged that accepts but never answers for about 10 s, and getpwnam() waits as long
as the user database (LDAP, sssd) does; neither takes a timeout. The call runs in a daemon thread and
the caller waits only for the time left: at the deadline the thread is abandoned (its result dropped,
it ends when the call returns) and the caller gets the error it chose.

Only `_thread` is imported: this is on the PAM hook's per-login path.
"""

from __future__ import annotations

from _thread import TIMEOUT_MAX, allocate_lock, start_new_thread
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

T = TypeVar("T")


def call_within(seconds: float, expired: Callable[[], BaseException], fn: Callable[..., T], *args: Any) -> T:
    """fn(*args), or raise expired() when it has not returned within `seconds` (at once if <= 0)."""
    if seconds <= 0:
        raise expired()
    done = allocate_lock()
    done.acquire()
    outcome: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            outcome.append((True, fn(*args)))
        except BaseException as exc:  # handed to the caller
            outcome.append((False, exc))
        finally:
            done.release()

    try:
        start_new_thread(run, ())
    except RuntimeError:  # no thread to be had (RLIMIT_NPROC): a late answer is better than none
        return fn(*args)
    if not done.acquire(timeout=min(seconds, TIMEOUT_MAX)):
        raise expired()
    ok, value = outcome[0]
    if ok:
        return value  # type: ignore[no-any-return]
    raise value
