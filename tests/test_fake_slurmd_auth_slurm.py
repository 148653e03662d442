"""fake_slurmd in auth/slurm mode: it verifies request tokens with the node's key (or key set), refuses bad
ones as the emulated release refuses a bad credential, closes on munge requests, and signs its answers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fake_slurmd.controller import FakeSlurmd
from fake_slurmd.scenario import Job, NodeSpec, Scenario, ScenarioError
from slurmproto.auth import payload_hash
from slurmproto.client import callerid
from slurmproto.codec import decode_stream, encode_frame
from slurmproto.constants import AuthPlugin
from slurmproto.errors import SackError
from slurmproto.messages import NetworkCallerIdRequest, ReturnCode
from slurmproto.sack import SackClient
from slurmproto.signers import KeySigner, SackSigner
from slurmproto.slurmauth import MAX_TOKEN, UID_ANY, Key, KeyRing, parse, sign
from slurmproto.versions import Refusal, Release, release_named
from tests.support.procs import ensure_user, installed_or_skip, need_programs, need_root

RELEASES = ["24.11", "26.05"]
SECRET = os.urandom(32)
HS256 = {"alg": "HS256", "typ": "JWT"}


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("keys") / "slurm.key"
    path.write_bytes(SECRET)
    path.chmod(0o600)
    return str(path)


@pytest.fixture(scope="module")
def listener() -> Iterator[socket.socket]:
    """The far end of the connections jobs open (an sshd stand-in)."""
    with socket.create_server(("127.0.0.1", 0), backlog=64) as server:
        yield server


def node(release: str, key: str, jwks: str | None = None, sack: str | None = None) -> FakeSlurmd:
    scenario = Scenario([NodeSpec("node1", port=0)], {5: Job(5, os.getuid())}, release=release,
                        client_timeout=2.0)
    return FakeSlurmd(scenario, auth="slurm", key=key, jwks=jwks, sack=sack)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: object, claims: object, secret: bytes = SECRET) -> str:
    """A token put together by hand: any header and claims, signed with `secret`."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"


def request(version: int) -> NetworkCallerIdRequest:
    return NetworkCallerIdRequest(b"\x7f\0\0\1".ljust(16, b"\0"), b"\x7f\0\0\1".ljust(16, b"\0"), 5000, 22, 2)


def claims_for(version: int, **changes: object) -> dict[str, object]:
    body = request(version).encode(version)
    now = int(time.time())
    claims: dict[str, object] = {"iat": now, "exp": now + 60, "ruid": UID_ANY, "uid": os.getuid(),
                                 "gid": os.getgid(), "host": "client", "context": "auth", "ver": version,
                                 "payload": base64.b64encode(payload_hash(body, request(version).MSG_TYPE)).decode()}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def exchange(port: int, frame: bytes) -> bytes:
    """Send one frame, read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(frame)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def send_token(fake: FakeSlurmd, release: Release, token: str,
               plugin_id: int = AuthPlugin.AUTH_SLURM) -> bytes:
    version = release.protocol_version
    return exchange(fake.port, encode_frame(request(version), version, credential=token, plugin_id=plugin_id))


def assert_refused(release: Release, reply: bytes) -> None:
    """No job: the refusal the release's row gives a bad credential."""
    how = release.slurmd.bad_cred_verify
    if how is Refusal.CLOSE:
        assert reply == b""
    elif how is Refusal.RC_1007:
        frames = decode_stream(reply)
        assert len(frames) == 1 and isinstance(frames[0].message, ReturnCode)
        assert frames[0].message.return_code == 1007
    else:
        assert reply.startswith(b"HTTP/1.1 405")


