"""The callerid exchange as a table, without sockets or munged: events in, actions and results out."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import pytest

from slurmproto.auth import payload_hash
from slurmproto.client import Endpoint, callerid_request
from slurmproto.codec import Frame, decode_stream, encode_frame, sign_and_encode
from slurmproto.constants import NO_VAL, SLURM_EXTERN_CONT, HashType, HeaderFlags
from slurmproto.errors import (
    AuthError,
    ForgedReply,
    HashMismatch,
    HttpReply,
    PeerClosed,
    Refused,
    RemoteError,
    SlurmError,
    UnexpectedMessage,
)
from slurmproto.exchange import CalleridExchange, CallerIdResult, Fail, Send
from slurmproto.messages import JobIdRequest, Message, NetworkCallerIdResponse, ReturnCode
from slurmproto.munge import CredInvalid
from slurmproto.settings import PayloadChecks
from slurmproto.versions import (
    BY_NAME,
    SLURM_22_05,
    SLURM_23_02,
    SLURM_24_05,
    SLURM_24_11,
    SLURM_25_05,
    SLURM_25_11,
    SLURM_26_05,
    Refusal,
    Release,
    layout_of,
    max_attempts,
)

REQUEST = callerid_request(Endpoint.parse("10.0.0.1"), 40000, Endpoint.parse("10.0.0.2"), 22)
SLURMD = ("10.0.0.1", 6818)
ALICE = 1000


# --- a pretend munge: the credential says who signed it and what payload it carries ---------------------


class Said(NamedTuple):
    payload: bytes
    uid: int


def signer(uid: int) -> Callable[[bytes], str]:
    return lambda payload: f"TEST:{uid}:{payload.hex()}:"


def decode(credential: str) -> Said:
    _, uid, payload, _ = credential.split(":")
    if uid == "bad":
        raise CredInvalid("Invalid credential")
    return Said(bytes.fromhex(payload), int(uid))


class Clock:
    """One second per reading: attempt durations are exact."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def exchange(**options: object) -> CalleridExchange:
    return CalleridExchange(REQUEST, sign=signer(0), decode=decode, slurmd=SLURMD, clock=Clock(),
                            **options)  # type: ignore[arg-type]


def frame(raw: bytes) -> Frame:
    [decoded] = decode_stream(raw)
    return decoded


def callerid_reply(version: int, job_id: int = 77, *, uid: int = 0) -> bytes:
    step = {"sluid": 0, "step_id": SLURM_EXTERN_CONT, "step_het_comp": NO_VAL} \
        if layout_of(version).step_id_replies else {}
    return sign_and_encode(NetworkCallerIdResponse(job_id, 0, "node7", **step), version, signer(uid))


def rc_reply(rc: int, version: int) -> bytes:
    return encode_frame(ReturnCode(rc), version, flags=HeaderFlags.SLURM_NO_AUTH_CRED)


def credential_reply(version: int, payload: bytes, uid: int = 0) -> bytes:
    """A callerid reply whose credential carries `payload` instead of the body's hash."""
    message = NetworkCallerIdResponse(77, 0, "node7")
    return encode_frame(message, version, credential=signer(uid)(payload))


# --- negotiation against each release's refusal style -----------------------------------------------------


def slurmd_of(release: Release, *, http: bool = True) -> Callable[[CalleridExchange, Send], object]:
    """A slurmd of `release` answering one Send as that release's row says it does."""
    def answer(machine: CalleridExchange, sent: Send) -> object:
        if release.accepts(sent.version):
            return machine.on_reply(frame(callerid_reply(sent.version)))
        style = release.slurmd.bad_version
        if style is Refusal.RC_1007:
            return machine.on_reply(frame(rc_reply(1007, release.protocol_version)))
        if style is Refusal.HTTP_405 and http:
            return machine.on_http(HttpReply("HTTP/1.1 405 METHOD NOT ALLOWED"))
        return machine.on_closed()
    return answer


def play(machine: CalleridExchange, slurmd: Callable[[CalleridExchange, Send], object]) -> object:
    action: object = machine.next_request()
    while isinstance(action, Send):
        action = slurmd(machine, action)
    return action


