"""The sack socket ("Slurm Auth and Cred Kiosk", 23.11+): how a process that cannot read slurm.key gets
and checks auth/slurm tokens.

A unix stream socket served by slurmd (and slurmctld, slurmdbd, sackd); one request per connection:
u16 BE protocol version, u32 BE length (itself, the op and the body: not the version), u32 BE op, body.
CREATE (64001): u32 r_uid + packmem(payload) -> u32 length + the token and its NUL (length 0: refused);
the server takes uid and gid from SO_PEERCRED, so the token is the asker's own. VERIFY (64002):
packstr(token) -> u32 return code, 0 when the token verifies for the asker's uid; from 25.11 a failed
VERIFY is closed on without an answer. Where to connect: $SLURM_SACK_SOCKET, then
/run/slurm-<ClusterName>/sack.socket (both 25.05+), then the daemons' own sockets.

`create_request`, `verify_request` and the reply readers are sans-I/O; `SackClient` drives a socket.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Mapping, Sequence

from slurmproto.errors import SackError
from slurmproto.slurmauth import MAX_TOKEN
from slurmproto.versions import AuthSlurmRules

SACK_CREATE = 64001
SACK_VERIFY = 64002
DAEMON_SOCKETS = ("/run/slurm/sack.socket", "/run/slurmctld/sack.socket", "/run/slurmdbd/sack.socket")
_SUN_PATH_MAX = 107


def socket_paths(rules: AuthSlurmRules, cluster: str | None = None,
                 env: Mapping[str, str] | None = None) -> list[str]:
    """The sockets a client of this release tries, in order. With $SLURM_SACK_SOCKET set (25.05+) only
    that one is tried, as Slurm's clients do."""
    if rules.sack_lookup:
        named = (env or {}).get("SLURM_SACK_SOCKET")
        if named:
            return [named]
        if cluster:
            return [f"/run/slurm-{cluster}/sack.socket", *DAEMON_SOCKETS]
    return list(DAEMON_SOCKETS)


def _frame(version: int, op: int, body: bytes) -> bytes:
    return struct.pack(">HII", version, 8 + len(body), op) + body


def create_request(version: int, r_uid: int, payload: bytes) -> bytes:
    """A CREATE request: a token for `payload` that only `r_uid` may verify (slurmauth.UID_ANY: anyone)."""
    return _frame(version, SACK_CREATE, struct.pack(">II", r_uid, len(payload)) + payload)


def verify_request(version: int, token: str) -> bytes:
    """A VERIFY request for `token`."""
    data = token.encode("ascii") + b"\0"
    return _frame(version, SACK_VERIFY, struct.pack(">I", len(data)) + data)


def token_length(prefix: bytes) -> int:
    """The length a CREATE reply announces (SackError when it is 0 or longer than any token)."""
    (length,) = struct.unpack(">I", prefix)
    if length == 0:
        raise SackError("the sack socket refused to create a token")
    if length > MAX_TOKEN + 1:
        raise SackError(f"the sack socket announced a token of {length} bytes (at most {MAX_TOKEN} are read)")
    return int(length)


def token_text(data: bytes) -> str:
    """The token of a CREATE reply's body (its NUL dropped)."""
    text = data[:-1] if data.endswith(b"\0") else data
    try:
        token = text.decode("ascii")
    except UnicodeDecodeError:
        raise SackError("the sack socket answered a token that is not ASCII") from None
    if "\0" in token or not token:
        raise SackError("the sack socket answered an empty or NUL-broken token")
    return token


class SackClient:
    """Tokens through a sack socket, each call within `timeout` seconds."""

    def __init__(self, paths: Sequence[str], version: int, timeout: float = 2.0) -> None:
        self.paths, self.version, self.timeout = list(paths), version, timeout

    def create(self, payload: bytes, r_uid: int, timeout: float | None = None) -> str:
        """A token for `payload` signed for the calling user, restricted to `r_uid`."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        with self._connect(deadline) as sock:
            sock.sendall(create_request(self.version, r_uid, payload))
            length = token_length(_read(sock, 4, deadline, "the length of the token"))
            return token_text(_read(sock, length, deadline, "the token"))

    def verify(self, token: str, timeout: float | None = None) -> int:
        """The return code of VERIFY for `token` (0: valid for the calling user). SackError when the
        socket closes without one (what 25.11+ do for a token that does not verify)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        with self._connect(deadline) as sock:
            sock.sendall(verify_request(self.version, token))
            (rc,) = struct.unpack(">I", _read(sock, 4, deadline, "the verify result"))
            return int(rc)

    def _connect(self, deadline: float) -> socket.socket:
        errors = []
        for path in self.paths:
            if len(path.encode()) > _SUN_PATH_MAX:
                errors.append(f"{path}: longer than a unix socket path may be")
                continue
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            try:
                sock.settimeout(_left(deadline, f"connecting to the sack socket {path}"))
                sock.connect(path)
                return sock
            except OSError as exc:
                sock.close()
                if isinstance(exc, TimeoutError):
                    raise SackError(f"the sack socket {path} did not accept the connection in time") from None
                errors.append(f"{path}: {exc.strerror or exc}")
        raise SackError("no sack socket answered (" + "; ".join(errors) + ")")


def _left(deadline: float, what: str) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise SackError(f"{what}: out of time")
    return left


def _read(sock: socket.socket, count: int, deadline: float, what: str) -> bytes:
    data = bytearray()
    while len(data) < count:
        sock.settimeout(_left(deadline, f"reading {what} from the sack socket"))
        try:
            chunk = sock.recv(min(count - len(data), 65536))
        except TimeoutError:
            raise SackError(f"the sack socket did not send {what} in time") from None
        except OSError as exc:
            raise SackError(f"reading {what} from the sack socket: {exc.strerror or exc}") from None
        if not chunk:
            raise SackError(f"the sack socket closed without sending {what}")
        data += chunk
    return bytes(data)
