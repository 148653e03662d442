"""fake_slurmd under bad input over the wire, stalled clients and 10,000 held connections."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fake_slurmd.controller import FakeSlurmd
from fake_slurmd.plugin import FakeNodeFactory
from fake_slurmd.scenario import Job, NodeSpec, Scenario
from slurmproto.auth import payload_hash
from slurmproto.client import Endpoint, callerid, callerid_request
from slurmproto.codec import decode_stream, encode_frame, sign_and_encode
from slurmproto.header import Forward
from slurmproto.messages import JobIdRequest, JobIdResponse, Message, ReturnCode
from slurmproto.munge import MungeContext
from slurmproto.versions import BY_NAME, Release
from tests.support.munged import Munged
from tests.support.procs import installed_or_skip


def _request(version: int) -> tuple[bytes, Message]:
    message = callerid_request(Endpoint.parse("127.0.0.1"), 1, Endpoint.parse("127.0.0.1"), 2)
    return message.encode(version), message


def _exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send bytes, read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.fixture(scope="module", params=["22.05", "24.11", "25.05", "26.05"])
def fake(request: pytest.FixtureRequest, munged: Munged) -> Iterator[FakeSlurmd]:
    """One fake per release for all the bad frames, as a slurmd meets them one after the other."""
    scenario = Scenario([NodeSpec("node1", port=0)], {5: Job(5, 0)}, release=request.param, client_timeout=1.0)
    with FakeSlurmd(scenario, munge_socket=str(munged.socket)) as server:
        yield server


def _signed(munged: Munged, message: Message, version: int, *, body: bytes | None = None, flags: int = 0) -> bytes:
    with MungeContext(munged.socket) as munge:
        if body is None:
            return sign_and_encode(message, version, munge.encode, flags=flags)
        real = message.encode(version)
        credential = munge.encode(payload_hash(real, message.MSG_TYPE)).decode()
        return encode_frame(message, version, credential=credential, body=body, flags=flags)


def _signed_forward(munged: Munged, message: Message, version: int) -> bytes:
    depth = 1 if version >= 0x2A00 else None
    forward = Forward(1, "n1", 1000, 1, None, depth)
    with MungeContext(munged.socket) as munge:
        return sign_and_encode(message, version, munge.encode, forward=forward)


def _without_nul(frame: bytes) -> bytes:
    return frame.replace(b"n1\0", b"n1X", 1)


def _rc(reply: bytes) -> int:
    [frame] = decode_stream(reply)
    assert isinstance(frame.message, ReturnCode)
    return frame.message.return_code


def _still_serving(fake: FakeSlurmd, munged: Munged) -> None:
    assert callerid("127.0.0.1", 1, "127.0.0.1", 2, port=fake.port, munge_socket=str(munged.socket)).job_id is None


@dataclass(frozen=True)
class Frames:
    """What the bad frames are made of, for the release the fake speaks."""

    rules: Release
    munged: Munged

    @property
    def version(self) -> int:
        return self.rules.protocol_version

    @property
    def message(self) -> Message:
        return callerid_request(Endpoint.parse("127.0.0.1"), 1, Endpoint.parse("127.0.0.1"), 2)

    @property
    def body(self) -> bytes:
        return self.message.encode(self.version)

    def signed(self, *, body: bytes | None = None, message: Message | None = None) -> bytes:
        return _signed(self.munged, message or self.message, self.version, body=body)

    def refuses_auth(self) -> bool:
        """Whether this slurmd answers an unverifiable credential with RC 1007 (else it closes)."""
        return {"22.05": False, "24.11": False, "25.05": True, "26.05": True}[self.rules.name]

    def refuses_unpack(self) -> bool:
        """Whether it answers a credential it cannot unpack (a foreign plugin) with RC 1007."""
        return {"22.05": False, "24.11": False, "25.05": True, "26.05": False}[self.rules.name]

    def answered(self, reply: bytes) -> bool:
        """An answer, not a ReturnCode: what 22.05 gives frames later releases refuse."""
        return not isinstance(decode_stream(reply)[0].message, ReturnCode)


def _closed(reply: bytes) -> bool:
    return reply == b""


def _first_half(frame: bytes) -> bytes:
    return frame[: len(frame) // 2]


def _wrong_plugin(f: Frames) -> bytes:
    good = f.signed()
    return good[:20] + (102).to_bytes(4, "big") + good[24:]


Case = Callable[[Frames], tuple[bytes, Callable[[bytes], bool]]]
BAD_FRAMES: dict[str, Case] = {
    "truncated frame": lambda f: (_first_half(f.signed()), _closed),
    "oversize length prefix": lambda f: ((0x3FFFFFFF).to_bytes(4, "big") + f.signed()[4:], _closed),
    "not a Slurm frame": lambda f: (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", _closed),
    "empty": lambda f: (b"", _closed),
    "wrong plugin id": lambda f: (_wrong_plugin(f), lambda r: _rc(r) == 1007 if f.refuses_unpack() else _closed(r)),
    "garbage credential": lambda f: (encode_frame(f.message, f.version, credential="MUNGE:garbage:"),
                                     lambda r: _rc(r) == 1007 if f.refuses_auth() else _closed(r)),
    "hash mismatch": lambda f: (f.signed(body=f.body[:-1] + b"\x03"), lambda r: _rc(r) == 5003),
    "trailing bytes": lambda f: (f.signed(body=f.body + b"\0"),
                                 lambda r: (f.rules.name == "22.05" and f.answered(r)) or _rc(r) == 5003),
    "unknown message type": lambda f: (f.signed(message=JobIdResponse(1, 0)), lambda r: _rc(r) == 22),
    "body too short": lambda f: (f.signed(body=f.body[:20]), lambda r: _rc(r) == 5003),
    "string without NUL (forward nodelist)": lambda f: (
        _without_nul(_signed_forward(f.munged, f.message, f.version)),
        lambda r: _closed(r) if f.rules.name != "22.05" else f.answered(r)),
}


@pytest.mark.parametrize("case", list(BAD_FRAMES))
def test_bad_frames(fake: FakeSlurmd, munged: Munged, case: str) -> None:
    assert fake.release is not None
    data, expected = BAD_FRAMES[case](Frames(fake.release, munged))
    reply = _exchange(fake.port, data)
    assert expected(reply), (case, reply[:80])
    _still_serving(fake, munged)


def test_job_id_rpc(munged: Munged, fake_node: FakeNodeFactory) -> None:
    """slurmd also answers REQUEST_JOB_ID (it asks itself that inside every callerid)."""
    fake = fake_node([Job(5, 0, pids={os.getpid()})])
    found = _exchange(fake.port, _signed(munged, JobIdRequest(os.getpid()), BY_NAME["24.11"].protocol_version))
    missing = _exchange(fake.port, _signed(munged, JobIdRequest(1), BY_NAME["24.11"].protocol_version))
    [frame] = decode_stream(found)
    assert isinstance(frame.message, JobIdResponse) and frame.message.job_id == 5
    assert _rc(missing) == 2017


def test_stalled_client_is_dropped(munged: Munged, fake_node: FakeNodeFactory) -> None:
    fake = fake_node(client_timeout=0.5)
    with socket.create_connection(("127.0.0.1", fake.port)) as sock:
        _, message = _request(0x2600)
        sock.sendall(_signed(munged, message, 0x2600)[:30])
        sock.settimeout(5)
        started = time.monotonic()
        assert sock.recv(100) == b""  # closed on us
        assert 0.3 < time.monotonic() - started < 2
        _still_serving(fake, munged)


def test_ten_thousand_held_connections(munged: Munged, tmp_path: Path) -> None:
    """10,000 held connections neither exhaust the server nor block other clients.

    The server runs as the fake-slurmd command, so it and this test each hold 10,000 descriptors.
    """
    script = installed_or_skip("fake-slurmd")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 10_500:
        pytest.skip(f"needs RLIMIT_NOFILE of 10,500 for the client ends (hard limit {hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    scenario = tmp_path / "node.toml"
    scenario.write_text('client_timeout = 120\n[[nodes]]\nname = "node1"\nport = 0\n')
    proc = subprocess.Popen([script, "--scenario", str(scenario), "--munge-socket", str(munged.socket),
                             "--log-level", "warning"], stderr=subprocess.PIPE, text=True)
    held: list[socket.socket] = []
    try:
        assert proc.stderr is not None
        port = int(_banner(proc).split("127.0.0.1:")[1].split(";")[0])
        rss_before = _rss(proc.pid)
        base = len(os.listdir(f"/proc/{proc.pid}/fd"))
        # In batches the listen backlog can hold: a flood beyond it loses handshakes in the kernel
        # (SYN cookies), which says nothing about the server.
        for _batch in range(20):
            for _ in range(500):
                sock = socket.socket()
                sock.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    sock.connect(("127.0.0.1", port))
                held.append(sock)
            _wait_for(lambda: len(os.listdir(f"/proc/{proc.pid}/fd")) - base >= len(held), 30)
        assert len(os.listdir(f"/proc/{proc.pid}/fd")) - base >= 10_000  # it accepted them all
        started = time.monotonic()
        assert callerid("127.0.0.1", 1, "127.0.0.1", 2, port=port, munge_socket=str(munged.socket)).job_id is None
        assert time.monotonic() - started < 2
        assert _rss(proc.pid) - rss_before < 200 * 1024  # kB: bounded per connection
        assert proc.poll() is None
    finally:
        for sock in held:
            sock.close()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert proc.returncode == 0


def _banner(proc: subprocess.Popen[str]) -> str:
    """fake-slurmd's "serving ..." line (log lines may come first)."""
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("fake-slurmd:"):
            return line
    raise AssertionError(f"fake-slurmd exited with {proc.wait()} before serving")


