"""fake-slurmd (the command) under many hostile clients at once: each gets one log line with its reason,
no traceback ever, and the server answers a good client afterwards. Text and JSON-lines logs."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import struct
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from fake_slurmd.controller import FakeSlurmd
from fake_slurmd.processes import stop_process
from fake_slurmd.scenario import NodeSpec, Scenario
from slurmproto.client import Endpoint, callerid, callerid_request
from slurmproto.codec import sign_and_encode
from slurmproto.constants import SLURM_EXTERN_CONT
from slurmproto.munge import MungeContext
from slurmproto.stepd import StepdClient, step_socket
from tests.support.munged import Munged
from tests.support.procs import installed_or_skip

CLIENTS = 100
VERSION = 0x2600  # 22.05's: the release the fake answers in when asked in it
LINGER_0 = struct.pack("ii", 1, 0)  # close() sends RST instead of FIN
FORBIDDEN = ("Traceback", "never retrieved", "Exception in callback", "Logging error")


class Server:
    """A fake-slurmd process; its stderr is collected line by line in a thread."""

    def __init__(self, script: str, scenario: Path, munged: Munged, log_format: str) -> None:
        self.log_format = log_format
        self.proc = subprocess.Popen([script, "--scenario", str(scenario), "--munge-socket", str(munged.socket),
                                      "--log-format", log_format, "--log-level", "info"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        assert self.proc.stdout is not None
        words = self.proc.stdout.readline().split()
        assert words[:3] == ["listening", "node1", "127.0.0.1"], (words, self.lines)
        self.port = int(words[3])

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def spool_dir(self) -> str:
        """From the "serving" line on stderr (it follows the stdout line)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if line.startswith("fake-slurmd: serving"):
                    return line.split("; step sockets in ")[1]
            time.sleep(0.02)
        raise AssertionError(f"no serving line: {self.lines}")

    def events(self) -> list[dict[str, Any]]:
        return [e for e in map(self._parse, list(self.lines)) if e is not None]

    def _parse(self, line: str) -> dict[str, Any] | None:
        if self.log_format == "json":
            return json.loads(line) if line.startswith("{") else None
        if line.startswith("fake-slurmd:"):
            return None
        words = shlex.split(line)  # time level event words... key=value...
        fields = [w for w in words[2:] if "=" in w]
        event = " ".join(w for w in words[2:] if "=" not in w)
        return {"event": event, "level": words[1], **dict(w.split("=", 1) for w in fields)}

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        self._reader.join(10)
        return code


@pytest.fixture(params=["text", "json"])
def server(request: pytest.FixtureRequest, munged: Munged, tmp_path: Path) -> Iterator[Server]:
    script = installed_or_skip("fake-slurmd")
    scenario = tmp_path / "node.toml"
    scenario.write_text('client_timeout = 1\n[[nodes]]\nname = "node1"\nport = 0\n'
                        '[[jobs]]\njob_id = 5\nuser = "root"\n')
    running = Server(script, scenario, munged, request.param)
    try:
        yield running
    finally:
        stop_process(running.proc)


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_0)
    return sock


def _drain(sock: socket.socket) -> None:
    """Read until the server closes (or resets) the connection."""
    try:
        while sock.recv(65536):
            pass
    except OSError:
        pass


def _request(munged: Munged) -> bytes:
    message = callerid_request(Endpoint.parse("127.0.0.1"), 1, Endpoint.parse("127.0.0.1"), 2)
    with MungeContext(munged.socket) as munge:
        return sign_and_encode(message, VERSION, munge.encode)


def reset_at_once(port: int, munged: Munged) -> list[int]:
    """All connect, then all reset together (before the server has read a byte)."""
    socks = [_connect(port) for _ in range(CLIENTS * 2)]
    ports = [s.getsockname()[1] for s in socks]
    for sock in socks:
        sock.close()
    return ports


def _each(port: int, client: Callable[[socket.socket], None]) -> list[int]:
    def one(_: int) -> int:
        with _connect(port) as sock:
            local = int(sock.getsockname()[1])
            with contextlib.suppress(OSError):  # the server's reset, when it closes on unread bytes
                client(sock)
            return local

    with ThreadPoolExecutor(50) as pool:
        return list(pool.map(one, range(CLIENTS)))


def reset_mid_frame(port: int, munged: Munged) -> list[int]:
    frame = _request(munged)
    return _each(port, lambda sock: sock.sendall(frame[:20]))


def reset_after_request(port: int, munged: Munged) -> list[int]:
    """A whole signed request, then a reset: the server answers into a dead connection."""
    frames = iter([_request(munged) for _ in range(CLIENTS)])
    lock = threading.Lock()

    def send(sock: socket.socket) -> None:
        with lock:
            frame = next(frames)
        sock.sendall(frame)

    return _each(port, send)


def half_close(port: int, munged: Munged) -> list[int]:
    def client(sock: socket.socket) -> None:
        sock.shutdown(socket.SHUT_WR)
        _drain(sock)

    return _each(port, client)


def garbage(port: int, munged: Munged) -> list[int]:
    def client(sock: socket.socket) -> None:
        sock.sendall(os.urandom(4096))
        sock.shutdown(socket.SHUT_WR)
        _drain(sock)

    return _each(port, client)


