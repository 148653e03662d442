"""The hook's conversation with slurm-adopt-agent, and the little the hook needs before it knows whether the
agent answers: nothing here imports more than sys, time and _socket (the thin hook's budget, see
tests/test_agent_imports.py), so the same client serves pam_exec's short-lived process and a PAM module
living inside sshd.

One request, one reply, over a UNIX stream socket: the client writes the request and shuts its side down;
the agent answers and closes. Both are fields separated by NUL (PAM items, environment values and argv
can hold no NUL), UTF-8 with surrogateescape (os.environ's undecodable bytes go through unchanged):

    request: MAGIC, budget ms, pid to adopt, PAM_USER, PAM_SERVICE, SSH_CONNECTION, option...
    reply:   MAGIC, exit status (0 or 1), message, then level TAB text per log line, then END

A PAM item that is absent is "-", one that is present "=" and its value: an absent PAM_USER and an empty
one are not the same for the decision's messages. Anything else in a reply (or none in time) is no reply:
the hook then decides by itself. A PAM module inside sshd asks about its own process:

    reply = ask(path, Request(budget_ms, os.getpid(), user, service, ssh_connection, tuple(args)), timeout)
    if reply is None: ...decide in-process...  # else: log reply.log, show reply.message, use reply.status

encode_request() and decode_reply() are pure (bytes in, bytes out); exchange() is the socket and its
deadline.
"""

from __future__ import annotations

import sys
import time

MAGIC = "slurm-adopt-agent 1"
END = "end"
DEFAULT_SOCKET = "/run/slurm-adopt/agent.socket"
NO_AGENT = "none"
"""agent_socket=none: never ask an agent."""
DEFAULT_DEADLINE = 3.0
MAX_REQUEST = 64 * 1024
MAX_REPLY = 256 * 1024
MAX_LOG_LINES = 200
AGENT_SHARE = 0.5
"""The part of the deadline the hook waits for the agent: the rest is the fallback's."""

LOG_LEVELS = ("quiet", "fatal", "error", "info", "verbose", "debug", "debug2", "debug3", "debug4", "debug5")
"""Slurm's log levels, by number (0 quiet ... 9 debug5)."""


class WireError(ValueError):
    """A request or reply that does not follow the protocol."""


class _Record:
    """A plain record (typing.NamedTuple would import typing, re and more: milliseconds at each login)."""

    __slots__: tuple[str, ...] = ()

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    def __hash__(self) -> int:
        return hash(tuple(getattr(self, n) for n in self.__slots__))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__) + ")"


class Request(_Record):
    __slots__ = ("args", "budget_ms", "connection", "pid", "service", "user")

    def __init__(self, budget_ms: int, pid: int, user: str | None, service: str | None, connection: str | None,
                 args: tuple[str, ...]) -> None:
        self.budget_ms = budget_ms
        """How long the agent may take, from when it reads the request."""
        self.pid = pid
        """The process to adopt: sshd's (the hook's parent, or the PAM module's own process)."""
        self.user, self.service = user, service
        self.connection = connection
        """SSH_CONNECTION as sshd put it in the PAM environment."""
        self.args = args
        """The hook's options, name=value as in pam.d."""


class Reply(_Record):
    __slots__ = ("log", "message", "status")

    def __init__(self, status: int, message: str | None, log: tuple[tuple[str, str], ...]) -> None:
        self.status, self.message = status, message
        self.log = log
        """(level, text), already filtered by the request's log_level."""


def _item(value: str | None) -> str:
    return "-" if value is None else "=" + value


def _unitem(field: str) -> str | None:
    if field == "-":
        return None
    if field[:1] != "=":
        raise WireError(f"a PAM item must be '-' or start with '=', not {field[:20]!r}")
    return field[1:]


def _join(fields: list[str]) -> bytes:
    if any("\0" in field for field in fields):
        raise WireError("a field holds a NUL")
    return "\0".join(fields).encode("utf-8", "surrogateescape")


def _split(data: bytes, limit: int) -> list[str]:
    if len(data) > limit:
        raise WireError(f"{len(data)} bytes, more than {limit}")
    fields = data.decode("utf-8", "surrogateescape").split("\0")
    if fields[0] != MAGIC:
        raise WireError(f"not {MAGIC!r}: {fields[0][:40]!r}")
    return fields


