"""The callerid client speaking auth/slurm over a socket, to a loopback responder that checks tokens with
the node key and signs its answer as a slurmd does (the fake node's auth/slurm mode is in fake_slurmd)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from slurmproto.cli import main as cli_main
from slurmproto.client import CallerIdResult, callerid
from slurmproto.codec import decode_stream, sign_and_encode
from slurmproto.constants import AuthPlugin
from slurmproto.errors import AuthError, ForgedReply, TokenError
from slurmproto.messages import NetworkCallerIdResponse
from slurmproto.signers import KeySigner
from slurmproto.slurmauth import Key, KeyRing, verify
from slurmproto.versions import SLURM_26_05
from tests.support.peers import PeerScript, ScriptedPeer

RING = KeyRing(Key(os.urandom(32)), {}, "slurm.key")


def answer(signer: KeySigner, job_id: int = 42) -> PeerScript:
    """A responder that verifies the request's token and answers job `job_id`, signed by `signer`."""
    def behaviour(conn: socket.socket, request: bytes) -> None:
        frame = decode_stream(request)[0]
        assert frame.auth is not None and frame.auth.plugin_id == AuthPlugin.AUTH_SLURM
        claims = verify(frame.auth.credential or "", RING, verifier_uid=0)
        assert claims.uid == os.getuid()
        reply = NetworkCallerIdResponse(job_id, 0, "node1")
        conn.sendall(sign_and_encode(reply, frame.version, signer.encode, plugin_id=AuthPlugin.AUTH_SLURM))
    return behaviour


def ask(port: int, signer: KeySigner) -> CallerIdResult:
    return callerid("127.0.0.1", 5000, "127.0.0.1", 22, port=port, version=SLURM_26_05, signer=signer,
                    timeout=5)


def test_callerid_with_the_node_key() -> None:
    ours = KeySigner(RING, SLURM_26_05)
    with ScriptedPeer(answer(ours)) as peer:
        result = ask(peer.port, ours)
    assert (result.job_id, result.node_name, result.signer_uid) == (42, "node1", os.getuid())


def test_reply_signed_with_another_key_is_refused() -> None:
    other = KeySigner(KeyRing(Key(os.urandom(32)), {}, "other.key"), SLURM_26_05)
    with ScriptedPeer(answer(other)) as peer, pytest.raises(TokenError):
        ask(peer.port, KeySigner(RING, SLURM_26_05))


def test_reply_of_an_untrusted_uid_is_forged() -> None:
    # The token's uid is ours; a client trusting only uid 12345 for slurmd takes it for a forgery.
    ours = KeySigner(RING, SLURM_26_05)
    with ScriptedPeer(answer(ours)) as peer, pytest.raises(ForgedReply):
        callerid("127.0.0.1", 5000, "127.0.0.1", 22, port=peer.port, version=SLURM_26_05, signer=ours,
                 trusted_uids={12345}, timeout=5)


def test_reply_with_a_munge_credential_is_refused() -> None:
    ours = KeySigner(RING, SLURM_26_05)

    def munge_reply(conn: socket.socket, request: bytes) -> None:
        reply = NetworkCallerIdResponse(42, 0, "node1")
        conn.sendall(sign_and_encode(reply, SLURM_26_05, ours.encode, plugin_id=AuthPlugin.AUTH_MUNGE))
    with ScriptedPeer(munge_reply) as peer, pytest.raises(AuthError, match="auth/munge"):
        ask(peer.port, ours)


def test_decode_shows_a_tokens_claims_signature_and_hash(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "slurm.key"
    key.write_bytes(RING.default.secret)
    key.chmod(0o600)
    frame = sign_and_encode(NetworkCallerIdResponse(42, 0, "node1"), SLURM_26_05, KeySigner(RING, SLURM_26_05).encode,
                            plugin_id=AuthPlugin.AUTH_SLURM)
    capture = tmp_path / "frame.hex"
    capture.write_text(frame.hex())
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=c1\n")
    assert cli_main(["decode", "--conf", str(conf), "--no-munge", "--key", str(key), str(capture)]) == 0
    token = json.loads(capsys.readouterr().out)["token"]
    claims = token["claims"]
    assert (token["header"]["alg"], claims["uid"], claims["context"]) == ("HS256", os.getuid(), "auth")
    assert (token["signature_ok"], token["hash_ok"], token["expired"]) == (True, True, False)
    other = tmp_path / "other.key"
    other.write_bytes(os.urandom(32))
    other.chmod(0o600)
    assert cli_main(["decode", "--conf", str(conf), "--no-munge", "--key", str(other), str(capture)]) == 0
    assert json.loads(capsys.readouterr().out)["token"]["signature_ok"] is False
