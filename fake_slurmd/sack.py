"""The simulated node's sack socket: auth/slurm tokens for processes that cannot read the node's key.

One request per connection (slurmproto.sack has the format). CREATE signs the payload for the asker,
whose uid and gid come from SO_PEERCRED, with context "sack"; VERIFY checks a token for the asker's uid
and answers rc 0, or on failure rc 0xFFFFFFFF, or nothing where the release's row says a failed VERIFY
is closed on (sack_verify_silent).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
from collections.abc import Callable

from fake_slurmd.behaviour import release_for
from fake_slurmd.streams import finish
from slurmproto.errors import TokenError
from slurmproto.sack import SACK_CREATE, SACK_VERIFY
from slurmproto.signers import short_hostname
from slurmproto.slurmauth import KeyRing, sign, verify
from slurmproto.versions import Release

MAX_SACK_REQUEST = 64 * 1024
"""A request announcing a longer body is closed on, unread."""
VERIFY_FAILED = 0xFFFFFFFF

Log = Callable[..., None]


class SackServer:
    """Serves the sack socket at `path` (mode 0777, as slurmd makes it) with the node's keys."""

    def __init__(self, path: str, keys: KeyRing, *, release: Release | None = None, cluster: str | None = None,
                 timeout: float = 10.0, log: Log | None = None) -> None:
        self.path, self.keys, self.release, self.cluster, self.timeout = path, keys, release, cluster, timeout
        self.log: Log = log or (lambda *a, **k: None)
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._server = await asyncio.start_unix_server(self._client, path=self.path, limit=MAX_SACK_REQUEST)
        os.chmod(self.path, 0o777)  # every local user may ask, as with slurmd's own socket
        self.log("sack listen", path=self.path)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            sock: socket.socket = writer.get_extra_info("socket")
            _, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                               struct.calcsize("3i")))
            version, length, op = struct.unpack(">HII", await asyncio.wait_for(reader.readexactly(10),
                                                                                self.timeout))
            if not 8 <= length <= MAX_SACK_REQUEST:
                self.log("sack closed", level="warning", uid=uid, reason=f"request length {length}")
                return
            body = await asyncio.wait_for(reader.readexactly(length - 8), self.timeout)
            reply = self.answer(version, op, body, uid, gid)
            if reply is not None:
                writer.write(reply)
                await asyncio.wait_for(writer.drain(), self.timeout)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError, OSError) as exc:
            self.log("sack dropped", reason=type(exc).__name__)
        finally:
            await finish(writer, self.timeout)

    def answer(self, version: int, op: int, body: bytes, uid: int, gid: int) -> bytes | None:
        """The reply to one request from `uid`/`gid` (None: close without one)."""
        release = self.release or release_for(version)
        if release is None or not release.auth_slurm.available:
            return None
        if op == SACK_CREATE:
            return self._create(release, body, uid, gid)
        if op == SACK_VERIFY:
            return self._verify(release, body, uid)
        return None

    def _create(self, release: Release, body: bytes, uid: int, gid: int) -> bytes:
        if len(body) < 8:
            return struct.pack(">I", 0)
        r_uid, size = struct.unpack(">II", body[:8])
        payload = body[8:8 + size]
        if len(payload) != size:
            return struct.pack(">I", 0)
        token = sign(payload, self.keys.default, uid=uid, gid=gid, host=short_hostname(), ruid=r_uid,
                     ver=release.protocol_version, cluster=self.cluster, context="sack")
        data = token.encode("ascii") + b"\0"
        self.log("sack create", level="debug", uid=uid, r_uid=r_uid)
        return struct.pack(">I", len(data)) + data

    def _verify(self, release: Release, body: bytes, uid: int) -> bytes | None:
        size = int.from_bytes(body[:4], "big") if len(body) >= 4 else 0
        text = body[4:4 + size].removesuffix(b"\0")
        try:
            if len(body) < 4 or len(text) + 1 != size:
                raise TokenError("VERIFY body is not one packstr")
            verify(text.decode("ascii", "replace"), self.keys, verifier_uid=uid)
        except TokenError as exc:
            self.log("sack verify", uid=uid, verdict=f"refused: {exc}")
            return None if release.auth_slurm.sack_verify_silent else struct.pack(">I", VERIFY_FAILED)
        self.log("sack verify", level="debug", uid=uid, verdict="ok")
        return struct.pack(">I", 0)
