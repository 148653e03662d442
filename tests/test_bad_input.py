"""Bad bytes get a specific error, never a crash, a hang or an allocation the peer chose."""

from __future__ import annotations

import pytest

from slurmproto.codec import Decoder, FrameOptions, decode_frame, decode_stream, encode_frame
from slurmproto.constants import MAX_MSG_SIZE, NO_VAL, AuthPlugin
from slurmproto.errors import (
    HttpReply,
    InsaneMessageLength,
    MalformedMessage,
    MissingNul,
    SlurmError,
    TrailingBytes,
    TruncatedFrame,
    UnknownAuthPlugin,
    UnknownMessageType,
)
from slurmproto.messages import NetworkCallerIdRequest, NetworkCallerIdResponse
from slurmproto.versions import SLURM_22_05, SLURM_26_05

CRED = "MUNGE:AwQFAAB:"
REPLY = encode_frame(NetworkCallerIdResponse(42, 0, "node1"), SLURM_22_05, credential=CRED)


def _reframe(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


@pytest.mark.parametrize("cut", range(1, len(REPLY)))
def test_every_truncation_is_truncated_frame(cut: int) -> None:
    with pytest.raises(TruncatedFrame):
        decode_stream(REPLY[:cut])


def test_truncated_inside_frame_waits_for_more() -> None:
    decoder = Decoder()
    decoder.feed(REPLY[:-1])
    assert decoder.next_frame() is None and decoder.wanted() == 1
    decoder.feed(REPLY[-1:])
    frame = decoder.next_frame()
    assert frame is not None and frame.message == NetworkCallerIdResponse(42, 0, "node1")


def test_oversize_length_prefix_refused_before_buffering() -> None:
    decoder = Decoder(FrameOptions(max_length=64 * 1024))
    decoder.feed((64 * 1024 + 1).to_bytes(4, "big"))
    with pytest.raises(InsaneMessageLength) as info:
        decoder.next_frame()
    assert info.value.rc == 1008
    decoder = Decoder()
    decoder.feed((MAX_MSG_SIZE + 1).to_bytes(4, "big"))
    with pytest.raises(InsaneMessageLength):
        decoder.next_frame()


@pytest.mark.parametrize(("plugin_id", "name"), [(100, "auth/none"), (102, "auth/jwt"), (7, "id 7")])
def test_wrong_plugin_id(plugin_id: int, name: str) -> None:
    raw = encode_frame(NetworkCallerIdResponse(1, 0, "n"), SLURM_22_05, credential=CRED)
    raw = raw[:20] + plugin_id.to_bytes(4, "big") + raw[24:]
    with pytest.raises(UnknownAuthPlugin, match=name) as info:
        decode_stream(raw)
    assert info.value.plugin_id == plugin_id


def test_string_without_nul() -> None:
    body = NetworkCallerIdResponse(1, 0, "node1").encode(SLURM_26_05)
    broken = body[:-1] + b"X"
    with pytest.raises(MissingNul):
        NetworkCallerIdResponse.decode(broken, SLURM_26_05)
    # A 22.05 receiver does not check the NUL.
    old = NetworkCallerIdResponse(1, 0, "node1").encode(SLURM_22_05)[:-1] + b"X"
    assert NetworkCallerIdResponse.decode(old, SLURM_22_05, nul_check=False).node_name == "node1X"
    raw = encode_frame(NetworkCallerIdResponse(1, 0, "n"), SLURM_26_05, credential=CRED, body=broken)
    with pytest.raises(MissingNul):
        decode_stream(raw)


def test_unknown_message_type() -> None:
    raw = bytearray(REPLY)
    raw[8:10] = (4242).to_bytes(2, "big")
    with pytest.raises(UnknownMessageType) as info:
        decode_stream(bytes(raw))
    assert info.value.msg_type == 4242


def test_trailing_bytes() -> None:
    payload = REPLY[4:] + b"\0\0"
    with pytest.raises(TrailingBytes):
        decode_frame(payload)
    # 22.05.8 tolerated bytes after the body.
    frame = decode_frame(payload, FrameOptions(exact_body_length=False))
    assert isinstance(frame.message, NetworkCallerIdResponse) and frame.message.job_id == 42


def test_body_length_longer_than_frame() -> None:
    raw = bytearray(REPLY)
    raw[10:14] = (1000).to_bytes(4, "big")
    with pytest.raises(MalformedMessage, match="body_length 1000"):
        decode_stream(bytes(raw))


def test_body_shorter_than_its_fields() -> None:
    raw = encode_frame(NetworkCallerIdResponse(1, 0, "n"), SLURM_22_05, credential=CRED, body=b"\0\0\0\1")
    with pytest.raises(MalformedMessage, match="truncated"):
        decode_stream(raw)


def test_lying_string_length_is_not_allocated() -> None:
    body = (1).to_bytes(4, "big") + (0).to_bytes(4, "big") + (0x3FFFFFFF).to_bytes(4, "big") + b"abc"
    with pytest.raises(MalformedMessage, match="longer than"):
        NetworkCallerIdResponse.decode(body, SLURM_22_05)
    body = (1).to_bytes(4, "big") + (0).to_bytes(4, "big") + (0x7FFFFFFF).to_bytes(4, "big")
    with pytest.raises(MalformedMessage, match="exceeds"):
        NetworkCallerIdResponse.decode(body, SLURM_22_05)


def test_address_field_longer_than_16() -> None:
    body = NetworkCallerIdRequest(b"\1" * 16, b"\2" * 16, 1, 2, 2).encode(SLURM_22_05)
    broken = (17).to_bytes(4, "big") + b"\1" * 17 + body[20:]
    with pytest.raises(MalformedMessage):
        NetworkCallerIdRequest.decode(broken, SLURM_22_05)


def test_credential_with_a_lying_length() -> None:
    raw = bytearray(REPLY)
    raw[24:28] = (5000).to_bytes(4, "big")
    with pytest.raises(MalformedMessage):
        decode_stream(bytes(raw))


@pytest.mark.parametrize("plugin_id", [AuthPlugin.AUTH_MUNGE, AuthPlugin.AUTH_SLURM], ids=["munge", "slurm"])
def test_credential_cut_short_or_without_its_nul(plugin_id: int) -> None:
    raw = encode_frame(NetworkCallerIdResponse(1, 0, "n"), SLURM_26_05, credential="a.b.c", plugin_id=plugin_id)
    at = raw.index(b"a.b.c")
    cut = raw[4:at + 2]
    with pytest.raises(MalformedMessage, match="credential: length 6 is longer than the 2 bytes left"):
        decode_stream(_reframe(cut))
    with pytest.raises(MissingNul, match="credential: string of 6 bytes does not end in NUL"):
        decode_stream(raw[:at + 5] + b"X" + raw[at + 6:])
    with pytest.raises(TruncatedFrame, match="11 bytes of it"):  # the length prefix says more than follows
        decode_stream(raw[:11])


def test_http_reply() -> None:
    http = b"HTTP/1.1 405 NOT ALLOWED\r\nConnection: Close\r\nContent-Length: 0\r\n\r\n"
    decoder = Decoder()
    decoder.feed(http[:6])
    assert decoder.next_frame() is None  # waits for the status line
    decoder.feed(http[6:])
    with pytest.raises(HttpReply) as info:
        decoder.next_frame()
    assert info.value.status_line == "HTTP/1.1 405 NOT ALLOWED"
    with pytest.raises(HttpReply):
        decode_stream(b"HTTP/1.1 405")  # closed before the end of the line


def test_errors_carry_slurm_numbers() -> None:
    assert MalformedMessage("x").rc == 5003 and TrailingBytes("x").rc == 5003
    assert InsaneMessageLength("x").rc == 1008 and UnknownMessageType(1).rc == 1000
    assert all(issubclass(e, SlurmError) for e in (HttpReply, TruncatedFrame, UnknownAuthPlugin))


def test_not_found_reply_decodes() -> None:
    [frame] = decode_stream(encode_frame(NetworkCallerIdResponse(NO_VAL, 0, "node1"), SLURM_22_05,
                                         credential=CRED))
    assert isinstance(frame.message, NetworkCallerIdResponse) and not frame.message.found
