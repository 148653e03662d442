"""The callerid client and slurm-callerid against hostile peers, forged answers and a stuck munged.

Every case ends in its own error within the deadline: elapsed <= timeout + 0.5 s.
"""

from __future__ import annotations

import pwd
import re
import socket
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from slurmproto.cli import main
from slurmproto.client import MAX_REPLY, callerid
from slurmproto.codec import encode_frame, sign_and_encode
from slurmproto.errors import (
    ForgedReply,
    InsaneMessageLength,
    Refused,
    SlurmError,
    Timeout,
    TruncatedFrame,
    UnknownAuthPlugin,
)
from slurmproto.messages import NetworkCallerIdResponse, ReturnCode
from slurmproto.munge import MungeDeadline
from slurmproto.versions import SLURM_24_11
from tests.support.munged import Munged
from tests.support.peers import PeerScript, ScriptedPeer, send
from tests.support.procs import ensure_user
from tests.support.stuck_munged import StuckMunged
from tests.test_client import HTTP_405

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 1.5
SLACK = 0.5
REPLY = NetworkCallerIdResponse(77, 0, "node7")


# --- hostile peers ---------------------------------------------------------------------------------


def trickle(data: bytes, interval: float = 0.1) -> PeerScript:
    """One byte per `interval` until the client gives up."""
    def behaviour(conn: socket.socket, request: bytes) -> None:
        for i in range(len(data)):
            conn.sendall(data[i:i + 1])
            time.sleep(interval)
    return behaviour


def endless(head: bytes, filler: bytes) -> PeerScript:
    """`head`, then `filler` forever (until the client closes)."""
    def behaviour(conn: socket.socket, request: bytes) -> None:
        conn.sendall(head)
        while True:
            conn.sendall(filler)
    return behaviour


SIGNED_LOOKING = encode_frame(REPLY, SLURM_24_11, credential="MUNGE:" + "A" * 120 + ":")