NEGOTIATIONS = [  # release, its HTTP listener on, start version -> the versions tried, in order
    ("22.05", True, None, [SLURM_24_11, SLURM_23_02, SLURM_22_05]),
    ("22.05", True, SLURM_26_05, [SLURM_26_05, SLURM_24_05, SLURM_22_05]),
    ("23.02", True, None, [SLURM_24_11, SLURM_23_02]),
    ("24.05", True, SLURM_22_05, [SLURM_22_05, SLURM_24_11, SLURM_24_05]),
    ("24.11", True, SLURM_22_05, [SLURM_22_05, SLURM_24_11]),
    ("25.05", True, SLURM_22_05, [SLURM_22_05, SLURM_25_05]),  # RC 1007 in its own version
    ("25.11", True, SLURM_22_05, [SLURM_22_05, SLURM_25_11]),  # HTTP 405: 25.11 or newer
    ("26.05", True, SLURM_22_05, [SLURM_22_05, SLURM_25_11]),
    ("26.05", False, SLURM_22_05, [SLURM_22_05, SLURM_24_11]),  # disable_http: a silent close
    ("26.05", True, None, [SLURM_24_11]),
    ("26.05", True, SLURM_26_05, [SLURM_26_05]),
]


@pytest.mark.parametrize(("release", "http", "start", "tried"), NEGOTIATIONS,
                         ids=[f"{r}-{'http' if h else 'nohttp'}-{s and hex(s)}" for r, h, s, _ in NEGOTIATIONS])
def test_negotiation(release: str, http: bool, start: int | None, tried: list[int]) -> None:
    machine = exchange(start_version=start)
    result = play(machine, slurmd_of(BY_NAME[release], http=http))
    assert isinstance(result, CallerIdResult), result
    assert [a.version for a in result.attempts] == tried
    assert (result.job_id, result.node_name, result.protocol_version) == (77, "node7", tried[-1])
    assert result.attempts[-1].outcome == "answered RESPONSE_NETWORK_CALLERID"
    assert all(a.seconds == 1.0 for a in result.attempts)  # from signing to the event, on the fake clock


@pytest.mark.parametrize("release", list(BY_NAME))
def test_every_release_is_reached_within_the_bound(release: str) -> None:
    result = play(exchange(), slurmd_of(BY_NAME[release], http=False))
    assert isinstance(result, CallerIdResult) and len(result.attempts) <= max_attempts()


def test_refusal_outcomes_say_why() -> None:
    machine = exchange(start_version=SLURM_22_05)
    machine.next_request()
    machine.on_reply(frame(rc_reply(1007, SLURM_25_05)))
    assert machine.attempts[0].outcome == "refused with RC 1007 by a slurmd speaking 25.05"
    machine.on_http(HttpReply("HTTP/1.1 405 NOT ALLOWED"))
    assert "HTTP/1.1 405" in machine.attempts[1].outcome and machine.http_seen


def test_gives_up_after_the_bound() -> None:
    machine = exchange()
    result = play(machine, lambda m, sent: m.on_closed())
    assert isinstance(result, Fail) and isinstance(result.error, Refused)
    assert len(result.error.attempts) == max_attempts()
    assert "closed the connection without answering (tried protocol versions 24.11 (0x2a00)" in str(result.error)


def test_pinned_version_is_one_attempt() -> None:
    machine = exchange(version=SLURM_23_02)
    first = machine.next_request()
    assert isinstance(first, Send) and first.version == SLURM_23_02
    result = machine.on_closed(PeerClosed("slurmd at 10.0.0.1:6818: Connection reset by peer"))
    assert isinstance(result, Fail) and isinstance(result.error, Refused) and "reset by peer" in str(result.error)


def test_each_request_has_a_fresh_credential_over_the_body() -> None:
    signed: list[bytes] = []

    def sign(payload: bytes) -> str:
        signed.append(payload)
        return signer(0)(payload)

    machine = CalleridExchange(REQUEST, sign=sign, decode=decode, slurmd=SLURMD)
    first = machine.next_request()
    second = machine.on_closed()
    assert isinstance(first, Send) and isinstance(second, Send) and len(signed) == 2
    for sent, payload in zip((first, second), signed, strict=True):
        request = frame(sent.frame)
        assert request.version == sent.version and payload == payload_hash(request.body, request.header.msg_type)


def test_event_without_a_request_is_a_programming_error() -> None:
    with pytest.raises(RuntimeError, match="without a request outstanding"):
        exchange().on_closed()


def test_no_request_while_one_is_outstanding() -> None:
    machine = exchange()
    machine.next_request()
    with pytest.raises(RuntimeError, match="still outstanding"):
        machine.next_request()


@pytest.mark.parametrize("reply", [callerid_reply(SLURM_24_11), rc_reply(5003, SLURM_24_11)],
                         ids=["answered", "failed"])
def test_no_request_after_the_end(reply: bytes) -> None:
    machine = exchange(version=SLURM_24_11)
    machine.next_request()
    assert not isinstance(machine.on_reply(frame(reply)), Send) and machine.finished
    with pytest.raises(RuntimeError, match="has ended"):
        machine.next_request()


# --- replies: what is believed, what is refused ---------------------------------------------------------


