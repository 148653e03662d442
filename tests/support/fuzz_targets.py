"""What the fuzzer feeds: seed frames, and the four ways this project reads a frame.

Seeds are the captured exchanges of tests/vectors/*.json and frames our encoder makes for every release
(each message type, with and without a credential, with a forward block and a ret_list). Targets:

* ``codec.decode_frame``: the one-shot decoder, on the frame after its length prefix, strict or lenient.
* ``codec.Decoder``: the incremental decoder fed the bytes in pieces; it must agree with decode_stream().
* ``decode``: ``slurm-callerid decode`` as cli.main() runs it, in process (stdin/stdout swapped), on raw
  bytes, hex text or a JSON capture; it must exit 0 or 1, and print JSON when it exits 0.
* ``fake_slurmd``: CalleridServer._serve_one(), the step from request bytes to an answer or a close,
  with a stand-in for munged (credentials ``MUNGE:FUZZ:<uid>:<payload hex>:``), lookups run inline and
  the 10 ms anti-brute-force sleep of the older releases set to 0; every answer must decode.

Allowed errors: slurmproto.errors.SlurmError (codec, decode's frames) and fake_slurmd's Close.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import random
import re
import sys
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any

from slurmproto.auth import AUTH, Credential, payload_hash
from slurmproto.codec import Decoder, FrameOptions, decode_frame, decode_stream, encode_frame
from slurmproto.constants import AF_INET, AF_INET6, NO_VAL, HashType, HeaderFlags
from slurmproto.errors import SlurmError
from slurmproto.header import HEADER, Forward, Header, RetEntry
from slurmproto.messages import (
    JobIdRequest,
    JobIdResponse,
    Message,
    NetworkCallerIdRequest,
    NetworkCallerIdResponse,
    ReturnCode,
)
from slurmproto.primitives import SlurmAddr
from slurmproto.versions import RELEASES, STEP_ID_REPLIES

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
STRICT = FrameOptions(max_length=1 << 20)
LENIENT = FrameOptions(max_length=1 << 20, nul_check=False, exact_body_length=False)
LOOPBACK = b"\x7f\0\0\1" + bytes(12)


class Mismatch(AssertionError):
    """A target broke one of its own promises (not an allowed error, so an escape)."""


# --- seeds ---------------------------------------------------------------------------------------------


def _hex_strings(node: Any, key: str = "") -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _hex_strings(v, k)
    elif isinstance(node, list):
        for item in node:
            if key.endswith("_hex") and isinstance(item, str):
                yield item
            else:
                yield from _hex_strings(item, key)


def vector_frames() -> list[bytes]:
    """Every captured TCP payload of tests/vectors (each starts with its length prefix)."""
    return [bytes.fromhex(h) for path in sorted(VECTORS.glob("*.json"))
            for h in _hex_strings(json.loads(path.read_text()))]


def vector_documents() -> list[bytes]:
    return [path.read_bytes() for path in sorted(VECTORS.glob("*.json"))]


def fuzz_credential(payload: bytes, uid: int = 1000) -> str:
    return f"MUNGE:FUZZ:{uid}:{payload.hex()}:"


def _messages(version: int) -> list[Message]:
    steps = (0, NO_VAL, NO_VAL) if version >= STEP_ID_REPLIES else ()
    v6 = b"\xfe\x80" + bytes(13) + b"\1"
    return [
        NetworkCallerIdRequest(LOOPBACK, LOOPBACK, 40000, 22, AF_INET),
        NetworkCallerIdRequest(v6, v6, 40000, 22, AF_INET6),
        NetworkCallerIdRequest(LOOPBACK, LOOPBACK, 40000, 22, 0),
        JobIdRequest(4242),
        NetworkCallerIdResponse(42, 0, "node1", *steps),
        JobIdResponse(42, 0, *steps),
        ReturnCode(0),
        ReturnCode(1007),
    ]


def _credentials(message: Message, version: int) -> list[str | None]:
    body = message.encode(version)
    return [None, fuzz_credential(payload_hash(body, message.MSG_TYPE)), fuzz_credential(b""),
            fuzz_credential(payload_hash(body, message.MSG_TYPE, HashType.NONE), uid=0)]


def _forwarded(version: int) -> bytes:
    """A reply with a forward block, a ret_list entry and an IPv4 orig_addr, built by hand."""
    message = ReturnCode(0)
    body = message.encode(version)
    flags = int(HeaderFlags.SLURM_PACK_ADDRS)
    header = Header(version, flags, message.MSG_TYPE, len(body), Forward(2, "n[1-2]", 10000, 50, "cred", 1),
                    [RetEntry(0, message.MSG_TYPE, "n1", message)], SlurmAddr(AF_INET, b"\x7f\0\0\1", 6818))
    payload = (HEADER.build(header, version=version)
               + AUTH.build(Credential(101, fuzz_credential(b"")), version=version) + body)
    return len(payload).to_bytes(4, "big") + payload


def encoded_frames() -> list[bytes]:
    """Frames our encoder makes, for every release and message, with and without credentials."""
    frames = []
    for release in RELEASES:
        version = release.protocol_version
        for message in _messages(version):
            for credential in _credentials(message, version):
                frames.append(encode_frame(message, version, credential=credential))
        frames.append(_forwarded(version))
    return frames


def frame_seeds() -> list[bytes]:
    return vector_frames() + encoded_frames()


# --- codec ---------------------------------------------------------------------------------------------


def _options(data: bytes) -> FrameOptions:
    return LENIENT if zlib.crc32(data) & 1 else STRICT


def codec_one_shot(data: bytes) -> str:
    return f"frame {type(decode_frame(data[4:], _options(data)).message).__name__}"


def _outcome(read: Callable[[], list[Any]]) -> tuple[str, list[Any]]:
    try:
        return "ok", read()
    except SlurmError as exc:
        return type(exc).__name__, []


def codec_incremental(data: bytes) -> str:
    """Feed `data` in random pieces, taking frames as they come; the result must equal decode_stream()'s."""
    options = _options(data)
    rng = random.Random(zlib.crc32(data))
    cuts = sorted(rng.randrange(len(data) + 1) for _ in range(rng.randrange(4)))

    def pieces() -> list[Any]:
        decoder = Decoder(options)
        frames = []
        for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
            decoder.feed(data[start:end])
            frames.extend(decoder)
        decoder.feed_eof()
        frames.extend(decoder)
        return frames

    got = _outcome(pieces)
    whole = _outcome(lambda: decode_stream(data, options))
    if got[0] != whole[0] or [f.message for f in got[1]] != [f.message for f in whole[1]]:
        raise Mismatch(f"in pieces {got[0]} {len(got[1])} frames, whole {whole[0]} {len(whole[1])} frames")
    if got[0] != "ok":
        decode_stream(data, options)  # count it under its error
    return f"{len(got[1])} frames"