HOSTILE = {
    "huge-length-prefix": (send(b"\xff\xff\xff\xff" + bytes(1000)), InsaneMessageLength, "exceeds the limit"),
    "trickle-1-byte-per-100ms": (trickle(SIGNED_LOOKING), Timeout, "overall deadline of 1.5 s expired"),
    "http": (send(HTTP_405), Refused, "HTTP/1.1 405 NOT ALLOWED"),
    "http-endless-status-line": (endless(b"HTTP/1.1 200 ", b"A" * 4096), Refused, "peer answered with HTTP"),
    "endless-stream": (endless(MAX_REPLY.to_bytes(4, "big"), bytes(65536)), UnknownAuthPlugin, "plugin id 0"),
    "closes-mid-frame": (send(SIGNED_LOOKING[:len(SIGNED_LOOKING) // 2]), TruncatedFrame,
                         "stream ended inside a frame"),
}


@pytest.mark.parametrize(("behaviour", "error", "message"), HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_peer(munged: Munged, behaviour: PeerScript, error: type[SlurmError], message: str) -> None:
    tracemalloc.start()
    try:
        with ScriptedPeer(behaviour) as peer:
            started = time.monotonic()
            with pytest.raises(error, match=message):
                callerid("127.0.0.1", 40000, "127.0.0.1", 22, port=peer.port, munge_socket=str(munged.socket),
                         version=SLURM_24_11, timeout=TIMEOUT)
            elapsed = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed <= TIMEOUT + SLACK
    assert peak < 4 * MAX_REPLY + 1024 * 1024, f"{peak} bytes allocated for a {MAX_REPLY}-byte reply limit"


def test_http_in_every_version_is_refused_within_the_deadline(munged: Munged) -> None:
    """Automatic versions: three tries, each answered in HTTP, all within one deadline."""
    with ScriptedPeer(send(HTTP_405)) as peer:
        started = time.monotonic()
        with pytest.raises(Refused, match="tried protocol versions") as info:
            callerid("127.0.0.1", 40000, "127.0.0.1", 22, port=peer.port, munge_socket=str(munged.socket),
                     timeout=TIMEOUT)
    assert time.monotonic() - started <= TIMEOUT + SLACK
    assert all("HTTP/1.1 405" in a.outcome for a in info.value.attempts)  # type: ignore[attr-defined]


# --- forged answers: valid credentials minted by another local user --------------------------------


@pytest.fixture(scope="module")
def alice() -> pwd.struct_passwd:
    return ensure_user("alice")


def mint_as(user: pwd.struct_passwd, munged: Munged, payload: bytes) -> bytes:
    """A credential for `payload` from the munge CLI run as `user`: what any user's process can get."""
    proc = subprocess.run(["munge", "-S", str(munged.socket)], input=payload, capture_output=True, timeout=30,
                          user=user.pw_uid, group=user.pw_gid, extra_groups=[], cwd="/", check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout.strip()


def forged(message: NetworkCallerIdResponse | ReturnCode, user: pwd.struct_passwd, munged: Munged) -> bytes:
    return sign_and_encode(message, SLURM_24_11, lambda payload: mint_as(user, munged, payload))


@pytest.mark.parametrize("message", [REPLY, ReturnCode(0)], ids=["callerid-reply", "rc-0"])
def test_forged_reply_is_refused(munged: Munged, alice: pwd.struct_passwd,
                                 message: NetworkCallerIdResponse | ReturnCode) -> None:
    with ScriptedPeer(send(forged(message, alice, munged))) as peer:
        started = time.monotonic()
        with pytest.raises(ForgedReply, match=rf"signed by uid {alice.pw_uid}, .*trusted uids: 0\)") as info:
            callerid("127.0.0.1", 40000, "127.0.0.1", 22, port=peer.port, munge_socket=str(munged.socket),
                     version=SLURM_24_11, timeout=TIMEOUT)
    assert time.monotonic() - started <= TIMEOUT + SLACK
    assert (info.value.signer_uid, info.value.trusted, info.value.rc) == (alice.pw_uid, [0], 1007)


def test_reply_of_a_trusted_slurmd_user_is_believed(munged: Munged, alice: pwd.struct_passwd) -> None:
    with ScriptedPeer(send(forged(REPLY, alice, munged))) as peer:
        result = callerid("127.0.0.1", 40000, "127.0.0.1", 22, port=peer.port, munge_socket=str(munged.socket),
                          version=SLURM_24_11, timeout=TIMEOUT, trusted_uids={0, alice.pw_uid})
    assert (result.job_id, result.signer_uid) == (77, alice.pw_uid)


@pytest.mark.parametrize(("slurmd_user", "rc"), [(None, 1), ("alice", 0)], ids=["default-root", "SlurmdUser-alice"])
def test_cli_trusts_slurmd_user_only(munged: Munged, alice: pwd.struct_passwd, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str], slurmd_user: str | None, rc: int) -> None:
    conf = tmp_path / "slurm.conf"
    conf.write_text(f"AuthInfo=socket={munged.socket}\n" + (f"SlurmdUser={slurmd_user}\n" if slurmd_user else ""))
    with ScriptedPeer(send(forged(REPLY, alice, munged))) as peer:
        code = main(["--conf", str(conf), "--port", str(peer.port), "--protocol-version", "24.11",
                     "127.0.0.1", "40000", "127.0.0.1", "22"])
    out, err = capsys.readouterr()
    assert code == rc
    if rc:
        assert f"signed by uid {alice.pw_uid}" in err and "forged" in err and out == ""
    else:
        assert out == "77 node7\n"


# --- a munged that accepts and never answers ---------------------------------------------------------


def test_stuck_munged_costs_the_deadline(stuck_munged: StuckMunged) -> None:
    started = time.monotonic()
    with pytest.raises(MungeDeadline, match="did not answer within") as info:
        callerid("127.0.0.1", 40000, "127.0.0.1", 22, port=1, munge_socket=str(stuck_munged.path), timeout=2)
    assert time.monotonic() - started <= 2 + SLACK
    assert isinstance(info.value, Timeout) and str(stuck_munged.path) in str(info.value)
    assert stuck_munged.held, "libmunge never connected: the test proves nothing"


def run_cli(*args: str, conf: Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """slurm-callerid in a fresh interpreter, slurm.conf named explicitly."""
    return subprocess.run([sys.executable, "-m", "slurmproto.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env={"PATH": "/usr/bin:/bin", "SLURM_CONF": str(conf)},
                          check=False)


def test_cli_with_stuck_munged_returns_at_its_timeout(stuck_munged: StuckMunged, tmp_path: Path) -> None:
    conf = tmp_path / "slurm.conf"
    conf.write_text(f"AuthInfo=socket={stuck_munged.path}\nSlurmdPort=1\n")
    started = time.monotonic()
    proc = run_cli("--timeout", "2", "127.0.0.1", "40000", "127.0.0.1", "22", conf=conf)
    elapsed = time.monotonic() - started
    assert elapsed <= 2 + SLACK, proc.stderr
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("slurm-callerid: munge: munged (socket ") and "did not answer within" in proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "remote slurmd" not in proc.stderr


def test_decode_with_stuck_munged_returns_at_its_timeout(stuck_munged: StuckMunged, tmp_path: Path) -> None:
    capture = tmp_path / "frame.bin"
    capture.write_bytes(SIGNED_LOOKING * 3)
    conf = tmp_path / "slurm.conf"
    conf.write_text(f"AuthInfo=socket={stuck_munged.path}\n")  # found like a query finds it
    started = time.monotonic()
    proc = run_cli("decode", "--timeout", "1", str(capture), conf=conf)
    assert time.monotonic() - started <= 1 + SLACK
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "credentials not checked: munge: munged (socket" in proc.stderr
    assert proc.stdout.count('"error_type": "MungeDeadline"') == 3


def test_stuck_user_database_costs_the_deadline(munged: Munged, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """getpwnam() for SlurmdUser waits as long as NSS (LDAP, sssd) does: it is bounded like the rest."""
    monkeypatch.setattr("slurmproto.conf.SlurmConf.slurmd_uid", lambda self: time.sleep(10))
    conf = tmp_path / "slurm.conf"
    conf.write_text(f"AuthInfo=socket={munged.socket}\nSlurmdUser=slurm\nSlurmdPort=1\n")
    started = time.monotonic()
    code = main(["--conf", str(conf), "--timeout", "1", "127.0.0.1", "40000", "127.0.0.1", "22"])
    assert time.monotonic() - started <= 1 + SLACK
    err = capsys.readouterr().err
    assert code == 1 and re.fullmatch(r"slurm-callerid: looking up SlurmdUser 'slurm': the user database did not "
                                      r"answer within [01]\.?\d* s\n", err), err

