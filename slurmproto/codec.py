"""Frames: u32 BE length prefix, header, optional auth section, body. No sockets here.

`encode_frame` turns a message into bytes; `decode_frame` turns one frame into a typed `Frame`;
`Decoder` is fed a byte stream in pieces and hands out whole frames. The length prefix counts
everything after itself; the header's body_length counts only the body.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from construct import ConstructError

from slurmproto.auth import AUTH, Credential, payload_hash
from slurmproto.constants import MAX_MSG_SIZE, AuthPlugin, HashType, HeaderFlags
from slurmproto.errors import (
    HttpReply,
    InsaneMessageLength,
    MalformedMessage,
    ProtocolError,
    TrailingBytes,
    TruncatedFrame,
    UnknownMessageType,
)
from slurmproto.header import HEADER, Forward, Header
from slurmproto.messages import Message, message_class
from slurmproto.primitives import SlurmAddr

PREFIX = 4
HTTP_MAGIC = b"HTTP"
MAX_HTTP_LINE = 4096


@dataclass(frozen=True)
class Frame:
    """One decoded message."""

    header: Header
    auth: Credential | None
    body: bytes
    """The raw body: what the credential's payload hash covers."""
    message: Message
    auth_length: int = 0
    """Bytes of the auth section (plugin id and credential)."""
    size: int = 0
    """Bytes of the whole frame, length prefix included."""

    @property
    def version(self) -> int:
        return self.header.version


@dataclass
class FrameOptions:
    """How strictly to read, and how much to accept."""

    max_length: int = MAX_MSG_SIZE
    nul_check: bool = True
    """Reject a packstr without its NUL (23.02+ receivers); False reads like 22.05."""
    exact_body_length: bool = True
    """body_length must equal what follows the auth section (22.05.11, 23.02.7, 23.11.1 and later);
    False tolerates trailing bytes like 22.05.8."""


def encode_frame(message: Message, version: int, *, credential: str | None = None,
                 plugin_id: int = AuthPlugin.AUTH_MUNGE, flags: int = 0,
                 forward: Forward | None = None, orig_addr: SlurmAddr | None = None,
                 body: bytes | None = None) -> bytes:
    """The whole frame. Without a credential the header gets SLURM_NO_AUTH_CRED and no auth section.

    `body` overrides the packed body (for tests that need a frame whose body lies).
    """
    if body is None:
        body = message.encode(version)
    if credential is None:
        flags |= HeaderFlags.SLURM_NO_AUTH_CRED
    header = Header(version, flags, message.MSG_TYPE, len(body), forward or Forward(),
                    [], orig_addr or SlurmAddr())
    parts = [HEADER.build(header, version=version)]
    if credential is not None:
        parts.append(AUTH.build(Credential(plugin_id, credential), version=version))
    parts.append(body)
    payload = b"".join(parts)
    return len(payload).to_bytes(4, "big") + payload


def sign_and_encode(message: Message, version: int, sign: Callable[[bytes], bytes | str],
                    hash_type: HashType = HashType.K12, **options: object) -> bytes:
    """Pack the body, hash it into a payload, have `sign` turn the payload into a credential
    (e.g. MungeContext.encode), and frame it all."""
    body = message.encode(version)
    credential = sign(payload_hash(body, message.MSG_TYPE, hash_type))
    if isinstance(credential, bytes):
        credential = credential.decode("ascii")
    return encode_frame(message, version, credential=credential, body=body, **options)  # type: ignore[arg-type]


def read_header(data: bytes, options: FrameOptions) -> tuple[Header, int]:
    """The header (parsed in its own version) and where it ends. Frames are given WITHOUT the prefix."""
    if len(data) < 2:
        raise TruncatedFrame(f"frame of {len(data)} bytes has no header")
    stream = io.BytesIO(data)
    try:
        header: Header = HEADER.parse_stream(stream, version=int.from_bytes(data[:2], "big"),
                                             nul_check=options.nul_check)
    except ProtocolError:
        raise
    except ConstructError as exc:
        raise MalformedMessage(f"header: {exc}") from None
    return header, stream.tell()


def read_auth(data: bytes, offset: int, header: Header, options: FrameOptions) -> tuple[Credential | None, int]:
    """The auth section after the header (none when the header says SLURM_NO_AUTH_CRED), and its end."""
    if not header.has_auth:
        return None, offset
    stream = io.BytesIO(data)
    stream.seek(offset)
    try:
        auth: Credential = AUTH.parse_stream(stream, version=header.version, nul_check=options.nul_check)
    except ProtocolError:
        raise
    except ConstructError as exc:
        raise MalformedMessage(f"auth section: {exc}") from None
    return auth, stream.tell()


