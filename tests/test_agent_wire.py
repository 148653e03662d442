"""The hook's protocol with slurm-adopt-agent (adopt.wire): encoding and decoding tables, and the client
against hostile agents (in this process, or another user's), none of which it may believe."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from adopt import wire
from adopt.options import parse_options
from adopt.wire import Reply, Request, WireError

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="the client believes root's agent only: needs root "
                                                          "(CI runs as root)")

REQUESTS = [
    Request(1500, 1234, "alice", "sshd", "127.0.0.1 40000 127.0.0.1 22", ("conf=/etc/slurm/slurm.conf",)),
    Request(1, 2, None, None, None, ()),
    Request(300_000, 2**22, "", "", "", ("", "=", "a=b=c")),
    Request(10, 99, "caf\udce9", "ss\u00e9hd", "::1 1 ::1 22", ("log_level=debug5", "nodename=n\udcff")),
]
REPLIES = [
    Reply(0, None, ()),
    Reply(1, "Access denied by pam_slurm_adopt: you have no active jobs on this node",
          (("info", "send_user_msg: ..."), ("debug", "a\tb"))),
    Reply(0, "", (("error", ""), ("debug5", "=-"))),
    Reply(1, "\udcff", tuple(("info", str(i)) for i in range(wire.MAX_LOG_LINES))),
]


@pytest.mark.parametrize("request_", REQUESTS, ids=range(len(REQUESTS)))
def test_request_round_trip(request_: Request) -> None:
    assert wire.decode_request(wire.encode_request(request_)) == request_


@pytest.mark.parametrize("reply", REPLIES, ids=range(len(REPLIES)))
def test_reply_round_trip(reply: Reply) -> None:
    assert wire.decode_reply(wire.encode_reply(reply)) == reply


def test_absent_and_empty_items_differ() -> None:
    assert wire.encode_request(REQUESTS[1]) != wire.encode_request(Request(1, 2, "", "", "", ()))


def _fields(*fields: str) -> bytes:
    return "\0".join(fields).encode()


M = wire.MAGIC
BAD_REQUESTS = {
    "empty": b"",
    "other magic": _fields("slurm-adopt-agent 2", "1", "2", "-", "-", "-"),
    "too few fields": _fields(M, "1", "2", "-", "-"),
    "budget not a number": _fields(M, "x", "2", "-", "-", "-"),
    "budget negative": _fields(M, "-1", "2", "-", "-", "-"),
    "budget too long": _fields(M, "300001", "2", "-", "-", "-"),
    "budget other digits": _fields(M, "\u0661", "2", "-", "-", "-"),
    "pid 1": _fields(M, "1", "1", "-", "-", "-"),
    "pid 0": _fields(M, "1", "0", "-", "-", "-"),
    "pid huge": _fields(M, "1", "99999999999", "-", "-", "-"),
    "item without marker": _fields(M, "1", "2", "alice", "-", "-"),
    "too large": _fields(M, "1", "2", "-", "-", "-", "x" * wire.MAX_REQUEST),
}
BAD_REPLIES = {
    "empty": b"",
    "magic only": _fields(M),
    "no end (cut short)": _fields(M, "0", "-", "info\tx"),
    "cut inside the end": _fields(M, "0", "-", "en"),
    "status 2": _fields(M, "2", "-", "end"),
    "status text": _fields(M, "yes", "-", "end"),
    "status signed": _fields(M, "+0", "-", "end"),
    "message without marker": _fields(M, "0", "hello", "end"),
    "unknown level": _fields(M, "0", "-", "trace\tx", "end"),
    "line without tab": _fields(M, "0", "-", "info x", "end"),
    "too many lines": _fields(M, "0", "-", *["info\tx"] * (wire.MAX_LOG_LINES + 1), "end"),
    "too large": _fields(M, "0", "=" + "x" * wire.MAX_REPLY, "end"),
    "other magic": _fields("HTTP/1.1 200 OK", "0", "-", "end"),
}


@pytest.mark.parametrize("data", BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
def test_bad_request_is_a_wire_error(data: bytes) -> None:
    with pytest.raises(WireError):
        wire.decode_request(data)


@pytest.mark.parametrize("data", BAD_REPLIES.values(), ids=BAD_REPLIES.keys())
def test_bad_reply_is_a_wire_error(data: bytes) -> None:
    with pytest.raises(WireError):
        wire.decode_reply(data)


def test_nul_in_a_field_is_refused() -> None:
    with pytest.raises(WireError):
        wire.encode_reply(Reply(0, "a\0b", ()))


@pytest.mark.parametrize(("args", "expected"), [
    ([], (3.0, wire.DEFAULT_SOCKET)),
    (["deadline=1.5", "agent_socket=/x"], (1.5, "/x")),
    (["DEADLINE=2", "Agent_Socket=none"], (2.0, "none")),
    (["deadline=abc"], (3.0, wire.DEFAULT_SOCKET)),
    (["deadline=0"], (3.0, wire.DEFAULT_SOCKET)),
    (["deadline=301"], (3.0, wire.DEFAULT_SOCKET)),
    (["deadline=1e3"], (3.0, wire.DEFAULT_SOCKET)),
    (["deadline=2", "deadline=bad"], (2.0, wire.DEFAULT_SOCKET)),
    (["agent_socket="], (3.0, wire.DEFAULT_SOCKET)),
    (["deadline", "agent_socket"], (3.0, wire.DEFAULT_SOCKET)),
])
def test_hook_settings_read_as_the_options_table_does(args: list[str], expected: tuple[float, str]) -> None:
    assert wire.hook_settings(args) == expected
    opts, _ = parse_options(args)
    assert (opts.deadline, opts.agent_socket) == expected


# --- the client against hostile agents ----------------------------------------------------------------------


Behaviour = Callable[[socket.socket], None]


@contextmanager
def fake_agent(path: Path, behaviour: Behaviour) -> Iterator[list[bytes]]:
    """A listener at `path` in this process (root's, when the tests are) acting out `behaviour` on each
    connection; yields the requests it read."""
    seen: list[bytes] = []
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(8)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                chunks = []
                try:
                    while chunk := conn.recv(65536):
                        chunks.append(chunk)
                except OSError:
                    pass
                seen.append(b"".join(chunks))
                with suppress(OSError):
                    behaviour(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(5)


def sends(data: bytes) -> Behaviour:
    return lambda conn: conn.sendall(data)


def sleeps(seconds: float) -> Behaviour:
    return lambda conn: time.sleep(seconds)


def drips(data: bytes) -> Behaviour:
    def act(conn: socket.socket) -> None:
        for i in range(len(data)):
            conn.sendall(data[i:i + 1])
            time.sleep(0.05)
    return act


GOOD = wire.encode_reply(Reply(1, "no", (("info", "x"),)))
HOSTILE = {
    "closes at once": sends(b""),
    "cut short": sends(GOOD[:-2]),
    "garbage": sends(os.urandom(300)),
    "a flood": sends(b"x" * (wire.MAX_REPLY + 10)),
    "hangs": sleeps(3),
    "drips past the timeout": drips(GOOD),
    **{f"bad: {name}": sends(data) for name, data in BAD_REPLIES.items()},
}


REQUEST = Request(500, 4321, "alice", "sshd", None, ("deadline=1",))


@ROOT_ONLY
def test_a_good_agent_is_believed(tmp_path: Path) -> None:
    with fake_agent(tmp_path / "s", sends(GOOD)) as seen:
        assert wire.ask(str(tmp_path / "s"), REQUEST, 2) == Reply(1, "no", (("info", "x"),))
    assert seen == [wire.encode_request(REQUEST)]


@ROOT_ONLY
@pytest.mark.parametrize("behaviour", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_agent_is_no_answer_within_the_timeout(tmp_path: Path, behaviour: Behaviour) -> None:
    with fake_agent(tmp_path / "s", behaviour):
        started = time.monotonic()
        assert wire.ask(str(tmp_path / "s"), REQUEST, 0.5) is None
        assert time.monotonic() - started < 0.5 + 1.0  # its timeout, and some room for a loaded machine


@pytest.mark.parametrize("what", ["missing", "stale socket", "a regular file", "a directory"])
def test_no_agent_there(tmp_path: Path, what: str) -> None:
    path = tmp_path / "s"
    if what == "stale socket":
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(str(path))
        stale.close()  # never listened: connect() is refused
    elif what == "a regular file":
        path.write_text("x")
    elif what == "a directory":
        path.mkdir()
    assert wire.ask(str(path), REQUEST, 1) is None


def test_agent_socket_none_asks_nothing() -> None:
    assert wire.ask(wire.NO_AGENT, REQUEST, 1) is None


def test_a_path_too_long_is_no_answer() -> None:
    assert wire.ask("/" + "x" * 200, REQUEST, 1) is None


@ROOT_ONLY
def test_another_users_agent_is_not_believed() -> None:
    """A socket of nobody's that answers well: the listener is not root, so the hook decides itself."""
    with tempfile.TemporaryDirectory(dir="/tmp") as where:  # pytest's tmp_path is root's alone
        os.chmod(where, 0o777)
        _not_believed(Path(where) / "s")


def _not_believed(path: Path) -> None:
    script = ("import socket, sys; s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(1); "
              "print('up', flush=True); c, _ = s.accept(); c.recv(65536); c.sendall(bytes.fromhex(sys.argv[2]))")
    with subprocess.Popen([sys.executable, "-c", script, str(path), GOOD.hex()], user="nobody",
                          stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline() == "up\n"
            assert wire.ask(str(path), REQUEST, 2) is None
        finally:
            proc.kill()