# --- slurm-callerid decode -----------------------------------------------------------------------------


def decode_seeds() -> list[bytes]:
    return frame_seeds() + vector_documents()


def _decode_input(data: bytes) -> tuple[list[str], bytes]:
    """The command-line flags and the input of one case (the form is chosen by the bytes)."""
    form = zlib.crc32(data) % 5
    if form == 1:
        return ["--hex"], data.hex().encode()
    if form == 2:
        return [], ":".join(f"{b:02x}" for b in data).encode()
    if form == 3:
        return [], json.dumps({"exchanges": [{"request_hex": [data.hex()]}]}).encode()
    if form == 4:
        return ["--lenient"], data
    return [], data


def decode_command(data: bytes) -> str:
    from slurmproto.cli import main

    flags, stdin = _decode_input(data)
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(["decode", "--no-munge", *flags, "-"])
    finally:
        sys.stdin = saved
    if rc not in (0, 1):
        raise Mismatch(f"exit code {rc!r}")
    if rc == 0:
        json.loads(out.getvalue())
    elif not (out.getvalue() or err.getvalue()):
        raise Mismatch("exit code 1 without a word")
    return f"exit {rc}"


# --- fake_slurmd's request path ---------------------------------------------------------------------


class InlineExecutor(Executor):
    """Runs the work at once in the calling thread (no thread hop per case)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the awaiting coroutine
            future.set_exception(exc)
        return future


def fuzz_munge_decode(credential: str) -> Any:
    """munged's decode for MUNGE:FUZZ credentials; anything else is refused as a real munged would."""
    from slurmproto.munge import BadCredFormat, Decoded

    parts = credential.split(":")
    try:
        if len(parts) != 5 or parts[:2] != ["MUNGE", "FUZZ"] or parts[4]:
            raise ValueError(credential)
        uid = int(parts[2])
        if not 0 <= uid < 2**32:
            raise ValueError(uid)
        return Decoded(bytes.fromhex(parts[3]), uid, uid)
    except ValueError:
        raise BadCredFormat("Invalid credential format") from None