def read_body(data: bytes, offset: int, header: Header, options: FrameOptions) -> bytes:
    """The body_length bytes after the auth section, checked against what the frame holds."""
    remaining = len(data) - offset
    if header.body_length > remaining:
        raise MalformedMessage(
            f"body_length {header.body_length} is longer than the {remaining} bytes after the header")
    if header.body_length < remaining and options.exact_body_length:
        raise TrailingBytes(
            f"{remaining - header.body_length} bytes after the body (body_length {header.body_length})")
    return data[offset:offset + header.body_length]


def decode_frame(data: bytes, options: FrameOptions | None = None) -> Frame:
    """Decode one frame given WITHOUT its length prefix: header, auth section, body, typed message."""
    options = options or FrameOptions()
    header, header_end = read_header(data, options)
    auth, body_start = read_auth(data, header_end, header, options)
    body = read_body(data, body_start, header, options)
    try:
        cls = message_class(header.msg_type)
    except UnknownMessageType as exc:
        exc.header = header  # type: ignore[attr-defined]
        raise
    message = cls.decode(body, header.version, nul_check=options.nul_check)
    return Frame(header, auth, body, message, body_start - header_end, PREFIX + len(data))


class Decoder:
    """Incremental: `feed()` bytes as they arrive, take frames from `next_frame()` or by iterating.

    The length prefix is checked against `max_length` before anything is buffered for it, and bytes
    are kept only as they arrive, so a lying prefix costs nothing. A peer that answers in HTTP (as
    25.11+ slurmd does to versions it does not speak) raises HttpReply.
    """

    def __init__(self, options: FrameOptions | None = None) -> None:
        self.options = options or FrameOptions()
        self._buffer = bytearray()
        self._eof = False

    def feed(self, data: bytes) -> None:
        """Add bytes as they arrive."""
        self._buffer += data

    def feed_eof(self) -> None:
        """The peer closed the stream: a partial frame is now an error."""
        self._eof = True

    @property
    def pending(self) -> int:
        """Bytes received but not yet handed out as a frame."""
        return len(self._buffer)

    def wanted(self) -> int:
        """How many more bytes the current frame needs (4 when nothing is known yet)."""
        if len(self._buffer) < PREFIX:
            return PREFIX - len(self._buffer)
        return max(0, PREFIX + self._length() - len(self._buffer))

    def _length(self) -> int:
        head = bytes(self._buffer[:PREFIX])
        if head == HTTP_MAGIC:
            self._raise_http()
        length = int.from_bytes(head, "big")
        if length > self.options.max_length:
            raise InsaneMessageLength(
                f"length prefix {length} exceeds the limit of {self.options.max_length} bytes")
        return length

    def _raise_http(self) -> None:
        end = self._buffer.find(b"\n")
        if end < 0 and not self._eof and len(self._buffer) < MAX_HTTP_LINE:
            raise _NeedMore
        line = bytes(self._buffer[: end if end >= 0 else MAX_HTTP_LINE])
        raise HttpReply(line.decode("ascii", "replace").strip())

    def next_payload(self) -> bytes | None:
        """The bytes of the next whole frame after its length prefix, not decoded; None until they arrive.

        At EOF inside a frame: TruncatedFrame.
        """
        try:
            if len(self._buffer) >= PREFIX:
                length = self._length()
                if len(self._buffer) >= PREFIX + length:
                    data = bytes(self._buffer[PREFIX:PREFIX + length])
                    del self._buffer[:PREFIX + length]
                    return data
        except _NeedMore:
            return None
        if self._eof and self._buffer:
            raise TruncatedFrame(f"stream ended inside a frame ({len(self._buffer)} bytes of it received)")
        return None

    def next_frame(self) -> Frame | None:
        """A whole decoded frame, or None until more bytes arrive."""
        data = self.next_payload()
        return None if data is None else decode_frame(data, self.options)

    def __iter__(self) -> Iterator[Frame]:
        while (frame := self.next_frame()) is not None:
            yield frame


class _NeedMore(Exception):
    pass


def decode_stream(data: bytes, options: FrameOptions | None = None) -> list[Frame]:
    """Every frame in a complete byte string (e.g. a captured TCP payload)."""
    decoder = Decoder(options)
    decoder.feed(data)
    decoder.feed_eof()
    return list(decoder)