class Case(NamedTuple):
    reply: bytes
    error: type[SlurmError] | None
    """None: a result."""
    match: str = ""
    options: dict[str, object] = {}  # noqa: RUF012 (never mutated)


V = SLURM_24_11
EMPTY, NONE = b"", payload_hash(b"", 0, HashType.NONE)[:1] + (5036).to_bytes(2, "big")
REPLIES = {
    "signed-by-root": Case(callerid_reply(V), None),
    "signed-by-slurmd-user": Case(callerid_reply(V, uid=ALICE), None, options={"trusted_uids": {0, ALICE}}),
    "forged-signer": Case(callerid_reply(V, uid=ALICE), ForgedReply, "uid 1000"),
    "forged-signer-rc": Case(encode_frame(ReturnCode(0), V, credential=signer(ALICE)(
        payload_hash(ReturnCode(0).encode(V), ReturnCode.MSG_TYPE))), ForgedReply, "uid 1000"),
    "bad-credential": Case(credential_reply(V, b"", uid="bad"), CredInvalid),  # type: ignore[arg-type]
    "unsigned-answer": Case(encode_frame(NetworkCallerIdResponse(77, 0, "node7"), V), AuthError,
                            "carries no credential"),
    "payload-of-another-body": Case(credential_reply(V, payload_hash(b"other", 5036)), HashMismatch,
                                    "does not match"),
    "empty-payload": Case(credential_reply(V, EMPTY), None),
    "empty-payload-blocked": Case(credential_reply(V, EMPTY), HashMismatch, "block_null_hash",
                                  {"checks": PayloadChecks(block_null_hash=True)}),
    "no-hash-payload": Case(credential_reply(V, NONE), None),
    "no-hash-payload-blocked": Case(credential_reply(V, NONE), HashMismatch, "block_zero_hash",
                                    {"checks": PayloadChecks(block_zero_hash=True)}),
    "unexpected-message": Case(sign_and_encode(JobIdRequest(1), V, signer(0)), UnexpectedMessage,
                               "JobIdRequest"),
    "unexpected-message-forged": Case(sign_and_encode(JobIdRequest(1), V, signer(ALICE)), UnexpectedMessage),
    "rc-error": Case(rc_reply(5003, V), RemoteError, "error 5003"),
    "rc-1007-same-version": Case(rc_reply(1007, V), RemoteError, "error 1007"),
    "rc-1007-of-a-closing-release": Case(rc_reply(1007, SLURM_22_05), RemoteError, "error 1007"),
    "rc-zero": Case(rc_reply(0, V), None),
    "job-no-val": Case(callerid_reply(V, job_id=NO_VAL), None),
}


@pytest.mark.parametrize("case", list(REPLIES.values()), ids=list(REPLIES))
def test_reply(case: Case) -> None:
    machine = exchange(version=V, **case.options)
    sent = machine.next_request()
    result = machine.on_reply(frame(case.reply), case.reply)
    if case.error is None:
        assert isinstance(result, CallerIdResult) and isinstance(sent, Send)
        assert result.sent == sent.frame and result.received == case.reply and result.slurmd == SLURMD
        return
    assert isinstance(result, Fail) and type(result.error) is case.error, result
    assert case.match in str(result.error)


@pytest.mark.parametrize(("reply", "job", "signer_uid"), [
    (callerid_reply(V), 77, 0),
    (callerid_reply(V, job_id=NO_VAL), None, 0),
    (callerid_reply(SLURM_26_05), 77, 0),
    (rc_reply(0, V), None, None),
])
def test_result(reply: bytes, job: int | None, signer_uid: int | None) -> None:
    machine = exchange(trusted_uids={0})
    machine.next_request()
    result = machine.on_reply(frame(reply), reply)
    assert isinstance(result, CallerIdResult)
    assert (result.job_id, result.found, result.signer_uid) == (job, job is not None, signer_uid)
    message: Message | None = result.reply
    assert (message is None) == (job is None and signer_uid is None)


@pytest.mark.parametrize("named", [lambda sent: sent + 0x100, lambda sent: 0x2E00, lambda sent: 0xFFFF,
                                   lambda sent: sent ^ 0x01], ids=["next", "future", "max", "odd"])
def test_rc_1007_naming_any_version_is_bounded(named: Callable[[int], int]) -> None:
    """An unsigned RC 1007 costs nothing to forge: whatever versions it names, the bound holds."""
    machine = exchange()
    result = play(machine, lambda m, sent: m.on_reply(frame(rc_reply(1007, named(sent.version)))))
    assert isinstance(result, Fail) and isinstance(result.error, Refused | RemoteError)
    assert len(machine.attempts) <= max_attempts()
