"""The errors of this package, numbered like Slurm's where Slurm has a number for them."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from slurmproto.exchange import Attempt

# slurm_errno.h numbers and strings (identical in 22.05 to 26.05).
SLURM_STRERROR = {
    0: "No error",
    -1: "Unspecified error",
    22: "Invalid argument",
    1000: "Unexpected message received",
    1001: "Communication connection failure",
    1002: "Message send failure",
    1003: "Message receive failure",
    1005: "Incompatible versions of client and server code",
    1007: "Protocol authentication error",
    1008: "Insane message length",
    2002: "Access/permission denied",
    2010: "Invalid user id",
    2017: "Invalid job id specified",
    5003: "Header lengths are longer than data received",
    5004: "Socket timed out on send/recv operation",
    5005: "Zero Bytes were transmitted or received",
    6000: "Invalid authentication credential",
    6007: "Cannot unpack credential",
    6010: "Rejecting authentication of user nobody or group nobody",
    13000: "TLS missing but required for connection",
}


def slurm_strerror(rc: int) -> str:
    return SLURM_STRERROR.get(rc, f"Unknown error {rc}")


class SlurmError(Exception):
    """Base class. `rc` is Slurm's error number for the condition, when it has one."""

    rc: int | None = None

    def __init__(self, message: str, *, rc: int | None = None) -> None:
        super().__init__(message)
        if rc is not None:
            self.rc = rc


# --- decoding: what a receiver finds wrong in bytes ------------------------------------------------


class ProtocolError(SlurmError):
    """The bytes are not a valid Slurm message."""


class TruncatedFrame(ProtocolError):
    """The stream ended inside a frame."""

    rc = 1003


class InsaneMessageLength(ProtocolError):
    """The length prefix is larger than the receiver accepts."""

    rc = 1008


class HttpReply(ProtocolError):
    """The peer answered in HTTP (25.11+ slurmd answers unknown header versions with 405)."""

    rc = 1005

    def __init__(self, status_line: str) -> None:
        super().__init__(f"peer answered with HTTP, not a Slurm message: {status_line!r}")
        self.status_line = status_line


class MalformedMessage(ProtocolError):
    """A field does not decode (ESLURM_PROTOCOL_INCOMPLETE_PACKET)."""

    rc = 5003


class MissingNul(MalformedMessage):
    """A packstr whose last byte is not NUL (rejected by 23.02+ receivers)."""


class TrailingBytes(MalformedMessage):
    """Bytes left after the body, or a body_length that disagrees with the frame."""


class UnknownMessageType(ProtocolError):
    """A msg_type this package has no schema for."""

    rc = 1000

    def __init__(self, msg_type: int) -> None:
        super().__init__(f"unknown message type {msg_type}")
        self.msg_type = msg_type


class UnknownAuthPlugin(ProtocolError):
    """An auth plugin id that is not auth/munge."""

    rc = 6007

    def __init__(self, plugin_id: int) -> None:
        from slurmproto.constants import AuthPlugin

        try:
            name = f"{AuthPlugin(plugin_id).plugin_name} ({plugin_id})"
        except ValueError:
            name = f"id {plugin_id}"
        super().__init__(f"unsupported auth plugin {name}; only auth/munge (101) and auth/slurm (103) are "
                         "supported")
        self.plugin_id = plugin_id


# --- authentication ----------------------------------------------------------------------------------


class AuthError(SlurmError):
    """The credential does not authenticate the message."""

    rc = 1007


class HashMismatch(AuthError):
    """The credential's payload does not match the body (Slurm answers 5003)."""

    rc = 5003


class ForgedReply(AuthError):
    """A reply whose credential was minted by a uid we do not trust to speak for slurmd.

    Any local user can mint a valid MUNGE credential, so only the signer's uid tells a slurmd's answer
    from one made up by a process listening on the slurmd port.
    """

    def __init__(self, signer_uid: int, trusted: Iterable[int], where: str) -> None:
        self.signer_uid = signer_uid
        self.trusted = sorted(trusted)
        names = ", ".join(str(uid) for uid in self.trusted)
        super().__init__(f"reply from {where} was signed by uid {signer_uid}, not by root or SlurmdUser "
                         f"(trusted uids: {names}): a forged answer, ignored")


class TokenError(AuthError):
    """An auth/slurm token that a slurmd would not accept."""


class MalformedToken(TokenError):
    """Not three base64url parts, or a claim of the wrong type."""


class TokenNotJson(MalformedToken):
    """The header or the claims do not decode as a JSON object."""


class OversizedToken(MalformedToken):
    """Longer than any token is read (slurmauth.MAX_TOKEN)."""


class BadAlgorithm(TokenError):
    """alg is not HS256 ("none" included)."""


class UnknownKid(TokenError):
    """The header names a key (kid) the verifier's slurm.jwks does not hold."""


class ExpiredKey(TokenError):
    """Signed with a slurm.jwks key past its "exp"."""


class BadSignature(TokenError):
    """The HMAC does not verify with the selected key."""


class ExpiredToken(TokenError):
    """exp has passed."""


class WrongRuid(TokenError):
    """Restricted (ruid) to another uid than the verifier's."""


class MissingClaim(TokenError):
    """A claim Slurm requires (iat, exp, ruid, uid, gid, host, context) is absent."""

    def __init__(self, claim: str) -> None:
        super().__init__(f"auth/slurm token has no {claim!r} claim")
        self.claim = claim


class WrongContext(TokenError):
    """context is neither "auth" nor "sack"."""


class KeyFileError(SlurmError):
    """slurm.key or slurm.jwks is missing, unreadable, insecure (any permission for others) or malformed."""


class SackError(SlurmError):
    """The sack socket cannot be reached, or did not create or verify a token."""


# --- talking to a peer -------------------------------------------------------------------------------


class CommunicationError(SlurmError):
    """Connecting, sending or receiving failed."""

    rc = 1001


class ConnectError(CommunicationError):
    rc = 1001


class PeerClosed(CommunicationError):
    """The peer closed the connection without answering (how slurmd rejects most requests)."""

    rc = 1003


class Refused(CommunicationError):
    """Every attempt was refused: closed without an answer, HTTP, or RC 1007 (see `attempts`)."""

    rc = 1005

    def __init__(self, message: str, attempts: list[Attempt]) -> None:
        super().__init__(message)
        self.attempts = attempts


class Timeout(CommunicationError):
    """A timeout or the overall deadline expired."""

    rc = 5004


class LocalTimeout(Timeout):
    """A local service (munged, the user and group databases) did not answer within the deadline."""


class RemoteError(SlurmError):
    """The peer answered with RESPONSE_SLURM_RC and a non-zero return code."""

    def __init__(self, rc: int, version: int | None = None) -> None:
        super().__init__(f"slurmd answered error {rc}: {slurm_strerror(rc)}", rc=rc)
        self.version = version


class UnexpectedMessage(SlurmError):
    """A well-formed reply of a type that does not answer the request."""

    rc = 1000


class InputError(SlurmError):
    """A file or value given to a command cannot be used: unreadable, too large, or not in its format."""
