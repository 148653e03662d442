"""Real frames of Slurm 24.11 and 26.05 in both auth modes: captured live from the chroot clusters in this
session, and recorded the same way in tests/vectors/live/*.json (tests/support/live_vectors.py).

Every frame is decoded by our codec and re-encodes byte for byte. The token of an auth/slurm frame (plugin
103) is taken apart by slurmproto.slurmauth: the JWT's shape, its HMAC under the cluster's slurm.key, and
its claims.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from slurmproto.auth import payload_hash
from slurmproto.codec import decode_stream, encode_frame
from slurmproto.constants import NO_VAL, AuthPlugin
from slurmproto.header import Header
from slurmproto.messages import Message, NetworkCallerIdRequest, NetworkCallerIdResponse
from slurmproto.slurmauth import Key, KeyRing, Token, check_signature, parse
from slurmproto.versions import release_named
from tests.support.chroot_cluster import RELEASES
from tests.support.chroot_files import AUTHS, SSHD_PORT
from tests.support.fixtures import LiveClusters
from tests.support.live_vectors import UNKNOWN_PORT, VECTORS, record

COMBOS = [(release, auth) for release in RELEASES for auth in AUTHS]
NAMED = {"root", "owner", "pam_slurm_adopt"}
"""Cases whose answer names the job; "other" and "unknown" get NO_VAL."""
RECORDED = sorted(VECTORS.glob("*.json"))


@dataclass(frozen=True)
class Opened:
    header: Header
    body: bytes
    message: Message
    token: Token | None


PLUGINS = {"munge": AuthPlugin.AUTH_MUNGE, "slurm": AuthPlugin.AUTH_SLURM}


def open_frame(doc: dict[str, Any], raw: bytes) -> Opened:
    """One frame of the document's auth mode, its auth section checked as far as it can be offline."""
    [frame] = decode_stream(raw)
    assert frame.auth is not None and frame.auth.plugin_id == PLUGINS[doc["auth"]]
    rebuilt = encode_frame(frame.message, frame.version, credential=frame.auth.credential,
                           plugin_id=frame.auth.plugin_id, flags=frame.header.flags,
                           orig_addr=frame.header.orig_addr)
    assert rebuilt == raw
    if doc["auth"] == "munge":
        assert (frame.auth.credential or "").startswith("MUNGE:")
        return Opened(frame.header, frame.body, frame.message, None)
    token = parse(frame.auth.credential or "")
    check_token(doc, token, frame.header, frame.body)
    return Opened(frame.header, frame.body, frame.message, token)


def check_token(doc: dict[str, Any], token: Token, header: Header, body: bytes) -> None:
    """An HS256 JWT signed with the cluster's slurm.key, claiming this cluster and the body's hash."""
    assert all(token.text.split(".")) and token.header == {"alg": "HS256", "typ": "JWT"}
    check_signature(token, KeyRing(Key(bytes.fromhex(doc["slurm_key_hex"])), {}, "slurm.key"),
                    now=token.claims["iat"])
    claims = token.claims
    assert claims["cluster"] == doc["cluster_name"] and claims["host"] == doc["node_name"]
    assert claims["ver"] == release_named(doc["release"]).protocol_version
    assert claims["exp"] > claims["iat"]
    digest = payload_hash(body, header.msg_type)
    assert base64.b64decode(claims["payload"], validate=True) == digest


def _case(doc: dict[str, Any], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [c for c in doc["cases"] if c["case"] == name]
    assert len(found) == 1, f"{len(found)} cases named {name}"
    return found[0]


def check_case(doc: dict[str, Any], name: str) -> None:
    """The callerid exchange of one case: one request, one answer, then slurmd closed; what they carry."""
    case = _case(doc, name)
    [exchange] = [e for e in case["exchanges"] if bytes.fromhex(e["request_hex"][0])[8:10] == b"\x13\xab"]
    assert len(exchange["request_hex"]) == len(exchange["response_hex"]) == 1 and exchange["server_closed"]
    request = open_frame(doc, bytes.fromhex(exchange["request_hex"][0]))
    reply = open_frame(doc, bytes.fromhex(exchange["response_hex"][0]))
    assert isinstance(request.message, NetworkCallerIdRequest)
    assert isinstance(reply.message, NetworkCallerIdResponse)
    assert reply.header.version == request.header.version == release_named(doc["release"]).protocol_version
    held = doc["held_connection"]
    if name == "pam_slurm_adopt":
        assert request.message.port_dst == SSHD_PORT
    else:
        src_port = UNKNOWN_PORT if name == "unknown" else held["client"][1]
        assert (request.message.port_src, request.message.port_dst) == (src_port, held["server"][1])
    assert reply.message.job_id == (doc["job_id"] if name in NAMED else NO_VAL)
    assert reply.message.node_name == doc["node_name"]
    if request.token is not None and reply.token is not None:
        check_signers(doc, case, request.token, reply.token)
    for other in case["exchanges"]:  # slurmd's own REQUEST_JOB_ID to itself opens too
        for raw in other["request_hex"] + other["response_hex"]:
            open_frame(doc, bytes.fromhex(raw))


def check_signers(doc: dict[str, Any], case: dict[str, Any], request: Token, reply: Token) -> None:
    """Clients get their token from slurmd's sack, for their own uid; slurmd (root) signs the answer for the
    requester's uid only."""
    uid = doc["uids"][case["who"]]
    assert (request.claims["context"], request.claims["uid"], request.claims["ruid"]) == ("sack", uid, 0xFFFFFFFF)
    assert (reply.claims["context"], reply.claims["uid"], reply.claims["ruid"]) == ("auth", 0, uid)


def check_tools(doc: dict[str, Any]) -> None:
    """What the clients themselves printed: scontrol names the job or fails; the login landed in step_extern."""
    for case in doc["cases"]:
        if case["case"] == "pam_slurm_adopt":
            assert f":freezer:/slurm_{doc['node_name']}/uid_{doc['uids'][doc['job_owner']]}/job_{doc['job_id']}" \
                   "/step_extern\n" in case["stdout"]
        elif case["case"] in NAMED:
            assert (case["returncode"], case["stdout"]) == (0, f"{doc['job_id']} {doc['node_name']}\n")
        else:
            assert (case["returncode"], case["stdout"]) == (1, "")


CASES = ["root", "owner", "other", "unknown", "pam_slurm_adopt"]


@pytest.fixture(scope="module", params=COMBOS, ids=[f"{r}-auth-{a}" for r, a in COMBOS])
def live_doc(request: pytest.FixtureRequest, live_clusters: LiveClusters) -> dict[str, Any]:
    release, auth = request.param
    return record(live_clusters.get(release, auth), live_clusters.held(release, auth))


@pytest.mark.parametrize("name", CASES)
def test_live_frames(live_doc: dict[str, Any], name: str) -> None:
    check_case(live_doc, name)


def test_live_tools(live_doc: dict[str, Any]) -> None:
    check_tools(live_doc)


def test_recorded_vectors_present() -> None:
    found = {(d["release"], d["auth"]) for d in map(_load, RECORDED)}
    assert found == set(COMBOS), f"tests/vectors/live holds {sorted(found)}"


def _load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text())
    return doc


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("path", RECORDED, ids=[p.stem for p in RECORDED])
def test_recorded_frames(path: Path, name: str) -> None:
    check_case(_load(path), name)


@pytest.mark.parametrize("path", RECORDED, ids=[p.stem for p in RECORDED])
def test_recorded_tools(path: Path) -> None:
    check_tools(_load(path))
