"""The callerid exchange as a state machine: which frame to send next, and what a reply means. No sockets.

`CalleridExchange` takes the events of talking to one slurmd (a reply, a close without one, an HTTP
answer) and says what to do next: `Send` a frame in a version, `Fail` with an error, or a
`CallerIdResult`. The socket code (slurmproto.client) only drives it. slurmd has no version negotiation:
it closes the connection (up to 24.11, and 26.05 without its HTTP listener), answers RC 1007 in its own
version (25.05, 25.11) or answers HTTP 405 (25.11+) when it does not speak the request's header version.
In auto mode the exchange starts from `start_version` (e.g. the local Slurm's) and, on such a refusal,
tries versions of other releases, up to the release table's bound (versions.max_attempts()).

Signing and credential decoding are injected callables (MUNGE or auth/slurm: slurmproto.signers), so
this module needs no daemon; a reply is believed only once its credential decodes, its signer is trusted and its payload
hash matches the body (slurmproto.auth.check_payload, with slurm.conf's block_null_hash/block_zero_hash).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from slurmproto.auth import check_payload
from slurmproto.codec import Frame, sign_and_encode
from slurmproto.constants import NO_VAL, AuthPlugin, MsgType
from slurmproto.errors import (
    AuthError,
    ForgedReply,
    HttpReply,
    PeerClosed,
    Refused,
    RemoteError,
    SlurmError,
    UnexpectedMessage,
)
from slurmproto.messages import NetworkCallerIdRequest, NetworkCallerIdResponse, ReturnCode
from slurmproto.settings import NO_PAYLOAD_CHECKS, ROOT_ONLY, PayloadChecks
from slurmproto.versions import max_attempts, name_of, next_version, refusal_names_version

REFUSED_BY_VERSION = 1007  # SLURM_PROTOCOL_AUTHENTICATION_ERROR, 25.05+ answer to an unknown version
TRUSTED_UIDS = ROOT_ONLY
"""Whose credentials a reply may carry by default: root (SlurmdUser's default)."""


class Verified(Protocol):
    """What a decoded credential says (slurmproto.munge.Decoded has these)."""

    @property
    def payload(self) -> bytes: ...

    @property
    def uid(self) -> int: ...


Sign = Callable[[bytes], bytes | str]
"""payload -> credential (e.g. MungeContext.encode within the deadline)."""
Decode = Callable[[str], Verified]
"""credential -> what it says; raises (e.g. a MungeError) when it does not decode."""


@dataclass
class Attempt:
    """One connection to the slurmd, in one protocol version."""

    version: int
    outcome: str
    seconds: float


@dataclass
class CallerIdResult:
    job_id: int | None
    """None: slurmd did not name a job (unknown connection, or not the asker's job)."""
    node_name: str | None
    step_id: int | None
    """The step holding the process, when the reply carries one (25.11+ layout; 25.11 sends NO_VAL)."""
    protocol_version: int
    slurmd: tuple[str, int]
    signer_uid: int | None = None
    """Who signed the reply's credential (slurmd's uid), when it had one."""
    attempts: list[Attempt] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds spent per phase: sign, connect, send, receive, verify, total."""
    sent: bytes = b""
    received: bytes = b""
    reply: NetworkCallerIdResponse | None = None

    @property
    def found(self) -> bool:
        return self.job_id is not None


class Send(NamedTuple):
    """Action: open a connection, send `frame` (a request in header version `version`), read one reply."""

    frame: bytes
    version: int


class Fail(NamedTuple):
    """Result: no answer is had; raise `error` (Refused when every version was turned away)."""

    error: SlurmError


Action = Send | Fail | CallerIdResult


class CalleridExchange:
    """One callerid() call to one slurmd: version negotiation and reply verification, events in, actions out.

    Call next_request() first; after each Send, report what came back with exactly one of on_reply(),
    on_closed() or on_http(); each returns the next action. A Fail or a CallerIdResult ends the exchange.
    A SlurmError raised by `decode` (a bad credential, munged unreachable) ends the exchange as Fail(error);
    whatever `sign` raises (this host cannot sign) propagates from the call that needed a credential.
    """

    def __init__(self, request: NetworkCallerIdRequest, *, sign: Sign, decode: Decode, slurmd: tuple[str, int],
                 version: int | None = None, start_version: int | None = None,
                 trusted_uids: Collection[int] = TRUSTED_UIDS, checks: PayloadChecks = NO_PAYLOAD_CHECKS,
                 clock: Callable[[], float] = time.monotonic, plugin_id: int = AuthPlugin.AUTH_MUNGE) -> None:
        self.request, self.sign, self.decode, self.slurmd = request, sign, decode, slurmd
        self.plugin_id = plugin_id
        """The auth plugin of our credentials, and the only one a reply may carry."""
        self.version, self.start = version, start_version
        self.trusted = frozenset(trusted_uids)
        self.checks, self.clock = checks, clock
        self.attempts: list[Attempt] = []
        self.rejected: list[int] = []
        self.http_seen = False
        self.peer_version: int | None = None
        self.last_error: SlurmError | None = None
        self._pending: Send | None = None
        self._started = 0.0
        self.finished = False
        """A Fail or a result was handed out: no further request."""

    @property
    def where(self) -> str:
        return f"slurmd at {self.slurmd[0]}:{self.slurmd[1]}"

    @property
    def bound(self) -> int:
        """How many connections this exchange may open: one when the version is pinned."""
        return 1 if self.version is not None else max_attempts()

    # --- events ------------------------------------------------------------------------------------

    def next_request(self) -> Send | Fail:
        """The next frame to send (a fresh credential each time), or Fail(Refused) when none is left."""
        if self.finished or self._pending is not None:
            raise RuntimeError("the callerid exchange has ended" if self.finished else
                               "a request of the callerid exchange is still outstanding")
        version = self._next_version()
        if version is None:
            self.finished = True
            tried = ", ".join(f"{name_of(a.version)} (0x{a.version:04x})" for a in self.attempts)
            return Fail(Refused(f"{self.last_error} (tried protocol versions {tried}; a slurmd also closes "
                                "without answering when it rejects the credential)", list(self.attempts)))
        self._started = self.clock()
        self._pending = Send(sign_and_encode(self.request, version, self.sign, plugin_id=self.plugin_id), version)
        return self._pending

    def on_closed(self, error: PeerClosed | None = None) -> Send | Fail:
        """The slurmd closed the connection without a reply (or reset it)."""
        sent = self._take()
        return self._refused(sent, error or PeerClosed(f"{self.where} closed the connection without answering"))

    def on_http(self, error: HttpReply) -> Send | Fail:
        """The slurmd answered in HTTP: only a release whose slurmd does so (25.11+) is still possible."""
        sent = self._take()
        self.http_seen = True
        return self._refused(sent, error)

    def on_reply(self, reply: Frame, raw: bytes = b"") -> Action:
        """A whole reply frame (`raw`: its bytes as received, kept in the result)."""
        action = self._classify(reply, raw, self._take())
        self.finished = not isinstance(action, Send)
        return action

    # --- the rules ---------------------------------------------------------------------------------

    def _classify(self, reply: Frame, raw: bytes, sent: Send) -> Action:
        """What a reply to `sent` means: a refusal naming the peer's version, an error, or the answer."""
        message = reply.message
        if not isinstance(message, ReturnCode | NetworkCallerIdResponse):  # refused whoever signed it
            return Fail(UnexpectedMessage(f"slurmd answered {type(message).__name__} to a callerid request"))
        try:
            signer = self._verify(reply)
        except SlurmError as exc:
            return Fail(exc)
        if isinstance(message, ReturnCode) and message.return_code == REFUSED_BY_VERSION \
                and refusal_names_version(reply.version) and reply.version != sent.version:
            self.peer_version = reply.version
            return self._refused(sent, RemoteError(REFUSED_BY_VERSION, reply.version),
                                 f"refused with RC 1007 by a slurmd speaking {name_of(reply.version)}")
        self.attempts.append(Attempt(sent.version, f"answered {MsgType(message.MSG_TYPE).name}", self._spent()))
        return self._result(reply, raw, signer, sent)

    def _next_version(self) -> int | None:
        if len(self.attempts) >= self.bound:
            return None
        if self.version is not None:
            return self.version
        return next_version(self.rejected, start=self.start, http_seen=self.http_seen,
                            peer_version=self.peer_version)

    def _take(self) -> Send:
        sent, self._pending = self._pending, None
        if sent is None:
            raise RuntimeError("an event of the callerid exchange without a request outstanding")
        return sent

    def _spent(self) -> float:
        return self.clock() - self._started

    def _refused(self, sent: Send, error: SlurmError, outcome: str | None = None) -> Send | Fail:
        self.attempts.append(Attempt(sent.version, outcome or str(error), self._spent()))
        self.rejected.append(sent.version)
        self.last_error = error
        return self.next_request()

    def _verify(self, reply: Frame) -> int | None:
        """The uid that signed the reply, once the credential, the signer and the body hash all agree; None
        if unsigned.

        Slurm's own client (slurm_network_callerid) believes any valid credential, whoever minted it; we
        accept only root and SlurmdUser, or any local user listening on the slurmd port (or answering in
        its place) could name the job. An unsigned reply (23.02+ RC replies carry no credential) is only
        ever taken as a failure or as "indeterminate", never as a job: what a peer could say by closing.
        """
        if reply.auth is None or reply.auth.credential is None:
            if isinstance(reply.message, NetworkCallerIdResponse):
                raise AuthError("slurmd's callerid reply carries no credential")
            return None
        if reply.auth.plugin_id != self.plugin_id:
            raise AuthError(f"slurmd's reply is signed with {reply.auth.plugin}, not with "
                            f"{AuthPlugin(self.plugin_id).plugin_name} as our request was")
        decoded = self.decode(reply.auth.credential)
        if decoded.uid not in self.trusted:
            raise ForgedReply(decoded.uid, self.trusted, f"{self.slurmd[0]}:{self.slurmd[1]}")
        check_payload(decoded.payload, reply.body, reply.header.msg_type,
                      block_null=self.checks.block_null_hash, block_zero=self.checks.block_zero_hash)
        return decoded.uid

    def _result(self, reply: Frame, raw: bytes, signer: int | None, sent: Send) -> CallerIdResult | Fail:
        message = reply.message
        result = CallerIdResult(None, None, None, reply.version, self.slurmd, signer, self.attempts,
                                sent=sent.frame, received=raw)
        if isinstance(message, ReturnCode):
            # rc 0 without a job: Slurm's client reports success and leaves the job unset.
            return Fail(RemoteError(message.return_code, reply.version)) if message.return_code else result
        assert isinstance(message, NetworkCallerIdResponse)  # on_reply refused every other type
        result.job_id = message.job_id if message.job_id != NO_VAL else None
        result.node_name, result.step_id, result.reply = message.node_name, message.step_id, message
        return result
