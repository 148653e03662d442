"""Typed helpers for tests that ask a slurmd (real or fake) about a connection through slurmproto's client."""

from __future__ import annotations

from collections.abc import Collection
from typing import TypedDict, Unpack

from slurmproto.client import CallerIdResult, callerid
from slurmproto.settings import PayloadChecks

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
    checks: PayloadChecks


def ask_callerid(local: Address, remote: Address, *, port: int, munge_socket: str | None,
                 **options: Unpack[CalleridOptions]) -> CallerIdResult:
    """callerid() for the connection local -> remote (`local` is the job's end, on the node asked)."""
    return callerid(local[0], local[1], remote[0], remote[1], port=port, munge_socket=munge_socket, **options)