def flood(port: int, munged: Munged) -> list[int]:
    """A length prefix just under the cap, then megabytes of zeros without pause."""
    def client(sock: socket.socket) -> None:
        sock.sendall((60_000).to_bytes(4, "big") + bytes(4 * 1024 * 1024))

    return _each(port, client)


def hold(port: int, munged: Munged) -> list[int]:
    """Connect and say nothing until the server gives up (client_timeout = 1 s)."""
    return _each(port, _drain)


KINDS = [reset_at_once, reset_mid_frame, reset_after_request, half_close, garbage, flood, hold]


def _assert_clean(server: Server) -> None:
    text = "\n".join(server.lines)
    for word in FORBIDDEN:
        assert word not in text, text[-3000:]
    assert all(not line.startswith((" ", "\t")) for line in server.lines)  # nothing continues a line
    assert not [e for e in server.events() if e.get("level") == "error"], text[-3000:]


def _still_answers(server: Server, munged: Munged) -> None:
    started = time.monotonic()
    result = callerid("127.0.0.1", 1, "127.0.0.1", 2, port=server.port, munge_socket=str(munged.socket))
    assert result.job_id is None and time.monotonic() - started < 5


@pytest.mark.parametrize("kind", KINDS, ids=[k.__name__ for k in KINDS])
def test_hostile_tcp_clients(server: Server, munged: Munged, kind: Callable[[int, Munged], list[int]]) -> None:
    started = time.monotonic()
    ports = kind(server.port, munged)
    _still_answers(server, munged)
    peers = Counter(f"127.0.0.1:{p}" for p in ports)  # a port the kernel gave twice is two clients

    def seen() -> dict[str, list[dict[str, Any]]]:
        by_peer: dict[str, list[dict[str, Any]]] = {p: [] for p in peers}
        for event in server.events():
            if event.get("peer") in by_peer:
                by_peer[event["peer"]].append(event)
        return by_peer

    deadline = time.monotonic() + 30
    while any(not lines for lines in seen().values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.stop() == 0
    _assert_clean(server)
    for peer, lines in seen().items():  # one line each, with its reason
        assert len(lines) == peers[peer], (peer, lines)
        for line in lines:
            assert line["event"] in {"closed", "dropped", "request"}, line
            assert line.get("reason") or line.get("verdict"), line
    assert time.monotonic() - started < 60


def _stepd_reset(path: str) -> None:
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(path)
    sock.close()


def _stepd_half_int(path: str) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(path)
        sock.sendall(b"\x00\x26")


def _stepd_garbage(path: str) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(path)
        try:
            sock.sendall(VERSION.to_bytes(4, "little") + os.urandom(4096))
            _drain(sock)
        except OSError:
            pass


@pytest.mark.parametrize("client", [_stepd_reset, _stepd_half_int, _stepd_garbage],
                         ids=["reset", "half an int", "garbage"])
def test_hostile_stepd_clients(server: Server, munged: Munged, client: Callable[[str], None]) -> None:
    path = step_socket(server.spool_dir(), "node1", 5, SLURM_EXTERN_CONT)
    with ThreadPoolExecutor(50) as pool:
        list(pool.map(lambda _: client(path), range(CLIENTS)))
    with StepdClient(path) as stepd:
        assert stepd.step_uid() == 0
    _still_answers(server, munged)

    def disconnects() -> int:
        return sum(e["event"] == "disconnect" for e in server.events())

    deadline = time.monotonic() + 30
    while disconnects() < CLIENTS + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.stop() == 0
    _assert_clean(server)
    events = [e for e in server.events() if e["event"] == "disconnect"]
    assert len(events) == CLIENTS + 1 and all(e.get("reason") for e in events)  # ours, and the good client's


def test_connection_flood_beyond_the_limit(munged: Munged, caplog: pytest.LogCaptureFixture) -> None:
    """More held connections than the limit: each one over it is refused with a line saying so."""
    caplog.set_level("INFO", logger="fake_slurmd")
    with FakeSlurmd(Scenario([NodeSpec("node1", port=0)], client_timeout=30), munge_socket=str(munged.socket),
                    max_connections=10) as fake:
        held = [socket.create_connection(("127.0.0.1", fake.port), timeout=10) for _ in range(50)]
        try:
            deadline = time.monotonic() + 20
            while len(_refusals(caplog)) < 40 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            for sock in held:
                sock.close()
        deadline = time.monotonic() + 20
        while fake.server is not None and fake.server.connections and time.monotonic() < deadline:
            time.sleep(0.05)
        started = time.monotonic()
        assert callerid("127.0.0.1", 1, "127.0.0.1", 2, port=fake.port,
                        munge_socket=str(munged.socket)).job_id is None
        assert time.monotonic() - started < 5
    refusals = _refusals(caplog)
    assert len(refusals) == 40 and all(f["reason"] == "more than 10 connections" for f in refusals)
    assert not [r for r in caplog.records if r.levelname == "ERROR" or r.exc_info]


def _refusals(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [vars(r)["fields"] for r in list(caplog.records) if r.getMessage() == "refused"]