def unknown_af_request() -> bytes:
    """A well-signed REQUEST_NETWORK_CALLERID with af 0 (22.05), neither AF_INET nor AF_INET6."""
    message = NetworkCallerIdRequest(LOOPBACK, LOOPBACK, 40000, 22, 0)
    version = RELEASES[0].protocol_version
    credential = fuzz_credential(payload_hash(message.encode(version), message.MSG_TYPE))
    return encode_frame(message, version, credential=credential)


class FakeTarget:
    """One CalleridServer and one event loop for a whole run; `close()` when done."""

    def __init__(self) -> None:
        from fake_slurmd import server
        from fake_slurmd.scenario import NodeSpec

        self.server_module = server
        self.loop = asyncio.new_event_loop()
        self.node = NodeSpec("node1", "127.0.0.1", 6818)
        self.server = _fuzz_server(server)
        self.saved = server.behaviour_of  # the same rules, without the refusal's pause
        server.behaviour_of = lambda release: self.saved(release)._replace(refusal_delay=0.0)
        self.allowed: tuple[type[BaseException], ...] = (server.Close,)

    def close(self) -> None:
        self.server_module.behaviour_of = self.saved
        self.loop.close()

    def __call__(self, data: bytes) -> str:
        answer = self.loop.run_until_complete(asyncio.wait_for(self._serve(data), 5.0))
        if answer.data and not answer.data.startswith(b"HTTP/"):
            try:
                decode_stream(answer.data, LENIENT)
            except SlurmError as exc:
                raise Mismatch(f"answer {answer.verdict!r} does not decode: {exc}") from None
        kind = re.match(r"rc \d+|http \d+|callerid|job id", answer.verdict)
        return f"answer: {kind.group() if kind else answer.verdict[:20]}"

    async def _serve(self, data: bytes) -> Any:
        reader = asyncio.StreamReader(limit=self.server_module.MAX_REQUEST)
        reader.feed_data(data)
        reader.feed_eof()
        return await self.server._serve_one(reader, self.node, ("127.0.0.1", 40000))


def _fuzz_server(server: Any) -> Any:
    class FuzzServer(server.CalleridServer):  # type: ignore[misc, name-defined]
        def _decode(self, credential: str, release: Any) -> Any:
            return fuzz_munge_decode(credential)

        def _encode(self, payload: bytes, r_uid: int, version: int) -> str:
            return fuzz_credential(payload, 0)

    instance = FuzzServer({}, client_timeout=2.0, workers=1)
    lookups = server._Lookups(None, 1)
    lookups.executor.shutdown()
    lookups.executor = InlineExecutor()
    instance._lookups[None] = lookups
    return instance