def _wait_for(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.02)


def _rss(pid: int) -> int:
    """Resident set size of a process, in kB."""
    return int(Path(f"/proc/{pid}/status").read_text().split("VmRSS:")[1].split()[0])


def test_cli_reload_and_json_logs(munged: Munged, tmp_path: Path) -> None:
    script = installed_or_skip("fake-slurmd")
    scenario = tmp_path / "node.toml"
    scenario.write_text('[[nodes]]\nname = "node1"\nport = 0\n[[jobs]]\njob_id = 5\nuser = "root"\n'
                        f'pids = [{os.getpid()}]\n')
    conf = tmp_path / "slurm.conf"
    proc = subprocess.Popen([script, "--scenario", str(scenario), "--munge-socket", str(munged.socket),
                             "--log-format", "json", "--log-level", "debug", "--slurm-conf", str(conf)],
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        banner = _banner(proc)
        assert "fake-slurmd: serving node1 on 127.0.0.1:" in banner, banner
        port = int(banner.split("127.0.0.1:")[1].split(";")[0])
        assert f"SlurmdPort={port}" in conf.read_text()
        with socket.create_server(("127.0.0.1", 0)) as listener, \
                socket.create_connection(listener.getsockname()) as mine:
            local, remote = mine.getsockname(), mine.getpeername()

            def ask() -> int | None:
                return callerid(*local, *remote, port=port, munge_socket=str(munged.socket)).job_id

            assert ask() == 5
            scenario.write_text(scenario.read_text().replace("job_id = 5", "job_id = 6"))
            proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while ask() != 6 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert ask() == 6
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    requests = [e for e in events if e["event"] == "request"]
    assert requests and {"node", "peer", "verdict", "ms"} <= set(requests[0])
    assert any(e["event"] == "reloaded" for e in events)
    callerids = [e for e in events if e["event"] == "callerid"]
    assert {"uid", "connection", "verdict"} <= set(callerids[0]) and callerids[0]["level"] == "debug"


def test_bad_scenario_cli(tmp_path: Path) -> None:
    script = installed_or_skip("fake-slurmd")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[jobs]]\njob_id = 'x'\n")
    proc = subprocess.run([script, "--scenario", str(bad)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2  # a scenario error is a usage error: one line, no traceback
    assert proc.stderr == (f"fake-slurmd: {bad}: jobs[0].job_id: expected a job id (an integer from 1 to "
                           "4294967279), got 'x'\n")


def test_server_never_dies_under_random_bytes(munged: Munged, fake_node: FakeNodeFactory) -> None:
    import random

    rng = random.Random(1)
    fake = fake_node(client_timeout=0.3)
    _, message = _request(0x2600)
    good = _signed(munged, message, 0x2600)
    for _ in range(300):
        data = bytearray(good)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        _exchange(fake.port, bytes(data[: rng.randint(0, len(data))]))
    _still_serving(fake, munged)
    assert fake.server is not None and fake.server.connections == 0
