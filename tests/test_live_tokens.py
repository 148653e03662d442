"""Golden tests on the auth/slurm frames real Slurm 24.11 and 26.05 exchanged (tests/vectors/live): the
project's codec decodes them and slurmproto.slurmauth verifies every real token with the cluster's key,
as its slurmd did, and matches its payload to the body; a flipped byte or another key is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slurmproto.auth import check_payload
from slurmproto.codec import decode_stream
from slurmproto.constants import AuthPlugin
from slurmproto.errors import BadSignature
from slurmproto.slurmauth import UID_ANY, Key, KeyRing, parse, verify

VECTORS = sorted((Path(__file__).parent / "vectors" / "live").glob("*-auth-slurm.json"))


def _frames() -> list[tuple[str, bytes, bytes]]:
    """(id, frame, slurm.key) for every recorded auth/slurm frame."""
    found = []
    for path in VECTORS:
        capture = json.loads(path.read_text())
        key = bytes.fromhex(capture["slurm_key_hex"])
        for case in capture["cases"]:
            for n, exchange in enumerate(case["exchanges"]):
                for side in ("request_hex", "response_hex"):
                    for m, frame in enumerate(exchange[side]):
                        found.append((f"{capture['release']}-{case['case']}-{n}-{side[:-4]}-{m}", bytes.fromhex(frame),
                                      key))
    return found


FRAMES = [f for f in _frames() if decode_stream(f[1])[0].auth is not None]


def test_there_are_signed_frames_of_both_releases() -> None:
    assert {name.split("-")[0] for name, _, _ in FRAMES} >= {"24.11", "26.05"}


@pytest.mark.parametrize(("name", "frame", "key"), FRAMES, ids=[f[0] for f in FRAMES])
def test_real_tokens_verify_and_bind_the_body(name: str, frame: bytes, key: bytes) -> None:
    decoded = decode_stream(frame)[0]
    assert decoded.auth is not None and decoded.auth.plugin_id == AuthPlugin.AUTH_SLURM
    token = decoded.auth.credential or ""
    raw = parse(token).claims
    verifier = raw["ruid"] if raw["ruid"] != UID_ANY else 0
    claims = verify(token, KeyRing(Key(key), {}, "slurm.key"), verifier_uid=verifier, now=raw["iat"])
    assert claims.context in ("auth", "sack") and claims.exp - claims.iat == 60
    assert check_payload(claims.payload, decoded.body, decoded.header.msg_type) is not None
    with pytest.raises(BadSignature):
        verify(token, KeyRing(Key(bytes(b ^ 1 for b in key)), {}, "other"), verifier_uid=verifier, now=raw["iat"])
