"""auth/slurm tokens and keys without daemons: signing, every way a token is refused, key files, sack bytes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import struct
from pathlib import Path

import pytest

from slurmproto import errors
from slurmproto.auth import payload_hash
from slurmproto.authkeys import jwks_keyring, key_files, load_keyring
from slurmproto.sack import SACK_CREATE, SACK_VERIFY, create_request, socket_paths, token_length, verify_request
from slurmproto.signers import AuthChoice, KeySigner, SackSigner
from slurmproto.slurmauth import ABSENT_AS, MAX_TOKEN, REQUIRED_INTS, UID_ANY, Key, KeyRing, parse, sign, verify
from slurmproto.versions import BY_NAME, SLURM_26_05

NOW = 1_800_000_000
SECRET = bytes(range(32))
RING = KeyRing(Key(SECRET), {}, "slurm.key")
PAYLOAD = payload_hash(b"body", 5035)


def token(**changes: object) -> str:
    claims = dict(uid=0, gid=0, host="node1", ruid=UID_ANY, ver=SLURM_26_05, now=NOW)
    claims.update(changes)
    return sign(PAYLOAD, Key(SECRET), **claims)  # type: ignore[arg-type]


def b64(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def forged(header: object, claims: object, key: bytes = SECRET) -> str:
    """A token put together by hand: any header and claims, signed with `key`."""
    signing_input = f"{b64(header)}.{b64(claims)}"
    mac = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


GOOD_CLAIMS = {"iat": NOW, "exp": NOW + 60, "ruid": UID_ANY, "uid": 0, "gid": 0, "host": "n", "context": "auth"}
HS256 = {"alg": "HS256", "typ": "JWT"}


def test_signed_token_verifies_with_its_claims() -> None:
    claims = verify(token(cluster="c1"), RING, verifier_uid=1000, now=NOW + 1)
    assert (claims.uid, claims.gid, claims.host, claims.context, claims.payload) == (0, 0, "node1", "auth", PAYLOAD)
    assert (claims.exp - claims.iat, claims.ver, claims.cluster, claims.ruid) == (60, SLURM_26_05, "c1", UID_ANY)


def test_token_shape_is_libjwts() -> None:
    header, claims, signature = token().split(".")
    assert json.loads(base64.urlsafe_b64decode(header + "==")) == HS256
    decoded = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    assert list(decoded) == sorted(decoded)  # jansson's sorted keys
    assert decoded["payload"] == base64.b64encode(PAYLOAD).decode()  # standard base64, padded
    assert "=" not in signature and len(base64.urlsafe_b64decode(signature + "=")) == 32


@pytest.mark.parametrize(("text", "error"), [
    (token(ruid=1000), None),
    (token(ttl=-5), errors.ExpiredToken),
    (token(ruid=1001), errors.WrongRuid),
    (token()[:-2] + ("AA" if not token().endswith("AA") else "BB"), errors.BadSignature),
    (sign(PAYLOAD, Key(b"another key of 32 bytes........."), uid=0, gid=0, host="n", ver=1, now=NOW),
     errors.BadSignature),
    (forged({"alg": "none"}, GOOD_CLAIMS), errors.BadAlgorithm),
    (forged({"alg": "HS512"}, GOOD_CLAIMS), errors.BadAlgorithm),
    (forged({"typ": "JWT"}, GOOD_CLAIMS), errors.BadAlgorithm),
    (forged(HS256, {k: v for k, v in GOOD_CLAIMS.items() if k != "host"}), errors.MissingClaim),
    (forged(HS256, {k: v for k, v in GOOD_CLAIMS.items() if k != "ruid"}), errors.MissingClaim),
    (forged(HS256, {k: v for k, v in GOOD_CLAIMS.items() if k != "exp"}), errors.MissingClaim),
    (forged(HS256, {**GOOD_CLAIMS, "uid": "0"}), errors.MalformedToken),
    (forged(HS256, {**GOOD_CLAIMS, "exp": True}), errors.MalformedToken),
    (forged(HS256, {**GOOD_CLAIMS, "context": "other"}), errors.WrongContext),
    (forged(HS256, {**GOOD_CLAIMS, "payload": "***"}), errors.MalformedToken),
    ("a.b", errors.MalformedToken),
    ("a.b.c.d", errors.MalformedToken),
    ("!!.e30.AA", errors.MalformedToken),
    (f"{b64(HS256)}.{base64.urlsafe_b64encode(b'not json').decode()}.AA", errors.TokenNotJson),
    (f"{b64(HS256)}.{b64([1, 2])}.AA", errors.TokenNotJson),
    ("a" * (MAX_TOKEN + 1), errors.OversizedToken),
    (forged({**HS256, "kid": "k9"}, GOOD_CLAIMS), None),  # no jwks: a kid is ignored, as Slurm does
], ids=["ruid-ours", "expired", "wrong-ruid", "bad-mac", "other-key", "alg-none", "alg-hs512", "no-alg",
        "no-host", "no-ruid", "no-exp", "uid-string", "exp-bool", "context", "payload-not-b64", "two-parts",
        "four-parts", "header-not-b64", "not-json", "not-object", "oversized", "kid-without-jwks"])
def test_tokens_are_judged_like_auth_slurm(text: str, error: type[Exception] | None) -> None:
    if error is None:
        assert verify(text, RING, verifier_uid=1000, now=NOW).uid == 0
        return
    with pytest.raises(error) as info:
        verify(text, RING, verifier_uid=1000, now=NOW)
    assert isinstance(info.value, errors.TokenError) and str(info.value)


@pytest.mark.parametrize("claim", REQUIRED_INTS)
def test_a_missing_id_claim_is_read_as_a_slurmd_reads_it_only_when_asked(claim: str) -> None:
    text = forged(HS256, {k: v for k, v in GOOD_CLAIMS.items() if k != claim})
    with pytest.raises(errors.MissingClaim, match=claim):
        verify(text, RING, verifier_uid=0, now=NOW)
    claims = verify(text, RING, verifier_uid=0, now=NOW, absent=REQUIRED_INTS)
    assert getattr(claims, claim) == ABSENT_AS[claim]
    assert ABSENT_AS[claim] == (-1 if claim == "iat" else 0xFFFFFFFF)  # libjwt's -1, as a time_t or a uid_t


def test_a_longer_token_is_read_when_the_caller_allows_it() -> None:
    text = token(host="h" * MAX_TOKEN)
    with pytest.raises(errors.OversizedToken):
        verify(text, RING, verifier_uid=0, now=NOW)
    assert verify(text, RING, verifier_uid=0, now=NOW, max_length=2 * MAX_TOKEN).host == "h" * MAX_TOKEN


JWKS = {"keys": [
    {"kid": "old", "kty": "oct", "alg": "HS256", "k": base64.urlsafe_b64encode(b"o" * 16).decode(), "exp": NOW - 1},
    {"kid": "new", "kty": "oct", "alg": "HS256", "k": base64.urlsafe_b64encode(b"n" * 32).decode().rstrip("="),
     "use": "default"},
]}


def test_jwks_selects_by_kid_and_refuses_expired_or_unknown_keys() -> None:
    ring = jwks_keyring(json.dumps(JWKS).encode(), "slurm.jwks")
    assert ring.default.kid == "new"
    signed = sign(PAYLOAD, ring.default, uid=0, gid=0, host="n", ver=1, now=NOW)
    assert parse(signed).header["kid"] == "new"
    assert verify(signed, ring, verifier_uid=0, now=NOW).payload == PAYLOAD
    with pytest.raises(errors.ExpiredKey):
        verify(sign(PAYLOAD, ring.by_kid["old"], uid=0, gid=0, host="n", ver=1, now=NOW), ring, verifier_uid=0,
               now=NOW)
    with pytest.raises(errors.UnknownKid):
        verify(forged({**HS256, "kid": "nope"}, GOOD_CLAIMS, b"n" * 32), ring, verifier_uid=0, now=NOW)


@pytest.mark.parametrize(("document", "message"), [
    (b"{", "not JSON"),
    (b'{"keys": []}', "no \"keys\""),
    (json.dumps({"keys": [{**JWKS["keys"][1], "kty": "RSA"}]}).encode(), "kty"),
    (json.dumps({"keys": [{**JWKS["keys"][1], "k": base64.b64encode(b"short").decode()}]}).encode(), "5 bytes"),
    (json.dumps({"keys": [JWKS["keys"][1], JWKS["keys"][1]]}).encode(), "not unique"),
    (json.dumps({"keys": [JWKS["keys"][1], {**JWKS["keys"][0], "use": "default"}]}).encode(), "more than one"),
    (json.dumps({"keys": [{**JWKS["keys"][1], "exp": "soon"}]}).encode(), "exp"),
    (json.dumps({"keys": [{"kid": "x"}]}).encode(), "'kty'"),
], ids=["not-json", "no-keys", "kty", "short", "dup-kid", "two-defaults", "exp-type", "no-kty"])
def test_bad_jwks_files(document: bytes, message: str) -> None:
    with pytest.raises(errors.KeyFileError, match=message):
        jwks_keyring(document, "slurm.jwks")


def test_key_files_beside_slurm_conf(tmp_path: Path) -> None:
    conf = tmp_path / "slurm.conf"
    assert key_files(str(conf)) == (str(tmp_path / "slurm.key"), str(tmp_path / "slurm.jwks"))
    assert key_files(str(conf), {"SLURM_SACK_KEY": "/k", "SLURM_SACK_JWKS": "/j"}) == ("/k", "/j")


def test_key_file_checks(tmp_path: Path) -> None:
    key = tmp_path / "slurm.key"
    with pytest.raises(errors.KeyFileError, match="cannot read"):
        load_keyring(str(key))
    key.write_bytes(SECRET)
    key.chmod(0o604)
    with pytest.raises(errors.KeyFileError, match="insecure"):
        load_keyring(str(key))
    key.chmod(0o600)
    assert load_keyring(str(key)).default.secret == SECRET
    key.write_bytes(b"")
    with pytest.raises(errors.KeyFileError, match="empty"):
        load_keyring(str(key))
    os.mkfifo(tmp_path / "fifo", 0o600)
    with pytest.raises(errors.KeyFileError, match="regular"):
        load_keyring(str(tmp_path / "fifo"))
    jwks = tmp_path / "slurm.jwks"
    jwks.write_text(json.dumps(JWKS))
    jwks.chmod(0o640)
    assert load_keyring(str(key), str(jwks)).default.kid == "new"  # slurm.jwks wins when it exists


def test_key_repr_hides_the_secret() -> None:
    assert SECRET.hex() not in repr(Key(SECRET)) and "32 bytes" in repr(Key(SECRET))


def test_sack_request_bytes() -> None:
    create = create_request(0x2D00, 1000, b"\x02" + bytes(32))
    assert create[:2] == b"\x2d\x00"
    length, op, r_uid, dlen = struct.unpack(">IIII", create[2:18])
    assert (length, op, r_uid, dlen) == (len(create) - 2, SACK_CREATE, 1000, 33)
    check = verify_request(0x2A00, "a.b.c")
    assert struct.unpack(">IIII", check[2:18]) == (len(check) - 2, SACK_VERIFY, 6, int.from_bytes(b"a.b.", "big"))
    assert check.endswith(b"a.b.c\0")
    with pytest.raises(errors.SackError, match="refused"):
        token_length(bytes(4))
    with pytest.raises(errors.SackError, match="at most"):
        token_length((MAX_TOKEN + 2).to_bytes(4, "big"))


@pytest.mark.parametrize(("release", "env", "expected_first"), [
    ("24.11", {"SLURM_SACK_SOCKET": "/x.sock"}, "/run/slurm/sack.socket"),
    ("26.05", {"SLURM_SACK_SOCKET": "/x.sock"}, "/x.sock"),
    ("26.05", {}, "/run/slurm-c1/sack.socket"),
])
def test_sack_socket_lookup_follows_the_row(release: str, env: dict[str, str], expected_first: str) -> None:
    assert socket_paths(BY_NAME[release].auth_slurm, "c1", env)[0] == expected_first


def test_signer_choice(tmp_path: Path) -> None:
    key = tmp_path / "slurm.key"
    choice = AuthChoice("auth/slurm", key_file=str(key), jwks_file=str(tmp_path / "slurm.jwks"), cluster="c1")
    assert isinstance(choice.make_signer(BY_NAME["26.05"]), SackSigner)  # no key: through sack
    key.write_bytes(SECRET)
    key.chmod(0o600)
    signer = choice.make_signer(BY_NAME["26.05"])
    assert isinstance(signer, KeySigner) and signer.plugin_id == 103
    claims = signer.decode(signer.encode(PAYLOAD))
    assert (claims.uid, claims.payload, claims.cluster) == (os.getuid(), PAYLOAD, "c1")
    with pytest.raises(errors.AuthError, match=r"23\.11"):
        choice.make_signer(BY_NAME["23.02"])
    with pytest.raises(errors.AuthError, match="auth/jwt"):
        AuthChoice("auth/jwt").make_signer(BY_NAME["26.05"])
