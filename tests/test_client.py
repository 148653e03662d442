"""The callerid client against scripted peers: version fallback, deadlines and every bad reply."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import Unpack

import pytest

from slurmproto.client import CallerIdResult, Endpoint, callerid
from slurmproto.codec import decode_stream, encode_frame, sign_and_encode
from slurmproto.constants import NO_VAL, SLURM_EXTERN_CONT, HeaderFlags
from slurmproto.errors import (
    ConnectError,
    HashMismatch,
    InsaneMessageLength,
    Refused,
    RemoteError,
    Timeout,
    TruncatedFrame,
    UnexpectedMessage,
)
from slurmproto.messages import JobIdRequest, NetworkCallerIdResponse, ReturnCode
from slurmproto.munge import BadCredFormat, MungeContext
from slurmproto.settings import PayloadChecks
from slurmproto.versions import SLURM_22_05, SLURM_24_11, SLURM_25_05, SLURM_25_11, SLURM_26_05, accepting
from tests.support.callerid import CalleridOptions, ask_callerid
from tests.support.munged import Munged
from tests.support.peers import DroppingHost, PeerScript, ScriptedPeer, close, hold, send

HTTP_405 = b"HTTP/1.1 405 NOT ALLOWED\r\nConnection: Close\r\nContent-Length: 0\r\n\r\n"


def answer(munged: Munged, release: str = "26.05", job_id: int = 77, *,
           tamper: Callable[[bytes], bytes] | None = None, credential: str | None = None) -> PeerScript:
    """Answer like a slurmd of `release`: verify the request, reply in its version, signed for its uid."""
    def behaviour(conn: socket.socket, request: bytes) -> None:
        [frame] = decode_stream(request)
        if not any(r.name == release for r in accepting(frame.version)):
            conn.close()
            return
        with MungeContext(munged.socket) as munge:
            asker = munge.decode(frame.auth.credential).uid  # type: ignore[union-attr]
        step = {"sluid": 0, "step_id": SLURM_EXTERN_CONT, "step_het_comp": NO_VAL} \
            if frame.version >= SLURM_25_11 else {}
        reply = NetworkCallerIdResponse(job_id, 0, "node7", **step)
        with MungeContext(munged.socket, uid_restriction=asker) as signer:
            if credential is not None:
                raw = encode_frame(reply, frame.version, credential=credential)
            else:
                raw = sign_and_encode(reply, frame.version, signer.encode)
        conn.sendall(tamper(raw) if tamper else raw)
        conn.close()
    return behaviour


def rc_reply(rc: int, version: int, flags: int = HeaderFlags.SLURM_NO_AUTH_CRED) -> bytes:
    return encode_frame(ReturnCode(rc), version, flags=flags)


def ask(peer: ScriptedPeer | DroppingHost, munged: Munged, **options: Unpack[CalleridOptions]) -> CallerIdResult:
    return ask_callerid(("127.0.0.1", 40000), ("127.0.0.1", 22), port=peer.port, munge_socket=str(munged.socket),
                        **options)


def test_answer_is_verified_and_typed(munged: Munged) -> None:
    with ScriptedPeer(answer(munged, "26.05")) as peer:
        result = ask(peer, munged, start_version=SLURM_26_05)
    assert (result.job_id, result.node_name, result.step_id) == (77, "node7", SLURM_EXTERN_CONT)
    assert result.signer_uid == os.getuid() and result.protocol_version == SLURM_26_05
    [request] = decode_stream(peer.received[0])
    assert request.message.source == request.message.destination  # type: ignore[attr-defined]
    assert (request.message.port_src, request.message.port_dst, request.message.af) == (40000, 22, 2)  # type: ignore


def test_ipv6_source(munged: Munged) -> None:
    with ScriptedPeer(answer(munged, "24.11"), host="::1") as peer:
        result = callerid("::1", 40000, "::1", 22, port=peer.port, munge_socket=str(munged.socket))
    [request] = decode_stream(peer.received[0])
    assert result.job_id == 77 and result.slurmd == ("::1", peer.port)
    assert request.message.af == 10 and request.message.ip_src == bytes(15) + b"\1"  # type: ignore[attr-defined]


def test_not_found_is_indeterminate(munged: Munged) -> None:
    with ScriptedPeer(answer(munged, "24.11", job_id=NO_VAL)) as peer:
        result = ask(peer, munged, version=SLURM_24_11)
    assert result.job_id is None and not result.found


@pytest.mark.parametrize(("release", "start", "expected"), [
    ("22.05", SLURM_26_05, [0x2D00, 0x2900, 0x2600]),
    ("24.11", SLURM_22_05, [0x2600, 0x2A00]),
    ("24.05", SLURM_22_05, [0x2600, 0x2A00, 0x2900]),
    ("26.05", None, [0x2A00]),
    ("23.02", None, [0x2A00, 0x2700]),
])
def test_silent_close_falls_back(munged: Munged, release: str, start: int | None, expected: list[int]) -> None:
    with ScriptedPeer(answer(munged, release)) as peer:
        result = ask(peer, munged, start_version=start)
    assert [a.version for a in result.attempts] == expected and result.job_id == 77


def test_http_405_means_25_11_or_newer(munged: Munged) -> None:
    """26.05 answers an unknown version with HTTP: the next try is a version 25.11 and 26.05 both speak."""
    with ScriptedPeer(send(HTTP_405), answer(munged, "26.05")) as peer:
        result = ask(peer, munged, start_version=SLURM_22_05)
    assert [a.version for a in result.attempts] == [SLURM_22_05, SLURM_25_11]
    assert "HTTP/1.1 405" in result.attempts[0].outcome and result.step_id == SLURM_EXTERN_CONT


def test_rc_1007_in_own_version_names_the_release(munged: Munged) -> None:
    """25.05 and 25.11 refuse with RC 1007 in their own version: the client retries in that one."""
    with ScriptedPeer(send(rc_reply(1007, SLURM_25_05)), answer(munged, "25.05")) as peer:
        result = ask(peer, munged, start_version=SLURM_22_05)
    assert [a.version for a in result.attempts] == [SLURM_22_05, SLURM_25_05]


def test_gives_up_after_three_tries(munged: Munged) -> None:
    with ScriptedPeer(close) as peer, pytest.raises(Refused, match="tried protocol versions") as info:
        ask(peer, munged)
    assert len(info.value.attempts) == 3 and len(peer.received) == 3


def test_remote_error_is_reported(munged: Munged) -> None:
    with ScriptedPeer(send(rc_reply(5003, SLURM_24_11))) as peer, pytest.raises(RemoteError) as info:
        ask(peer, munged, version=SLURM_24_11)
    assert info.value.rc == 5003 and "Header lengths" in str(info.value)


def test_rc_zero_is_indeterminate(munged: Munged) -> None:
    with ScriptedPeer(send(rc_reply(0, SLURM_24_11))) as peer:
        assert ask(peer, munged, version=SLURM_24_11).job_id is None


def test_unexpected_message(munged: Munged) -> None:
    with ScriptedPeer(send(encode_frame(JobIdRequest(1), SLURM_24_11, credential="MUNGE:x:"))) as peer, \
            pytest.raises(UnexpectedMessage):
        ask(peer, munged, version=SLURM_24_11)


def test_hash_mismatch(munged: Munged) -> None:
    def tamper(raw: bytes) -> bytes:  # job 77 -> 78 after signing
        return raw[:-14] + (78).to_bytes(4, "big") + raw[-10:]

    with ScriptedPeer(answer(munged, "24.11", tamper=tamper)) as peer, pytest.raises(HashMismatch) as info:
        ask(peer, munged, version=SLURM_24_11)
    assert info.value.rc == 5003


def empty_payload_answer(munged: Munged) -> PeerScript:
    """A 24.11 answer whose credential carries no payload hash (what block_null_hash refuses)."""
    def behaviour(conn: socket.socket, request: bytes) -> None:
        with MungeContext(munged.socket) as munge:
            credential = munge.encode(b"").decode()
        conn.sendall(encode_frame(NetworkCallerIdResponse(77, 0, "node7"), SLURM_24_11, credential=credential))
        conn.close()
    return behaviour


@pytest.mark.parametrize(("checks", "job"), [(PayloadChecks(), 77), (PayloadChecks(block_null_hash=True), None)])
def test_block_null_hash_reaches_the_payload_check(munged: Munged, checks: PayloadChecks, job: int | None) -> None:
    with ScriptedPeer(empty_payload_answer(munged)) as peer:
        if job is None:
            with pytest.raises(HashMismatch, match="block_null_hash"):
                ask(peer, munged, version=SLURM_24_11, checks=checks)
        else:
            result = ask(peer, munged, version=SLURM_24_11, checks=checks)
            assert result.job_id == job


def test_garbage_credential(munged: Munged) -> None:
    with ScriptedPeer(answer(munged, "24.11", credential="MUNGE:garbage:")) as peer, \
            pytest.raises(BadCredFormat):
        ask(peer, munged, version=SLURM_24_11)


def test_half_a_reply(munged: Munged) -> None:
    frame = rc_reply(0, SLURM_24_11)
    with ScriptedPeer(send(frame[:7])) as peer, pytest.raises(TruncatedFrame):
        ask(peer, munged, version=SLURM_24_11)


def test_oversize_reply_is_refused(munged: Munged) -> None:
    with ScriptedPeer(send((10**8).to_bytes(4, "big") + b"\0" * 1000)) as peer, \
            pytest.raises(InsaneMessageLength):
        ask(peer, munged, version=SLURM_24_11)


def test_silent_peer_costs_the_deadline(munged: Munged) -> None:
    with ScriptedPeer(hold) as peer:
        started = time.monotonic()
        with pytest.raises(Timeout):
            ask(peer, munged, version=SLURM_24_11, timeout=0.8)
        assert 0.7 < time.monotonic() - started < 1.3


def test_message_timeout_within_deadline(munged: Munged) -> None:
    with ScriptedPeer(hold) as peer:
        started = time.monotonic()
        with pytest.raises(Timeout, match="MessageTimeout"):
            ask(peer, munged, version=SLURM_24_11, message_timeout=0.3, timeout=10)
        assert time.monotonic() - started < 0.8


def test_dropping_host_costs_the_connect_timeout(munged: Munged) -> None:
    with DroppingHost() as host:
        started = time.monotonic()
        with pytest.raises(Timeout, match="connect"):
            ask(host, munged, connect_timeout=0.5, timeout=5)
        assert 0.4 < time.monotonic() - started < 1.0


def test_refused_connection_is_fast(munged: Munged) -> None:
    with ScriptedPeer(close) as peer:
        port = peer.port
    started = time.monotonic()
    with pytest.raises(ConnectError, match="refused"):
        callerid("127.0.0.1", 1, "127.0.0.1", 2, port=port, munge_socket=str(munged.socket), timeout=5)
    assert time.monotonic() - started < 0.5


@pytest.mark.parametrize(("text", "af", "host"), [
    ("10.1.2.3", 2, "10.1.2.3"),
    ("::ffff:10.1.2.3", 2, "10.1.2.3"),
    ("[::1]", 10, "::1"),
    ("fe80::1%eth0", 10, "fe80::1"),
])
def test_endpoints(text: str, af: int, host: str) -> None:
    endpoint = Endpoint.parse(text)
    assert (endpoint.af, endpoint.host) == (af, host)


def test_bad_arguments() -> None:
    for args in (("nonsense", 1, "127.0.0.1", 2), ("127.0.0.1", 0, "127.0.0.1", 2),
                 ("127.0.0.1", 1, "::1", 2), ("127.0.0.1", 70000, "127.0.0.1", 2)):
        with pytest.raises(ValueError):
            callerid(*args)  # type: ignore[arg-type]