def _natural(field: str, what: str, top: int) -> int:
    if not (field.isascii() and field.isdigit() and len(field) <= 10 and int(field) <= top):
        raise WireError(f"{what} must be a number 0-{top}, not {field[:20]!r}")
    return int(field)


def encode_request(request: Request) -> bytes:
    return _join([MAGIC, str(request.budget_ms), str(request.pid), _item(request.user), _item(request.service),
                  _item(request.connection), *request.args])


def decode_request(data: bytes) -> Request:
    fields = _split(data, MAX_REQUEST)
    if len(fields) < 6:
        raise WireError(f"a request has at least 6 fields, not {len(fields)}")
    budget = _natural(fields[1], "the budget", 300_000)
    pid = _natural(fields[2], "the pid", 2**22)
    if pid < 2:
        raise WireError(f"pid {pid} cannot be adopted")
    return Request(budget, pid, _unitem(fields[3]), _unitem(fields[4]), _unitem(fields[5]), tuple(fields[6:]))


def encode_reply(reply: Reply) -> bytes:
    lines = [f"{level}\t{text}" for level, text in reply.log[:MAX_LOG_LINES]]
    return _join([MAGIC, str(reply.status), _item(reply.message), *lines, END])


def decode_reply(data: bytes) -> Reply:
    fields = _split(data, MAX_REPLY)
    if len(fields) < 4 or fields[-1] != END:
        raise WireError("a reply ends with 'end' (cut short?)")
    status = _natural(fields[1], "the exit status", 1)
    log = []
    for field in fields[3:-1]:
        level, tab, text = field.partition("\t")
        if not tab or level not in LOG_LEVELS:
            raise WireError(f"a log line is a level, a tab and text, not {field[:40]!r}")
        log.append((level, text))
    if len(log) > MAX_LOG_LINES:
        raise WireError(f"more than {MAX_LOG_LINES} log lines")
    return Reply(status, _unitem(fields[2]), tuple(log))


# --- the hook's own options, read without adopt.options (which imports enum and typing) ---------------------


def read_seconds(value: str) -> float | None:
    """A deadline as adopt.options takes it (ASCII digits, at most one dot, above 0, at most 300), else None."""
    whole, _, fraction = value.partition(".")
    if not (all(part.isascii() and part.isdigit() for part in (whole, fraction or "0")) and len(value) <= 12):
        return None
    seconds = float(value)
    return seconds if 0 < seconds <= 300 else None


def hook_settings(args: list[str]) -> tuple[float, str]:
    """deadline= and agent_socket= from the options, as parse_options() reads them (names in any case,
    the last valid one wins)."""
    deadline, path = DEFAULT_DEADLINE, DEFAULT_SOCKET
    for arg in args:
        name, sep, value = arg.partition("=")
        name = name.lower()
        if sep and name == "deadline":
            deadline = read_seconds(value) or deadline
        elif sep and name == "agent_socket" and value:
            path = value
    return deadline, path


# --- the socket shell ------------------------------------------------------------------------------------


def exchange(path: str, request: bytes, timeout: float) -> bytes | None:
    """Send `request` to the agent at `path` and return its answer, or None: no socket there, a socket of
    a process that is not root's, refused, no complete answer within `timeout` seconds, or more than
    MAX_REPLY bytes. Never raises for any of those."""
    import _socket

    end = time.monotonic() + timeout
    try:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM | _socket.SOCK_CLOEXEC)
    except OSError:
        return None
    try:
        sock.settimeout(timeout)
        sock.connect(path)
        # Only root's agent may decide a login: whoever made the socket file, the listener must be root.
        creds = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
        if int.from_bytes(creds[4:8], sys.byteorder) != 0:
            return None
        sock.settimeout(max(0.001, end - time.monotonic()))
        sock.sendall(request)
        sock.shutdown(_socket.SHUT_WR)
        chunks: list[bytes] = []
        size = 0
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return None
            sock.settimeout(left)
            chunk = sock.recv(65536)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > MAX_REPLY:
                return None
            chunks.append(chunk)
    except (OSError, ValueError):
        return None
    finally:
        sock.close()


def ask(path: str, request: Request, timeout: float) -> Reply | None:
    """The agent's reply to `request`, or None when there is none to trust (see exchange())."""
    if path == NO_AGENT:
        return None
    data = exchange(path, encode_request(request), timeout)
    if data is None:
        return None
    try:
        return decode_reply(data)
    except WireError:
        return None
