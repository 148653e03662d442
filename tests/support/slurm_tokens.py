"""auth/slurm frames (auth plugin 103, an HS256 JWT) read with plain Python, for the live and golden tests.

An independent reader, kept apart from slurmproto's own (codec + slurmauth, which tests/test_live_tokens.py
checks on the same frames): `read_auth_slurm_frame` is the one function the tests call for plugin-103
frames. The header is read with slurmproto.codec (it does not depend on the auth plugin); the auth section
and the token by hand: u32 plugin id, packstr (u32 length counting a NUL, the token, the NUL), then the body.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from slurmproto.codec import FrameOptions, read_header
from slurmproto.header import Header

AUTH_SLURM = 103


@dataclass(frozen=True)
class TokenFrame:
    """One frame whose auth section holds an auth/slurm token."""

    header: Header
    plugin_id: int
    token: str
    body: bytes

    @property
    def parts(self) -> list[str]:
        return self.token.split(".")

    @property
    def jwt_header(self) -> dict[str, Any]:
        return _json_part(self.parts[0])

    @property
    def claims(self) -> dict[str, Any]:
        return _json_part(self.parts[1])

    def signed_by(self, key: bytes) -> bool:
        """Whether the signature is HMAC-SHA256, keyed with `key`, of "<b64 header>.<b64 claims>" as sent."""
        signing_input = ".".join(self.parts[:2]).encode("ascii")
        expected = hmac.new(key, signing_input, hashlib.sha256).digest()
        return hmac.compare_digest(expected, b64url_decode(self.parts[2]))


def b64url_decode(text: str) -> bytes:
    """base64url without padding, as JWTs carry it (a bad character is an error, not skipped)."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _json_part(text: str) -> dict[str, Any]:
    value = json.loads(b64url_decode(text))
    if not isinstance(value, dict):
        raise ValueError(f"JWT part is not a JSON object: {value!r}")
    return value


def read_auth_slurm_frame(frame: bytes) -> TokenFrame:
    """A frame given WITH its u32 length prefix, carrying an auth section of plugin 103."""
    data = frame[4:]
    if int.from_bytes(frame[:4], "big") != len(data):
        raise ValueError(f"length prefix {int.from_bytes(frame[:4], 'big')} but {len(data)} bytes follow")
    header, at = read_header(data, FrameOptions())
    plugin_id = int.from_bytes(data[at:at + 4], "big")
    if plugin_id != AUTH_SLURM:
        raise ValueError(f"auth plugin {plugin_id}, not auth/slurm ({AUTH_SLURM})")
    length = int.from_bytes(data[at + 4:at + 8], "big")
    packed = data[at + 8:at + 8 + length]
    if length == 0 or len(packed) != length or packed[-1:] != b"\0":
        raise ValueError(f"token packstr of length {length} is cut short or lacks its NUL")
    body = data[at + 8 + length:]
    if len(body) != header.body_length:
        raise ValueError(f"body of {len(body)} bytes, header says {header.body_length}")
    return TokenFrame(header, plugin_id, packed[:-1].decode("ascii"), body)


def auth_plugin_of(frame: bytes) -> int | None:
    """The auth plugin id of a frame given with its prefix (None: the header says no auth section)."""
    header, at = read_header(frame[4:], FrameOptions())
    return int.from_bytes(frame[4 + at:8 + at], "big") if header.has_auth else None