@pytest.mark.parametrize("name", RELEASES)
def test_client_with_the_node_key_gets_the_job(name: str, key_file: str, listener: socket.socket) -> None:
    release = release_named(name)
    with node(name, key_file) as fake, fake.connect_from_job(5, *listener.getsockname()) as conn:
        signer = KeySigner(KeyRing(Key(SECRET), {}, key_file), release.protocol_version)
        result = callerid(*conn.local, *conn.remote, port=fake.port, version=release.protocol_version,
                          signer=signer, timeout=5)
        assert result.job_id == 5
        assert result.signer_uid == os.getuid()


@pytest.mark.parametrize("name", RELEASES)
def test_bad_tokens_are_refused_as_the_release_refuses_a_bad_credential(name: str, key_file: str) -> None:
    release = release_named(name)
    version = release.protocol_version
    good = claims_for(version)
    bad = {
        "bad signature": forged(HS256, good, os.urandom(32)),
        "expired": forged(HS256, claims_for(version, iat=int(time.time()) - 600, exp=int(time.time()) - 300)),
        "wrong ruid": forged(HS256, claims_for(version, ruid=os.getuid() + 12345)),
        "missing claim": forged(HS256, claims_for(version, host=None)),
        "alg none": f"{b64(json.dumps({'alg': 'none'}).encode())}.{b64(json.dumps(good).encode())}.",
        "long": forged(HS256, claims_for(version, host="h" * 20000), os.urandom(32)),
        "not JSON": f"{b64(b'{not json')}.{b64(json.dumps(good).encode())}.{b64(b'sig')}",
    }
    with node(name, key_file) as fake:
        assert send_token(fake, release, forged(HS256, good)) != b""  # the good token gets an answer
        for what, token in bad.items():
            reply = send_token(fake, release, token)
            try:
                assert_refused(release, reply)
            except AssertionError:
                pytest.fail(f"{what}: {reply[:80]!r}")
        # A token longer than a client reads is read and refused, as slurmd does (its bound is the message's).
        assert_refused(release, send_token(fake, release, "a" * (MAX_TOKEN + 1)))


def test_unknown_kid_with_a_jwks(key_file: str, tmp_path: Path) -> None:
    jwks = tmp_path / "slurm.jwks"
    jwks.write_text(json.dumps({"keys": [{"kid": "k1", "kty": "oct", "alg": "HS256", "k": b64(SECRET)}]}))
    jwks.chmod(0o600)
    release = release_named("26.05")
    claims = claims_for(release.protocol_version)
    with node("26.05", key_file, str(jwks)) as fake:
        assert send_token(fake, release, forged({**HS256, "kid": "k1"}, claims)) != b""
        assert_refused(release, send_token(fake, release, forged({**HS256, "kid": "k9"}, claims)))


@pytest.mark.parametrize("name", RELEASES)
def test_munge_request_is_closed_on(name: str, key_file: str) -> None:
    release = release_named(name)
    with node(name, key_file) as fake:
        assert send_token(fake, release, "MUNGE:AwQDAAA=:", plugin_id=AuthPlugin.AUTH_MUNGE) == b""


def test_reply_is_signed_for_the_asker_with_the_release_version(key_file: str) -> None:
    release = release_named("24.11")
    ring = KeyRing(Key(SECRET), {}, key_file)
    with node("24.11", key_file) as fake:
        token = sign(payload_hash(request(release.protocol_version).encode(release.protocol_version),
                                  request(0).MSG_TYPE), ring.default, uid=os.getuid(), gid=os.getgid(),
                     host="client", ver=release.protocol_version)
        reply = decode_stream(send_token(fake, release, token))[0]
    assert reply.auth is not None and reply.auth.plugin_id == AuthPlugin.AUTH_SLURM
    claims = json.loads(base64.urlsafe_b64decode((reply.auth.credential or "").split(".")[1] + "=="))
    assert (claims["ruid"], claims["ver"]) == (os.getuid(), release.protocol_version)


