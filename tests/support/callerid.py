"""Typed helpers for tests that ask a slurmd (real or fake) about a connection through slurmproto's client."""

from __future__ import annotations

from collections.abc import Collection
from typing import TypedDict, Unpack

from slurmproto.client import Attempt, CallerIdResult, callerid
from slurmproto.errors import Refused

Address = tuple[str, int]


class CalleridOptions(TypedDict, total=False):
    """The keyword arguments of slurmproto.client.callerid a test may set."""

    version: int | None
    start_version: int | None
    munge_ttl: int | None
    connect_timeout: float
    message_timeout: float
    timeout: float | None
    slurmd: str | None
    trusted_uids: Collection[int]


def ask_callerid(local: Address, remote: Address, *, port: int, munge_socket: str,
                 **options: Unpack[CalleridOptions]) -> CallerIdResult:
    """callerid() for the connection local -> remote (`local` is the job's end, on the node asked)."""
    return callerid(local[0], local[1], remote[0], remote[1], port=port, munge_socket=munge_socket, **options)


def refused_attempts(refused: Refused) -> list[Attempt]:
    """The attempts a Refused carries, typed (the error declares them as objects)."""
    attempts = list(refused.attempts)
    assert all(isinstance(a, Attempt) for a in attempts), attempts
    return [a for a in attempts if isinstance(a, Attempt)]
