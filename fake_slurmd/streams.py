"""Closing an asyncio stream so that nothing is left for the loop to report."""

from __future__ import annotations

import asyncio


async def finish(writer: asyncio.StreamWriter, timeout: float) -> None:
    """Close after flushing what is left (a refusal's -1); a peer that reads nothing gets a reset.

    Awaiting wait_closed() also retrieves the reset a peer may have caused: left alone, that exception sits
    in the stream protocol's close future, and when the garbage collector frees the pair in the wrong order
    asyncio logs "Future exception was never retrieved"."""
    writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), timeout)
    except (OSError, asyncio.CancelledError):  # the reset, a timeout, or the server closing meanwhile
        writer.transport.abort()
