"""The auth section and the credential payload that binds a credential to its message body.

Auth section: u32 BE plugin id, then the plugin's data: for auth/munge (101) a packstr holding the
MUNGE credential ("MUNGE:...:"), for auth/slurm (103) a packstr holding a JWT (slurmproto.slurmauth).
Since 22.05 the credential's payload is a hash of the body: `02` + KangarooTwelve(body, customization =
msg_type as 2 BE bytes), 32 bytes. Receivers also accept an empty payload and the 3-byte "no hash" form
`01` + msg_type (unless CommunicationParameters has block_null_hash / block_zero_hash), and, from
24.05, `04` + SHA3-256(body + msg_type).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from construct import Construct, Int32ub, Struct

from slurmproto.constants import AuthPlugin, HashType
from slurmproto.errors import HashMismatch, UnknownAuthPlugin
from slurmproto.k12 import kangarootwelve
from slurmproto.primitives import Typed, packstr


@dataclass(frozen=True)
class Credential:
    plugin_id: int
    credential: str | None
    """The MUNGE credential or the auth/slurm token (without its NUL)."""

    @property
    def plugin(self) -> str:
        return AuthPlugin(self.plugin_id).plugin_name


PACKSTR_PLUGINS = frozenset({AuthPlugin.AUTH_MUNGE, AuthPlugin.AUTH_SLURM})
"""The plugins whose data is one packstr; any other id is an error."""


class _PackedCredential(Construct):  # type: ignore[misc]
    """The plugin data: auth/munge's or auth/slurm's packstr."""

    def _parse(self, stream: Any, context: Any, path: str) -> str | None:
        if context.plugin_id not in PACKSTR_PLUGINS:
            raise UnknownAuthPlugin(context.plugin_id)
        return packstr._parsereport(stream, context, path)  # type: ignore[no-any-return]

    def _build(self, obj: str | None, stream: Any, context: Any, path: str) -> str | None:
        if context.plugin_id not in PACKSTR_PLUGINS:
            raise UnknownAuthPlugin(context.plugin_id)
        return packstr._build(obj, stream, context, path)  # type: ignore[no-any-return]


AUTH = Typed(Credential, Struct(
    "plugin_id" / Int32ub,
    "credential" / _PackedCredential(),
))


def k12(body: bytes, msg_type: int) -> bytes:
    """KangarooTwelve(body, customization = msg_type as u16 BE), 32 bytes."""
    return kangarootwelve(body, msg_type.to_bytes(2, "big"), 32)


def payload_hash(body: bytes, msg_type: int, kind: HashType = HashType.K12) -> bytes:
    """The credential payload a sender puts in its credential."""
    if kind == HashType.K12:
        return b"\x02" + k12(body, msg_type)
    if kind == HashType.NONE:
        return b"\x01" + msg_type.to_bytes(2, "big")
    if kind == HashType.SHA3:
        import hashlib

        return b"\x04" + hashlib.sha3_256(body + msg_type.to_bytes(2, "big")).digest()
    raise ValueError(f"no hash plugin for type {kind}")


def check_payload(payload: bytes, body: bytes, msg_type: int, *, block_null: bool = False,
                  block_zero: bool = False) -> HashType | None:
    """Accept a payload as a receiver does; returns its hash type (None for an empty payload).

    A payload that does not match the body raises HashMismatch (Slurm answers 5003).
    """
    if not payload:
        if block_null:
            raise HashMismatch("credential has no payload hash (block_null_hash)")
        return None
    try:
        kind = HashType(payload[0])
    except ValueError:
        raise HashMismatch(f"credential payload has unknown hash type {payload[0]}") from None
    if kind == HashType.NONE and block_zero:
        raise HashMismatch("credential payload has no hash (block_zero_hash)")
    if kind == HashType.SHA256:
        raise HashMismatch("credential payload hash type 3 (sha256) has no plugin")
    if payload != payload_hash(body, msg_type, kind):
        raise HashMismatch(f"credential payload ({kind.name}) does not match the message body")
    return kind
