"""Serve /dev/log ourselves: PAM modules log through syslog(3), and no syslog daemon runs on the test machine.

`DevLogCatcher` binds the AF_UNIX datagram socket syslog(3) writes to, reads it in a background thread and
parses each datagram into a `SyslogRecord`. It never takes over a socket somebody else serves.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import os
import re
import socket
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

DEV_LOG = Path("/dev/log")

FACILITIES = ("kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
              "ftp", "ntp", "security", "console", "solaris-cron",
              "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7")
SEVERITIES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")

# What glibc's syslog(3) sends to /dev/log (no hostname): "<PRI>Mmm dd hh:mm:ss ident[pid]: message",
# where "[pid]" is there only with LOG_PID and "ident: " only when an ident (default: the program name) exists.
_RFC3164 = re.compile(r"<(?P<pri>\d{1,3})>(?P<ts>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) ?(?P<rest>.*)", re.S)
_TAG = re.compile(r"(?P<ident>[^\s\[\]:]+)(?:\[(?P<pid>\d+)\])?: ?(?P<message>.*)", re.S)
# `logger --rfc3164` also puts the hostname before the tag.
_HOST_TAG = re.compile(r"(?P<host>[^\s\[\]:]+) " + _TAG.pattern, re.S)
# logger --rfc5424: "<PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG" ("-" for absent fields).
_RFC5424 = re.compile(
    r"<(?P<pri>\d{1,3})>1 (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<procid>\S+) (?P<msgid>\S+) "
    r"(?P<sd>-|(?:\[(?:[^\]\\]|\\.)*\])+) ?(?P<message>.*)", re.S)
# Anything else that at least starts with a priority.
_PRI_ONLY = re.compile(r"<(?P<pri>\d{1,3})>(?P<message>.*)", re.S)


class DevLogUnavailable(RuntimeError):
    """The socket path is served by someone else (or is not a socket): we leave it alone."""


@dataclass(frozen=True)
class SyslogRecord:
    """One datagram received on the socket, parsed."""

    facility: int  # PRI >> 3, e.g. 10 = authpriv; -1 when the datagram had no <PRI>
    severity: int  # PRI & 7, e.g. 3 = err
    ident: str | None
    pid: int | None
    message: str
    timestamp: str | None  # as sent: RFC 3164 carries no year and no zone
    hostname: str | None  # glibc sends none to /dev/log
    raw: str
    received: float  # time.time() on arrival

    @property
    def facility_name(self) -> str:
        return FACILITIES[self.facility] if 0 <= self.facility < len(FACILITIES) else str(self.facility)

    @property
    def severity_name(self) -> str:
        return SEVERITIES[self.severity] if 0 <= self.severity < len(SEVERITIES) else str(self.severity)

    def __str__(self) -> str:
        who = f"{self.ident}[{self.pid}]" if self.pid is not None else str(self.ident)
        return f"{self.facility_name}.{self.severity_name} {who}: {self.message}"


def parse(datagram: bytes | str, received: float | None = None) -> SyslogRecord:
    """Parse one syslog datagram (RFC 3164 as glibc sends it, RFC 5424 as `logger --rfc5424` does)."""
    raw = datagram.decode("utf-8", "replace") if isinstance(datagram, bytes) else datagram
    # glibc ends nothing, logger may end with a newline, some senders with NUL: none of it is message.
    text = raw.rstrip("\0\n")
    when = time.time() if received is None else received
    if m := _RFC5424.fullmatch(text):
        pri = int(m["pri"])
        procid = m["procid"]
        return SyslogRecord(pri >> 3, pri & 7, None if m["app"] == "-" else m["app"],
                            int(procid) if procid.isdigit() else None, m["message"], m["ts"],
                            None if m["host"] == "-" else m["host"], raw, when)
    if m := _RFC3164.fullmatch(text):
        pri = int(m["pri"])
        # An ident directly followed by "[pid]:" or ":" wins over reading the first word as a hostname.
        if t := _TAG.fullmatch(m["rest"]) or _HOST_TAG.fullmatch(m["rest"]):
            pid = int(t["pid"]) if t["pid"] else None
            host = t.groupdict().get("host")
            return SyslogRecord(pri >> 3, pri & 7, t["ident"], pid, t["message"], m["ts"], host, raw, when)
        return SyslogRecord(pri >> 3, pri & 7, None, None, m["rest"], m["ts"], None, raw, when)
    if m := _PRI_ONLY.fullmatch(text):
        pri = int(m["pri"])
        return SyslogRecord(pri >> 3, pri & 7, None, None, m["message"], None, None, raw, when)
    return SyslogRecord(-1, -1, None, None, text, None, None, raw, when)


Match = Callable[[SyslogRecord], bool] | str


def _matcher(what: Match) -> Callable[[SyslogRecord], bool]:
    if isinstance(what, str):
        return lambda record: what in record.message
    return what


# Paths served by a catcher of this process: a second one on the same path would unlink the first's socket.
_active: dict[str, DevLogCatcher] = {}
_active_lock = threading.Lock()


@atexit.register
def _stop_all() -> None:
    """Last resort when a caller forgot stop(): no socket of ours may stay in /dev."""
    for catcher in list(_active.values()):
        with contextlib.suppress(Exception):
            catcher.stop()


class DevLogCatcher:
    """Context manager: `with DevLogCatcher() as log: ...; log.wait_for("failed", 5)`.

    Binds `path` (default /dev/log) when it is absent or a stale socket (nobody reading it), mode 0666 like
    a syslog daemon so unprivileged senders work too, and removes it on exit if it is still ours. Raises
    `DevLogUnavailable` when something serves the path already, or it is not a socket.
    """

    def __init__(self, path: str | Path = DEV_LOG) -> None:
        self.path = Path(path)
        self._sock: socket.socket | None = None
        self._identity: tuple[int, int] | None = None
        self._records: list[SyslogRecord] = []
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> Self:
        if self._sock is not None:
            raise RuntimeError(f"this DevLogCatcher already serves {self.path}")
        key = os.path.abspath(self.path)
        with _active_lock:
            if key in _active:
                raise DevLogUnavailable(f"{self.path} is already served by another DevLogCatcher in this process")
            _active[key] = self
        try:
            self._claim()
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                sock.bind(str(self.path))
            except OSError as e:
                sock.close()
                # Somebody bound it between our check and our bind.
                raise DevLogUnavailable(f"cannot bind {self.path}: {e}") from e
            self._sock = sock
            st = os.stat(self.path)
            self._identity = (st.st_dev, st.st_ino)
            os.chmod(self.path, 0o666)
            sock.settimeout(0.1)
            self._thread = threading.Thread(target=self._serve, name=f"DevLogCatcher({self.path})", daemon=True)
            self._thread.start()
        except BaseException:
            self.stop()
            raise
        return self

    def _claim(self) -> None:
        """Make sure the path is free for us: absent, or a socket nobody reads (removed)."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise DevLogUnavailable(f"{self.path} exists and is not a socket ({stat.filemode(st.st_mode)}); "
                                    "leaving it alone")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            probe.connect(str(self.path))
        except ConnectionRefusedError:
            pass  # stale: bound once, its reader is gone
        except OSError as e:
            # EPROTOTYPE: a stream socket, i.e. served by some syslog implementation; anything else: unsure.
            raise DevLogUnavailable(f"{self.path} is in use or unusable ({errno.errorcode.get(e.errno or 0, e)}); "
                                    "not taking it over") from e
        else:
            raise DevLogUnavailable(f"{self.path} is served by another process (a syslog daemon or another "
                                    "test run); not taking it over")
        finally:
            probe.close()
        self.path.unlink()

    def stop(self) -> None:
        """Stop reading, close the socket and remove the path if it is still the one we bound."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._identity is not None:
            with contextlib.suppress(FileNotFoundError):
                st = os.lstat(self.path)
                if (st.st_dev, st.st_ino) == self._identity:
                    self.path.unlink()
            self._identity = None
        with _active_lock:
            key = os.path.abspath(self.path)
            if _active.get(key) is self:
                del _active[key]

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def _serve(self) -> None:
        assert self._sock is not None
        sock = self._sock
        while not self._stop.is_set():
            try:
                data = sock.recv(1 << 17)
            except TimeoutError:
                continue
            except OSError:
                return
            record = parse(data)
            with self._changed:
                self._records.append(record)
                self._changed.notify_all()

    # -- reading -----------------------------------------------------------------------------------------

    def mark(self) -> int:
        """A position: pass it as `since` to see only later messages (the catcher lives for the session)."""
        with self._changed:
            return len(self._records)

    def messages(self, ident: str | None = None, *, since: int = 0) -> list[SyslogRecord]:
        """The records received so far (from `since` on), only those of `ident` if given."""
        with self._changed:
            records = self._records[since:]
        return [r for r in records if ident is None or r.ident == ident]

    def wait_for(self, what: Match, timeout: float = 5.0, *, ident: str | None = None, since: int = 0) -> SyslogRecord:
        """The first record (from `since`, of `ident`) whose message contains `what` or that `what(record)` accepts.

        Raises TimeoutError listing what did arrive.
        """
        accept = _matcher(what)
        deadline = time.monotonic() + timeout
        checked = since
        with self._changed:
            while True:
                for record in self._records[checked:]:
                    if (ident is None or record.ident == ident) and accept(record):
                        return record
                checked = max(checked, len(self._records))
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = "\n".join(f"  {r}" for r in self._records[since:]) or "  (nothing)"
                    raise TimeoutError(f"no syslog message matching {what!r} (ident {ident!r}) on {self.path} "
                                       f"within {timeout} s; received:\n{seen}")
                self._changed.wait(left)
