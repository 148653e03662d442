"""Encode -> decode round trips for every message and every release, and random bytes never crash."""

from __future__ import annotations

import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st

from slurmproto.codec import Decoder, FrameOptions, decode_frame, decode_stream, encode_frame
from slurmproto.constants import AF_INET, AF_INET6, HeaderFlags
from slurmproto.errors import SlurmError
from slurmproto.header import HEADER, Forward, Header, RetEntry
from slurmproto.messages import (
    REGISTRY,
    JobIdRequest,
    JobIdResponse,
    Message,
    NetworkCallerIdRequest,
    NetworkCallerIdResponse,
    ReturnCode,
)
from slurmproto.primitives import SlurmAddr
from slurmproto.versions import RELEASES, STEP_ID_REPLIES

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, 0xFFFFFFFFFFFFFFFF)
i32 = st.integers(-(2**31), 2**31 - 1)
versions = st.sampled_from([r.protocol_version for r in RELEASES])
# Strings as Slurm carries them: any bytes but NUL (kept as surrogates when not UTF-8).
cstrings = st.binary(max_size=40).filter(lambda b: b"\0" not in b).map(
    lambda b: b.decode("utf-8", "surrogateescape"))
names = st.none() | cstrings
ip16 = st.binary(min_size=16, max_size=16)


def _step_fields(version: int) -> st.SearchStrategy[dict[str, int | None]]:
    if version >= STEP_ID_REPLIES:
        return st.fixed_dictionaries({"sluid": u64, "step_id": u32, "step_het_comp": u32})
    return st.just({"sluid": None, "step_id": None, "step_het_comp": None})


def messages(version: int) -> st.SearchStrategy[Message]:
    return st.one_of(
        st.builds(NetworkCallerIdRequest, ip16, ip16, u32, u32, st.sampled_from([AF_INET, AF_INET6]) | u32),
        _step_fields(version).flatmap(lambda steps: st.builds(
            NetworkCallerIdResponse, job_id=u32, return_code=i32, node_name=names, **{
                k: st.just(v) for k, v in steps.items()})),
        _step_fields(version).flatmap(lambda steps: st.builds(
            JobIdResponse, job_id=u32, return_code=i32, **{k: st.just(v) for k, v in steps.items()})),
        st.builds(JobIdRequest, u32),
        st.builds(ReturnCode, i32),
    )


def test_every_registered_message_has_a_strategy() -> None:
    covered = {NetworkCallerIdRequest, NetworkCallerIdResponse, JobIdRequest, JobIdResponse, ReturnCode}
    assert set(REGISTRY.values()) == covered


@settings(max_examples=400)
@given(versions.flatmap(lambda v: st.tuples(st.just(v), messages(v))))
def test_body_round_trip(case: tuple[int, Message]) -> None:
    version, message = case
    body = message.encode(version)
    assert type(message).decode(body, version) == message
    assert type(message).decode(body, version).encode(version) == body
    compiled = type(message).schema(compiled=True)
    assert compiled.build(message, version=version) == body
    assert compiled.parse(body, version=version, nul_check=True) == message


addresses = st.one_of(
    st.just(SlurmAddr()),
    st.builds(SlurmAddr, st.just(AF_INET), st.binary(min_size=4, max_size=4), u16),
    st.builds(SlurmAddr, st.just(AF_INET6), st.binary(min_size=16, max_size=16), u16),
)


def forwards(version: int, flags: int) -> st.SearchStrategy[Forward]:
    net_cred = names if version >= 0x2800 and flags & HeaderFlags.SLURM_PACK_ADDRS else st.none()
    depth = u16 if version >= 0x2A00 else st.none()
    return st.just(Forward()) | st.builds(Forward, st.integers(1, 0xFFFF), names, u32, u16, net_cred, depth)


@st.composite
def headers(draw: st.DrawFn) -> tuple[Header, bytes]:
    version = draw(versions)
    flags = draw(u16) & ~int(HeaderFlags.SLURMDBD_CONNECTION)
    message = draw(messages(version))
    body = message.encode(version)
    ret_version_messages = st.lists(
        st.builds(RetEntry, i32, st.just(0), names, messages(version)).map(
            lambda e: RetEntry(e.err, e.message.MSG_TYPE, e.node_name, e.message)), max_size=3)
    header = Header(version, flags, message.MSG_TYPE, len(body), draw(forwards(version, flags)),
                    draw(ret_version_messages), draw(addresses))
    return header, body


@settings(max_examples=300)
@given(headers())
def test_header_round_trip(case: tuple[Header, bytes]) -> None:
    header, _ = case
    raw = HEADER.build(header, version=header.version)
    assert HEADER.parse(raw, version=header.version) == header


@settings(max_examples=300)
@given(headers(), st.none() | st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=300))
def test_frame_round_trip(case: tuple[Header, bytes], credential: str | None) -> None:
    header, body = case
    message = REGISTRY[header.msg_type].decode(body, header.version)
    flags = header.flags & ~int(HeaderFlags.SLURM_NO_AUTH_CRED)
    raw = encode_frame(message, header.version, credential=credential, flags=flags,
                       forward=header.forward, orig_addr=header.orig_addr)
    [frame] = decode_stream(raw)
    assert frame.message == message and frame.body == body
    assert (frame.auth.credential if frame.auth else None) == credential
    assert frame.header.forward == header.forward and frame.header.orig_addr == header.orig_addr


@settings(max_examples=1000)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_slurm_errors(data: bytes) -> None:
    with contextlib.suppress(SlurmError):
        decode_frame(data)
    decoder = Decoder(FrameOptions(max_length=1 << 16))
    decoder.feed(data)
    decoder.feed_eof()
    with contextlib.suppress(SlurmError):
        list(decoder)


@settings(max_examples=200)
@given(versions.flatmap(lambda v: st.tuples(st.just(v), messages(v))), st.data())
def test_decoder_any_split(case: tuple[int, Message], data: st.DataObject) -> None:
    """Frames arrive whole whatever the TCP segmentation."""
    version, message = case
    raw = encode_frame(message, version, credential="MUNGE:abc:") * 2
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=6)))
    decoder = Decoder()
    frames = []
    for start, end in zip([0, *cuts], [*cuts, len(raw)], strict=True):
        decoder.feed(raw[start:end])
        frames.extend(decoder)
    decoder.feed_eof()
    frames.extend(decoder)
    assert [f.message for f in frames] == [message, message]
