"""auth/slurm (23.11+) tokens: HS256 JSON Web Tokens keyed by slurm.key or by a key of slurm.jwks. No sockets.

A token is `b64url(header).b64url(claims).b64url(HMAC-SHA256)`, unpadded; the auth section carries it as
a packstr under plugin id 103. Claims: iat, exp (iat + AuthInfo ttl, default 60 s), ver (the signer's
protocol version), ruid (the only uid that may verify it, or UID_ANY), context ("auth" when a daemon
or a key holder signs, "sack" when the sack socket did), cluster (ClusterName, when set), uid, gid,
host and payload (standard base64 of the body hash, as MUNGE's payload: slurmproto.auth).

`verify()` accepts what a slurmd's auth/slurm accepts: the key named by the header's kid (else the default
key), a key not expired, alg HS256, a good signature, exp not passed, ruid ANY or the verifier's uid, host
and context present (context "auth" or "sack"), and iat, uid and gid present, unless `absent` names them:
a slurmd reads a missing iat, uid or gid as libjwt's -1 (the release row's auth_slurm.absent_ids; the hook
passes none and so requires them). Each way a token fails has its own error (slurmproto.errors.TokenError's
subclasses).

Written on the standard library rather than PyJWT: `import jwt` (PyJWT 2.15) costs about 45 ms, since
its JWKS client pulls in http.client, ssl and email (python -X importtime), which is as much as the
hook's whole added login latency; HS256 is one HMAC and the claims are a flat JSON object.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from slurmproto.errors import (
    BadAlgorithm,
    BadSignature,
    ExpiredKey,
    ExpiredToken,
    MalformedToken,
    MissingClaim,
    OversizedToken,
    TokenNotJson,
    UnknownKid,
    WrongContext,
    WrongRuid,
)

DEFAULT_TTL = 60
"""Seconds a token lives when AuthInfo has no ttl= (slurmproto.signers repeats it, to import nothing)."""
UID_ANY = 0xFFFFFFFF
"""ruid of a token any uid may verify (SLURM_AUTH_UID_ANY, -1 as a u32; also slurmproto.signers')."""
MAX_TOKEN = 64 * 1024
"""Longest token read by default: a real one is about 400 bytes; Slurm's own limit is the message's."""
CONTEXTS = frozenset({"auth", "sack"})
REQUIRED_INTS = ("iat", "uid", "gid")
ABSENT_AS = {"iat": -1, "uid": UID_ANY, "gid": UID_ANY}
"""How a slurmd holds an iat, uid or gid its token lacks: libjwt 1.x's jwt_get_grant_int() returns -1 with
errno ENOENT, and auth/slurm refuses only EINVAL; -1 as a time_t, and as a uid_t or gid_t."""
ALGORITHM = "HS256"


@dataclass(frozen=True)
class Key:
    """One HS256 key: slurm.key's bytes, or a slurm.jwks entry with its kid and optional expiry."""

    secret: bytes
    kid: str | None = None
    expires: int | None = None
    """Unix time after which tokens signed with it are refused (jwks "exp")."""

    def __repr__(self) -> str:  # never show the secret
        return f"Key(kid={self.kid!r}, {len(self.secret)} bytes, expires={self.expires})"


@dataclass(frozen=True)
class KeyRing:
    """The keys a node holds: the one it signs with (`default`) and, from slurm.jwks, the others by kid."""

    default: Key
    by_kid: Mapping[str, Key]
    source: str
    """The file they were read from (for messages)."""

    def for_header(self, header: Mapping[str, Any]) -> Key:
        """The key a token's header selects: its kid's (UnknownKid when no such key), else the default."""
        kid = header.get("kid")
        if kid is None or not self.by_kid:
            return self.default
        if not isinstance(kid, str) or kid not in self.by_kid:
            raise UnknownKid(f"auth/slurm token names key {kid!r}, which {self.source} does not hold")
        return self.by_kid[kid]


@dataclass(frozen=True)
class Claims:
    """What a token says, once verified (or, from parse(), as it claims)."""

    uid: int
    gid: int
    host: str
    context: str
    iat: int
    exp: int
    ruid: int
    payload: bytes
    """The body hash (empty when the token has none)."""
    ver: int | None = None
    cluster: str | None = None


@dataclass(frozen=True)
class Token:
    """A token taken apart, not verified."""

    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes
    text: str

    def checked_claims(self, absent: Collection[str] = ()) -> Claims:
        """The claims Slurm requires, typed (MissingClaim, MalformedToken when one is absent or ill-typed);
        those of `absent` (some of REQUIRED_INTS) that the token lacks take their ABSENT_AS value."""
        claims = self.claims
        ints = {name: ABSENT_AS[name] if name in absent and name not in claims else _claim_int(claims, name)
                for name in (*REQUIRED_INTS, "exp", "ruid")}
        host, context = _claim_str(claims, "host"), _claim_str(claims, "context")
        cluster = claims.get("cluster")
        ver = claims.get("ver")
        return Claims(uid=ints["uid"], gid=ints["gid"], host=host, context=context, iat=ints["iat"],
                      exp=ints["exp"], ruid=ints["ruid"], payload=_payload(claims),
                      ver=ver if _is_int(ver) else None, cluster=cluster if isinstance(cluster, str) else None)


def parse(text: str, max_length: int = MAX_TOKEN) -> Token:
    """Take a token apart (three base64url parts, two JSON objects, a signature); no check of its claims."""
    if len(text) > max_length:
        raise OversizedToken(f"auth/slurm token of {len(text)} bytes (at most {max_length} are read)")
    parts = text.split(".")
    if len(parts) != 3:
        raise MalformedToken(f"auth/slurm token has {len(parts)} dot-separated parts, not 3")
    header, claims = (_json_part(part, what) for part, what in zip(parts[:2], ("header", "claims"), strict=True))
    return Token(header, claims, f"{parts[0]}.{parts[1]}".encode("ascii", "replace"),
                 _b64url(parts[2], "signature"), text)


def verify(text: str, keys: KeyRing, *, verifier_uid: int, now: float | None = None, absent: Collection[str] = (),
           max_length: int = MAX_TOKEN) -> Claims:
    """The claims of a token that a slurmd running as `verifier_uid` would accept; raises a TokenError.
    `absent`: the claims of REQUIRED_INTS that may be missing (see ABSENT_AS)."""
    token = parse(text, max_length)
    moment = time.time() if now is None else now
    check_signature(token, keys, moment)
    exp = _claim_int(token.claims, "exp")
    if exp < int(moment):
        raise ExpiredToken(f"auth/slurm token expired at {exp} ({int(moment) - exp} s ago)")
    ruid = _claim_int(token.claims, "ruid")
    if ruid not in (UID_ANY, verifier_uid):
        raise WrongRuid(f"auth/slurm token may be verified by uid {ruid} only, not by uid {verifier_uid}")
    claims = token.checked_claims(absent)
    if claims.context not in CONTEXTS:
        raise WrongContext(f"auth/slurm token's context is {claims.context!r}, not 'auth' or 'sack'")
    return claims


def check_signature(token: Token, keys: KeyRing, now: float | None = None) -> Key:
    """The key that signed `token` (alg HS256, the key its kid selects, not expired at `now`)."""
    alg = token.header.get("alg")
    if not isinstance(alg, str) or alg.upper() != ALGORITHM:
        raise BadAlgorithm(f"auth/slurm token uses alg {alg!r}; only {ALGORITHM} is accepted")
    key = keys.for_header(token.header)
    moment = time.time() if now is None else now
    if key.expires is not None and key.expires < moment:
        raise ExpiredKey(f"auth/slurm token signed with key {key.kid!r}, which expired at {key.expires}")
    expected = hmac.new(key.secret, token.signing_input, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, token.signature):
        raise BadSignature("auth/slurm token's signature does not verify with "
                           f"{'key ' + repr(key.kid) if key.kid else 'the node key'} of {keys.source}")
    return key


def sign(payload: bytes, key: Key, *, uid: int, gid: int, host: str, ruid: int = UID_ANY, ver: int,
         ttl: int = DEFAULT_TTL, cluster: str | None = None, context: str = "auth",
         now: float | None = None) -> str:
    """A token for `payload` (the body hash), as a daemon or a key holder signs it."""
    iat = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"iat": iat, "exp": iat + ttl, "ver": ver, "ruid": ruid, "context": context,
                              "uid": uid, "gid": gid, "host": host}
    if cluster:
        claims["cluster"] = cluster
    if payload:
        claims["payload"] = base64.b64encode(payload).decode("ascii")
    header: dict[str, Any] = {"alg": ALGORITHM, "typ": "JWT"}
    if key.kid is not None:
        header["kid"] = key.kid
    return encode(header, claims, key.secret)