def test_scenario_auth_keys(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text('auth = "kerberos"\n')
    with pytest.raises(ScenarioError, match=r"node.toml: auth: expected an auth mode"):
        Scenario.load(path)
    path.write_text('auth = "slurm"\n')
    with pytest.raises(ScenarioError, match=r"node.toml: key: .*key file"):
        Scenario.load(path)
    path.write_text('auth = "slurm"\nkey = "/etc/slurm/slurm.key"\njwks = 3\n')
    with pytest.raises(ScenarioError, match=r"node.toml: jwks: expected a path"):
        Scenario.load(path)


def test_command_line_auth_slurm(key_file: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "fake_slurmd.cli", "--auth", "slurm", "--key", "/nonexistent/key"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and "cannot read the auth/slurm key" in proc.stderr
    release = release_named("26.05")
    with subprocess.Popen([sys.executable, "-m", "fake_slurmd.cli", "--auth", "slurm", "--key", key_file,
                           "--release", "26.05"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          text=True) as server:
        try:
            assert server.stdout is not None
            port = int(server.stdout.readline().split()[3])
            version = release.protocol_version
            good = encode_frame(request(version), version, credential=forged(HS256, claims_for(version)),
                                plugin_id=AuthPlugin.AUTH_SLURM)
            frame = decode_stream(exchange(port, good))[0]
            assert frame.auth is not None and frame.auth.plugin_id == AuthPlugin.AUTH_SLURM
        finally:
            server.terminate()
        assert server.wait(timeout=30) == 0


@pytest.mark.parametrize("name", RELEASES)
def test_sack_create_verify_and_callerid(name: str, key_file: str, tmp_path: Path,
                                         listener: socket.socket) -> None:
    release = release_named(name)
    path = str(tmp_path / "sack.socket")
    with node(name, key_file, sack=path) as fake:
        assert os.stat(path).st_mode & 0o777 == 0o777
        client = SackClient([path], release.protocol_version)
        token = client.create(b"\x01\x00\x01", os.getuid())
        claims = parse(token).checked_claims()
        assert (claims.uid, claims.gid, claims.context, claims.ruid) == (os.getuid(), os.getgid(), "sack", os.getuid())
        assert client.verify(token) == 0
        with fake.connect_from_job(5, *listener.getsockname()) as conn:
            result = callerid(*conn.local, *conn.remote, port=fake.port, version=release.protocol_version,
                              signer=SackSigner(client), timeout=5)
        assert result.job_id == 5
        # A failed VERIFY: an rc where the row says so, no answer at all where it is silent.
        forged_token = forged(HS256, claims_for(release.protocol_version), os.urandom(32))
        if release.auth_slurm.sack_verify_silent:
            with pytest.raises(SackError, match="closed"):
                client.verify(forged_token)
        else:
            assert client.verify(forged_token) != 0


@pytest.mark.parametrize("cluster", [None, "peer1"])
def test_cluster_name_is_signed_into_tokens(key_file: str, tmp_path: Path, cluster: str | None) -> None:
    """The scenario's ClusterName goes into the "cluster" claim of what the node signs, as a slurmd with
    that ClusterName does; without one the claim is left out."""
    path = str(tmp_path / "sack.socket")
    scenario = Scenario([NodeSpec("node1", port=0)], release="26.05", cluster=cluster)
    with FakeSlurmd(scenario, auth="slurm", key=key_file, sack=path) as fake:
        assert fake.cluster == cluster
        token = SackClient([path], release_named("26.05").protocol_version).create(b"x", os.getuid())
        assert parse(token).checked_claims().cluster == cluster


def test_sack_oversized_request_is_closed_on(key_file: str, tmp_path: Path) -> None:
    path = str(tmp_path / "sack.socket")
    with node("26.05", key_file, sack=path) as fake, socket.socket(socket.AF_UNIX) as sock:
        assert fake.sack is not None
        sock.settimeout(5)
        sock.connect(path)
        sock.sendall(struct.pack(">HII", release_named("26.05").protocol_version, 1 << 20, 64001))
        assert sock.recv(16) == b""


ZERO_HASH = base64.b64encode(b"\x01" + NetworkCallerIdRequest.MSG_TYPE.to_bytes(2, "big")).decode()


@pytest.mark.parametrize(("params", "payload", "refused"), [
    ("", "", False),
    ("block_null_hash", "", True),
    ("", ZERO_HASH, False),
    ("block_zero_hash", ZERO_HASH, True),
    ("block_zero_hash", "", False),
])
def test_communication_parameters_block_hashes(params: str, payload: str, refused: bool, key_file: str) -> None:
    release = release_named("26.05")
    scenario = Scenario.from_dict({"release": "26.05", "auth": "slurm", "key": key_file,
                                   "communication_parameters": f"enable_ipv6,{params}",
                                   "nodes": [{"name": "node1", "port": 0}]})
    claims = claims_for(release.protocol_version, payload=payload or None)
    with FakeSlurmd(scenario) as fake:
        frame = decode_stream(send_token(fake, release, forged(HS256, claims)))[0]
    rc = frame.message.return_code if isinstance(frame.message, ReturnCode) else None
    assert (rc == 5003) == refused


@pytest.mark.parametrize("lookup", ["SLURM_SACK_SOCKET", "ClusterName"])
def test_sack_for_a_user_who_cannot_read_the_key(key_file: str, shared_dir: Path, listener: socket.socket,
                                                 lookup: str, caplog: pytest.LogCaptureFixture) -> None:
    """alice cannot read slurm.key: slurm-callerid run as her signs through the fake's sack socket (found
    through $SLURM_SACK_SOCKET, or at /run/slurm-<ClusterName>/sack.socket), has the answer verified
    there, and gets her job."""
    reason = need_root("running slurm-callerid as alice") or need_programs("runuser")
    if reason:
        pytest.skip(reason)
    cli = installed_or_skip("slurm-callerid", for_other_users=True)
    alice = ensure_user("alice")
    cluster = f"satfake{os.getpid()}"
    run_dir = Path(f"/run/slurm-{cluster}") if lookup == "ClusterName" else shared_dir / f"sack-{os.getpid()}"
    run_dir.mkdir(mode=0o755)
    try:
        scenario = Scenario([NodeSpec("node1", port=0)], {5: Job(5, alice.pw_uid)}, release="26.05", cluster=cluster)
        with caplog.at_level(logging.DEBUG, logger="fake_slurmd"), \
                FakeSlurmd(scenario, auth="slurm", key=key_file, sack=str(run_dir / "sack.socket")) as fake:
            conf = fake.slurm_conf(run_dir / "slurm.conf")
            key = os.stat(key_file)  # root's, 0600: not alice's to read; and none beside slurm.conf
            assert (key.st_uid, key.st_mode & 0o077) == (0, 0) and not (run_dir / "slurm.key").exists()
            with fake.connect_from_job(5, *listener.getsockname(), user="alice") as conn:
                env = [f"SLURM_SACK_SOCKET={run_dir / 'sack.socket'}"] if lookup == "SLURM_SACK_SOCKET" else []
                proc = subprocess.run(["runuser", "-u", "alice", "--", "env", "-i", f"SLURM_CONF={conf}", *env,
                                       cli, "--json", *map(str, (*conn.local, *conn.remote))],
                                      capture_output=True, text=True, timeout=30, cwd="/")
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    result = json.loads(proc.stdout or "{}")
    assert proc.returncode == 0 and result["job_id"] == 5, (proc.stdout, proc.stderr)
    # Her token came from the sack socket, and the answer's was verified there.
    sack = [(r.getMessage(), getattr(r, "fields", {})) for r in caplog.records if r.getMessage().startswith("sack ")]
    assert ("sack create", {"uid": alice.pw_uid, "r_uid": UID_ANY}) in sack, sack
    assert ("sack verify", {"uid": alice.pw_uid, "verdict": "ok"}) in sack, sack
