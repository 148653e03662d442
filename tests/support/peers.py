"""Misbehaving TCP peers on loopback, for the failure paths a real slurmd is hard to drive into."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from types import TracebackType

PeerScript = Callable[[socket.socket, bytes], None]
"""Called per connection with the socket and the first bytes the client sent."""


class ScriptedPeer:
    """A listener on `host` (127.0.0.1) that runs `behaviours[i]` for its i-th connection (the last one repeats)."""

    def __init__(self, *behaviours: PeerScript, host: str = "127.0.0.1") -> None:
        self.behaviours = list(behaviours)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.create_server((host, 0), family=family)
        self.port: int = self.listener.getsockname()[1]
        self.received: list[bytes] = []
        self._stop = threading.Event()
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        self.listener.settimeout(0.05)
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._held.append(conn)
            conn.settimeout(2)
            try:
                data = conn.recv(65536)
            except OSError:
                data = b""
            self.received.append(data)
            behaviour = self.behaviours[min(len(self.received), len(self.behaviours)) - 1]
            with contextlib.suppress(OSError):
                behaviour(conn, data)

    def __enter__(self) -> ScriptedPeer:
        self._thread.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(5)
        for conn in self._held:
            conn.close()
        self.listener.close()


def close(conn: socket.socket, request: bytes) -> None:
    """What slurmd up to 24.11 does with a version it does not speak."""
    conn.close()


def hold(conn: socket.socket, request: bytes) -> None:
    """Accept, read, never answer (the socket stays open until the peer stops)."""


def send(data: bytes) -> PeerScript:
    def behaviour(conn: socket.socket, request: bytes) -> None:
        conn.sendall(data)
        conn.close()
    return behaviour


class DroppingHost:
    """A port on 127.0.0.1 whose SYNs are dropped: a listener whose accept queue is full.

    Connecting to it hangs until the client's timeout, like a firewalled host.
    """

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.port: int = self.listener.getsockname()[1]
        self.filler = socket.create_connection(("127.0.0.1", self.port), timeout=2)

    def __enter__(self) -> DroppingHost:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.filler.close()
        self.listener.close()
