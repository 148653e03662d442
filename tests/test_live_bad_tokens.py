"""Bad auth/slurm credentials over the wire, to Debian's real Slurm 24.11 and 26.05 slurmd (AuthType=auth/slurm,
tests/support/chroot_cluster.py) and to fake-slurmd emulating the same release with the same slurm.key: both
react alike to each (close without an answer, RESPONSE_SLURM_RC and its rc, or the answer and the job it
names), and that reaction is the one the release row predicts.

Every frame is a REQUEST_NETWORK_CALLERID about the connection a job of alice's holds in the cluster's
network namespace, its token put together with slurmproto.slurmauth.encode (sign()'s last step, which also
writes what no signer would) and framed by the codec. The fake runs in the same namespace and knows the job
(by SLURM_JOB_ID in its processes' environment), so a token that gets through names the job, or not, in both.
Both run as root and verify as uid 0.

What the real daemons do (24.11 | 26.05): a refused token: close | RC 1007 (the row's bad_cred_verify); a
plugin-101 frame: close (a slurmd loads its own AuthType only); a payload of another body: RC 5003. Accepted:
a kid (no slurm.jwks: the default key is used), no payload, a token over 64 KiB (slurmd's bound is the
message's), and no iat, uid or gid: libjwt reads a missing one as -1 and auth/slurm lets that pass (the row's
auth_slurm.absent_ids), so a token without uid authenticates uid 4294967295, which is not the job's owner.
With a slurm.jwks (chroot_files.slurm_jwks: k1 the default, k2, old expired), the daemons use its keys and no
longer slurm.key: a token is verified with the key its kid names, else with k1; an unknown kid, an expired
key, a signature by another key than the kid's, and slurm.key's signature are refused, as above.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
import pwd
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import pytest

from fake_slurmd.controller import FakeSlurmd
from fake_slurmd.scenario import Job, NodeSpec, Scenario
from slurmproto.auth import payload_hash
from slurmproto.authkeys import load_keyring
from slurmproto.codec import decode_stream, encode_frame
from slurmproto.constants import NO_VAL, AuthPlugin, MsgType
from slurmproto.errors import ProtocolError
from slurmproto.messages import NetworkCallerIdRequest, NetworkCallerIdResponse, ReturnCode
from slurmproto.slurmauth import MAX_TOKEN, UID_ANY, KeyRing, encode
from slurmproto.versions import Refusal, Release, release_named
from tests.support.chroot_cluster import RELEASES, ChrootCluster, HeldConnection
from tests.support.fixtures import TEST_USERS, LiveClusters

HS256 = {"alg": "HS256", "typ": "JWT"}
OWNER = TEST_USERS[0]


@dataclass(frozen=True)
class Wire:
    """What a case's frame is made of: the node's keys (and slurm.key), the request, its version and the moment."""

    keys: KeyRing
    slurm_key: bytes
    version: int
    request: NetworkCallerIdRequest
    now: int

    @property
    def secret(self) -> bytes:
        """The key the node signs with (slurm.key, or slurm.jwks's default)."""
        return self.keys.default.secret

    def claims(self, **changes: object) -> dict[str, object]:
        """A root client's claims for the request (a change to None leaves the claim out)."""
        payload = payload_hash(self.request.encode(self.version), self.request.MSG_TYPE)
        claims: dict[str, object] = {"iat": self.now, "exp": self.now + 60, "ver": self.version, "ruid": UID_ANY,
                                     "context": "auth", "uid": 0, "gid": 0, "host": "node1",
                                     "payload": base64.b64encode(payload).decode("ascii")}
        claims.update(changes)
        return {k: v for k, v in claims.items() if v is not None}

    def frame(self, token: str, plugin_id: int = AuthPlugin.AUTH_SLURM) -> bytes:
        return encode_frame(self.request, self.version, credential=token, plugin_id=plugin_id)

    def signed(self, header: object = None, secret: bytes | None = None, **changes: object) -> bytes:
        """A frame whose token has these claims, HS256-signed with the node key (or `secret`)."""
        return self.frame(encode(header or HS256, self.claims(**changes), secret or self.secret))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _part(obj: object) -> str:
    """One JSON part of a token, as encode() writes it."""
    return encode(obj, {}, b"").split(".")[0]


def _hs512(wire: Wire) -> bytes:
    signing_input = f"{_part({'alg': 'HS512', 'typ': 'JWT'})}.{_part(wire.claims())}"
    return wire.frame(f"{signing_input}.{_b64(hmac.new(wire.secret, signing_input.encode(), hashlib.sha512).digest())}")


def _alg(alg: str, signature: bytes) -> Callable[[Wire], bytes]:
    def build(wire: Wire) -> bytes:
        return wire.frame(f"{_part({'alg': alg, 'typ': 'JWT'})}.{_part(wire.claims())}.{_b64(signature)}")
    return build


def _other_body(wire: Wire) -> bytes:
    """A good token whose payload is the hash of another request's body."""
    other = replace(wire.request, port_src=wire.request.port_src ^ 1)
    payload = payload_hash(other.encode(wire.version), other.MSG_TYPE)
    return wire.signed(payload=base64.b64encode(payload).decode("ascii"))


def _without(claim: str) -> Callable[[Wire], bytes]:
    return lambda wire: wire.signed(**{claim: None})


def _kid(kid: str, signer: str | None = None) -> Callable[[Wire], bytes]:
    """A token whose header names `kid`, signed with slurm.jwks's key `signer` (default: the kid's)."""
    return lambda wire: wire.signed(header={**HS256, "kid": kid}, secret=wire.keys.by_kid[signer or kid].secret)


JOB, NOT_NAMED, REFUSED, CLOSE, RC_5003 = "job", "not named", "refused", "close", "rc 5003"
"""What a case gets: the job named; an answer naming none; the row's refusal of a bad credential; a close;
RESPONSE_SLURM_RC 5003 (the body does not match the credential)."""
CASES: dict[str, tuple[Callable[[Wire], bytes], str]] = {
    "good": (lambda w: w.signed(), JOB),
    "bad-signature": (lambda w: w.signed(secret=bytes(b ^ 0x55 for b in w.secret)), REFUSED),
    "expired": (lambda w: w.signed(iat=w.now - 600, exp=w.now - 300), REFUSED),
    "other-ruid": (lambda w: w.signed(ruid=pwd.getpwnam(OWNER).pw_uid), REFUSED),
    "missing-exp": (_without("exp"), REFUSED),
    "missing-ruid": (_without("ruid"), REFUSED),
    "missing-host": (_without("host"), REFUSED),
    "missing-context": (_without("context"), REFUSED),
    "missing-iat": (_without("iat"), JOB),
    "missing-uid": (_without("uid"), NOT_NAMED),
    "missing-gid": (_without("gid"), JOB),
    "missing-payload": (_without("payload"), JOB),
    "other-context": (lambda w: w.signed(context="other"), REFUSED),
    "alg-none": (_alg("none", b""), REFUSED),
    "alg-HS512": (_hs512, REFUSED),
    "alg-RS256": (_alg("RS256", os.urandom(256)), REFUSED),
    "kid-without-jwks": (lambda w: w.signed(header={**HS256, "kid": "k9"}), JOB),
    "oversized-signed": (lambda w: w.signed(host="h" * (MAX_TOKEN + 1)), JOB),
    "oversized-junk": (lambda w: w.frame("a" * (MAX_TOKEN + 1)), REFUSED),
    "not-json": (lambda w: w.frame(f"{_b64(b'{not json')}.{_part(w.claims())}.{_b64(b'sig')}"), REFUSED),
    "not-base64": (lambda w: w.frame("!!!!.####.$$$$"), REFUSED),
    "munge-plugin": (lambda w: w.frame("MUNGE:AwQDAAA=:", plugin_id=AuthPlugin.AUTH_MUNGE), CLOSE),
    "body-hash-mismatch": (_other_body, RC_5003),
}
JWKS_CASES: dict[str, tuple[Callable[[Wire], bytes], str]] = {
    "no-kid": (lambda w: w.signed(), JOB),
    "kid-default": (_kid("k1"), JOB),
    "kid-other": (_kid("k2"), JOB),
    "kid-unknown": (_kid("k9", "k1"), REFUSED),
    "kid-expired-key": (_kid("old"), REFUSED),
    "kid-of-another-key": (_kid("k2", "k1"), REFUSED),
    "slurm.key": (lambda w: w.signed(secret=w.slurm_key), REFUSED),
}


def reaction(reply: bytes) -> str:
    """What a slurmd sent: "close" (nothing), "rc N", "HTTP/1.1 ...", or the answer with the job it names."""
    if not reply:
        return CLOSE
    if reply.startswith(b"HTTP/"):
        return reply.split(b"\r\n", 1)[0].decode("ascii", "replace")
    try:
        frames = decode_stream(reply)
    except ProtocolError as exc:
        return f"undecodable: {exc}"
    if len(frames) != 1:
        return f"{len(frames)} frames"
    message = frames[0].message
    if isinstance(message, ReturnCode):
        return f"rc {message.return_code}"
    if isinstance(message, NetworkCallerIdResponse):
        return "not named" if message.job_id == NO_VAL else f"job {message.job_id}"
    return MsgType(frames[0].header.msg_type).name


def expected(what: str, release: Release, job_id: int) -> str:
    """The reaction the release row predicts."""
    if what == REFUSED:
        return {Refusal.CLOSE: CLOSE, Refusal.RC_1007: "rc 1007"}[release.slurmd.bad_cred_verify]
    return f"job {job_id}" if what == JOB else what


@dataclass(frozen=True)
class Pair:
    """One release's real slurmd (auth/slurm) and a fake-slurmd of that release with its keys, in its namespace."""

    release: Release
    real: ChrootCluster
    held: HeldConnection
    fake_port: int

    def react(self, case: str, build: Callable[[Wire], bytes], what: str) -> None:
        """Send the case's frame to both; they react alike, as the release row says."""
        conn, real = self.held, self.real
        request = NetworkCallerIdRequest.for_connection(ipaddress.ip_address(conn.client[0]), conn.client[1],
                                                        ipaddress.ip_address(conn.server[0]), conn.server[1])
        keys = load_keyring(str(real.key_path), str(real.jwks_path))
        frame = build(Wire(keys, real.key_path.read_bytes(), self.release.protocol_version, request, int(time.time())))
        theirs, ours = reaction(real.exchange(frame)), reaction(real.exchange(frame, port=self.fake_port))
        assert theirs == ours, f"{case}: the real slurmd {theirs}, fake-slurmd {ours}"
        assert theirs == expected(what, self.release, conn.job_id), f"{case}: {theirs}"


def _pair(live_clusters: LiveClusters, name: str, jwks: bool) -> Iterator[Pair]:
    real, held = live_clusters.get(name, "slurm", jwks), live_clusters.held(name, "slurm", jwks)
    job = Job(held.job_id, pwd.getpwnam(OWNER).pw_uid, environ=True)
    scenario = Scenario([NodeSpec(real.node_name, port=0, netns=real.netns)], {job.job_id: job}, release=name,
                        client_timeout=5.0)
    jwks_path = str(real.jwks_path) if jwks else None
    with FakeSlurmd(scenario, auth="slurm", key=str(real.key_path), jwks=jwks_path) as fake:
        yield Pair(release_named(name), real, held, fake.port)


@pytest.fixture(scope="module", params=list(RELEASES))
def pair(request: pytest.FixtureRequest, live_clusters: LiveClusters) -> Iterator[Pair]:
    yield from _pair(live_clusters, request.param, jwks=False)


@pytest.fixture(scope="module", params=list(RELEASES))
def jwks_pair(request: pytest.FixtureRequest, live_clusters: LiveClusters) -> Iterator[Pair]:
    yield from _pair(live_clusters, request.param, jwks=True)


@pytest.mark.parametrize("case", list(CASES))
def test_real_and_fake_slurmd_react_alike(pair: Pair, case: str) -> None:
    pair.react(case, *CASES[case])


@pytest.mark.parametrize("case", list(JWKS_CASES))
def test_with_a_jwks_real_and_fake_slurmd_react_alike(jwks_pair: Pair, case: str) -> None:
    jwks_pair.react(case, *JWKS_CASES[case])