def encode(header: object, claims: object, secret: bytes) -> str:
    """Any header and claims (JSON values) as a token whose signature is HMAC-SHA256 keyed with `secret`:
    sign()'s last step, and how tests put together tokens a signer never would."""
    signing_input = f"{_encode_part(header)}.{_encode_part(claims)}"
    signature = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode('ascii')}"


# --- pieces -------------------------------------------------------------------------------------------------


def _encode_part(obj: object) -> str:
    # Sorted, compact: the bytes libjwt (jansson) produces, which captures show.
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode("ascii")


def _b64url(part: str, what: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(part.encode("ascii") + b"=" * (-len(part) % 4))
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise MalformedToken(f"auth/slurm token's {what} is not base64url") from None


def _json_part(part: str, what: str) -> dict[str, Any]:
    raw = _b64url(part, what)
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):
        raise TokenNotJson(f"auth/slurm token's {what} is not JSON") from None
    if not isinstance(obj, dict):
        raise TokenNotJson(f"auth/slurm token's {what} is JSON but not an object")
    return obj


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _claim_int(claims: Mapping[str, Any], name: str) -> int:
    if name not in claims:
        raise MissingClaim(name)
    value = claims[name]
    if not _is_int(value) or not -(1 << 63) <= value < (1 << 64):
        raise MalformedToken(f"auth/slurm token's {name!r} claim is not an integer: {value!r:.40}")
    return int(value)


def _claim_str(claims: Mapping[str, Any], name: str) -> str:
    if name not in claims:
        raise MissingClaim(name)
    value = claims[name]
    if not isinstance(value, str):
        raise MalformedToken(f"auth/slurm token's {name!r} claim is not a string: {value!r:.40}")
    return value


def _payload(claims: Mapping[str, Any]) -> bytes:
    """The payload claim: standard base64 as Slurm writes it (base64url and missing padding accepted)."""
    text = claims.get("payload")
    if text is None:
        return b""
    if not isinstance(text, str):
        raise MalformedToken("auth/slurm token's 'payload' claim is not a string")
    try:
        return base64.b64decode(text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise MalformedToken("auth/slurm token's 'payload' claim is not base64") from None
