"""slurmproto.munge against a private munged (the session fixture `munged`) and the real munge CLIs."""

from __future__ import annotations

import ctypes
import json
import math
import os
import pickle
import pwd
import socket as socketmod
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from slurmproto import munge
from slurmproto.errors import AuthError
from tests.support.munged import Munged
from tests.support.stuck_munged import StuckMunged

REPO = Path(__file__).resolve().parents[1]


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.fixture
def ctx(munged: Munged) -> Iterator[munge.MungeContext]:
    with munge.MungeContext(munged.socket) as c:
        yield c


@pytest.fixture
def count_frees(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record every pointer the module hands to free() (still freeing it)."""
    lib = munge._load()
    real_free = lib.free
    freed: list[int] = []

    def spy(ptr: object) -> None:
        value = ptr.value if isinstance(ptr, ctypes.c_void_p) else ptr
        assert isinstance(value, int) and value, f"free() called with {ptr!r}"
        freed.append(value)
        real_free(ptr)

    monkeypatch.setattr(lib, "free", spy)
    return freed


# --- without a daemon ------------------------------------------------------------------------------


def test_strerror_known_codes() -> None:
    assert munge.strerror(0) == "Success"
    assert munge.strerror(munge.EMUNGE_SOCKET) == "Socket communication error"
    assert munge.strerror(munge.EMUNGE_BAD_CRED) == "Invalid credential format"
    assert munge.strerror(munge.EMUNGE_CRED_INVALID) == "Invalid credential"
    assert munge.strerror(munge.EMUNGE_CRED_EXPIRED) == "Expired credential"
    assert munge.strerror(munge.EMUNGE_CRED_REWOUND) == "Rewound credential"
    assert munge.strerror(munge.EMUNGE_CRED_REPLAYED) == "Replayed credential"
    assert munge.strerror(munge.EMUNGE_CRED_UNAUTHORIZED) == "Unauthorized credential"
    assert munge.strerror(999) == "Unknown error"


def test_error_classes() -> None:
    assert sorted(munge.ERROR_CLASSES) == list(range(1, 19))
    for code, cls in munge.ERROR_CLASSES.items():
        assert cls.code == code and issubclass(cls, munge.MungeError)
        assert issubclass(cls, munge.CredDecode) == (code >= munge.EMUNGE_BAD_CRED)
    assert munge.ERROR_CLASSES[17] is munge.CredReplayed
    assert munge.ERROR_CLASSES[6] is munge.MungeSocketError
    assert issubclass(munge.MungeError, AuthError) and munge.MungeError.rc == 1007
    assert issubclass(munge.MungeUnavailable, munge.MungeError)
    # The code survives pickling, also for a code without a subclass.
    for exc in (munge.CredReplayed("Replayed credential"), munge.MungeError("Unknown error", 99)):
        copy = pickle.loads(pickle.dumps(exc))
        assert type(copy) is type(exc) and copy.code == exc.code and str(copy) == str(exc)


def test_missing_socket_fails_fast(tmp_path: Path) -> None:
    missing = tmp_path / "no.socket"
    start = time.monotonic()
    with pytest.raises(munge.MungeSocketError) as info:
        munge.encode(b"x", socket=missing)
    assert time.monotonic() - start < 0.5
    assert info.value.code == munge.EMUNGE_SOCKET
    assert str(info.value) == (
        f'Failed to access "{missing}": No such file or directory (Did you start munged?)'
    )
    with pytest.raises(munge.MungeSocketError):
        munge.decode(b"MUNGE:AAAA:", socket=missing)


def test_socket_path_that_is_not_a_socket(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    with pytest.raises(munge.MungeSocketError, match="Invalid file type for socket"):
        munge.encode(socket=plain)


def test_bad_arguments_are_rejected_before_munge() -> None:
    with pytest.raises(munge.MungeBadArg, match="NUL"):
        munge.MungeContext("/run/mu\0nge")
    with pytest.raises(munge.MungeBadArg, match="ttl"):
        munge.MungeContext(ttl=2**31)
    with pytest.raises(munge.MungeBadArg, match="uid_restriction"):
        munge.MungeContext(uid_restriction=-1)
    with pytest.raises(TypeError):
        munge.encode(3)  # type: ignore[arg-type]  # not bytes(3) == b"\0\0\0"


@pytest.mark.parametrize(
    ("credential", "why"),
    [
        (b"MUNGE:AAAA\0BBBB:", "NUL byte"),
        ("MUNGE:AAAA\0BBBB:", "NUL byte"),
        ("MUNGE:AAAA\u00e9:", "non-ASCII"),
        (b"MUNGE:AAAA\xff:", "non-ASCII"),
    ],
)
def test_nul_or_non_ascii_credential(tmp_path: Path, credential: bytes | str, why: str) -> None:
    # Checked before munge is asked (the socket does not even exist): ctypes would cut at the NUL.
    with munge.MungeContext(tmp_path / "unused.socket") as c, pytest.raises(munge.BadCredFormat) as info:
        c.decode(credential)
    assert info.value.code == munge.EMUNGE_BAD_CRED
    assert str(info.value).startswith("Invalid credential format: ") and why in str(info.value)


def test_close_is_idempotent_and_final(tmp_path: Path) -> None:
    c = munge.MungeContext(tmp_path / "unused.socket", ttl=10, uid_restriction=0)
    with c as entered:
        assert entered is c
    c.close()
    c.close()
    with pytest.raises(ValueError, match="closed"):
        c.encode()
    with pytest.raises(ValueError, match="closed"):
        c.decode(b"MUNGE:AAAA:")
    del c  # __del__ after close is a no-op


def test_unavailable_library(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(munge, "_lib", None)
    monkeypatch.setattr(munge, "_LIBRARY_NAMES", ("libmunge-not-here.so.2",))
    with pytest.raises(munge.MungeUnavailable) as info:
        munge.strerror(0)
    assert isinstance(info.value, munge.MungeError)
    assert "cannot be loaded" in str(info.value) and "libmunge2" in str(info.value)
    with pytest.raises(munge.MungeUnavailable):
        munge.MungeContext()


def test_import_is_cheap_and_lazy() -> None:
    code = (
        "import sys\n"
        "maps = lambda: open('/proc/self/maps').read()\n"
        "import slurmproto.munge as m\n"
        "assert 'libmunge' not in maps(), 'loaded at import'\n"
        "assert m.strerror(17) == 'Replayed credential'\n"
        "assert 'libmunge.so' in maps()\n"
        "print(sorted(n for n in ('ctypes.util', 'subprocess', 'threading') if n in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- with munged ------------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", [b"", b"p" * 33, b"\0bin\0ary\xff\0" * 7, bytes(range(256)) * 64])
def test_round_trip(ctx: munge.MungeContext, payload: bytes) -> None:
    cred = ctx.encode(payload)
    assert cred.startswith(b"MUNGE:") and cred.endswith(b":")
    assert cred.isascii() and b"\0" not in cred and b"\n" not in cred
    decoded = ctx.decode(cred)
    assert decoded == munge.Decoded(payload=payload, uid=os.geteuid(), gid=os.getegid())
    with pytest.raises(AttributeError):
        decoded.uid = 5  # type: ignore[misc]  # frozen


def test_module_functions_and_str_credential(munged: Munged) -> None:
    cred = munge.encode(bytearray(b"abc"), socket=str(munged.socket))  # type: ignore[arg-type]
    assert munge.decode(cred.decode(), socket=munged.socket) == munge.Decoded(b"abc", 0, 0)


def test_cli_munge_to_us(munged: Munged, ctx: munge.MungeContext) -> None:
    out = subprocess.run(
        ["munge", "-S", str(munged.socket), "-s", "from the CLI"], capture_output=True, check=True
    ).stdout
    assert out.endswith(b":\n")  # munge's armor tolerates the newline: passed as is
    assert ctx.decode(out) == munge.Decoded(b"from the CLI", 0, 0)


def test_us_to_cli_unmunge(munged: Munged, ctx: munge.MungeContext) -> None:
    payload = b"to the \0 CLI"
    proc = subprocess.run(
        ["unmunge", "-S", str(munged.socket), "-N", "-k", "status,uid,gid,length"],
        input=ctx.encode(payload), capture_output=True, check=True,
    )
    meta, _, body = proc.stdout.partition(b"\n\n")
    fields = dict(line.split(b":", 1) for line in meta.splitlines())
    assert {k: v.strip() for k, v in fields.items()} == {
        b"STATUS": b"0", b"UID": b"0", b"GID": b"0", b"LENGTH": str(len(payload)).encode(),
    }
    assert body == payload


def test_replay(ctx: munge.MungeContext, count_frees: list[int]) -> None:
    secret = b"replayed payload " * 64
    cred = ctx.encode(secret)
    assert len(count_frees) == 1  # the credential munge_encode allocated
    assert ctx.decode(cred).payload == secret
    assert len(count_frees) == 2  # the payload munge_decode allocated
    with pytest.raises(munge.CredReplayed) as info:
        ctx.decode(cred)
    # munge_decode still returned the payload: it was freed, and the exception does not carry it.
    assert len(count_frees) == 3
    assert str(info.value) == "Replayed credential" and info.value.code == munge.EMUNGE_CRED_REPLAYED
    assert info.value.args == ("Replayed credential",) and not hasattr(info.value, "payload")
    # Replays keep failing, and the payloads of many of them add up to no memory growth.
    for _ in range(200):
        with pytest.raises(munge.CredReplayed):
            ctx.decode(cred)
    before = rss_kib()
    for _ in range(5000):  # 5000 x 1 KiB: a leak of the payloads would show as 5+ MiB
        with pytest.raises(munge.CredReplayed):
            ctx.decode(cred)
    assert rss_kib() - before < 1024
    assert len(count_frees) == 3 + 5200


def test_garbage_credentials(ctx: munge.MungeContext, count_frees: list[int]) -> None:
    cases: list[tuple[bytes, type[munge.MungeError], str]] = [
        (b"garbage", munge.BadCredFormat, "Failed to match armor prefix"),
        (b"MUNGE:not base64!:", munge.BadCredFormat, "Failed to base64-decode credential"),
        (b"", munge.MungeBadArg, "No credential specified"),
    ]
    good = ctx.encode(b"payload")
    body = good[len(b"MUNGE:"):-1]
    mid = len(body) // 2
    tampered = b"MUNGE:" + body[:mid] + (b"B" if body[mid:mid + 1] == b"A" else b"A") + body[mid + 1:] + b":"
    cases.append((tampered, munge.CredInvalid, "Invalid credential"))
    for cred, cls, message in cases:
        with pytest.raises(cls) as info:
            ctx.decode(cred)
        assert type(info.value) is cls and str(info.value) == message, cred
    assert len(count_frees) == 1  # only the credential: munge returns no payload for these errors
    # The context still works after errors, and munge's message does not stick to it.
    assert ctx.decode(good).payload == b"payload"


def test_other_key_is_invalid(munged: Munged) -> None:
    with Munged() as other:
        cred = munge.encode(b"x", socket=other.socket)
    with pytest.raises(munge.CredInvalid, match=r"^Invalid credential$"):
        munge.decode(cred, socket=munged.socket)


def test_ttl_expired(munged: Munged, count_frees: list[int]) -> None:
    cred = munge.encode(b"short-lived", socket=munged.socket, ttl=1)
    encoded_by = math.floor(time.time())  # munged's encode time is at most this second
    # munged rejects once now > encode_time + ttl, in whole seconds: wait for the second after next.
    time.sleep(max(0.0, encoded_by + 2 - time.time()) + 0.02)
    with pytest.raises(munge.CredExpired) as info:
        munge.decode(cred, socket=munged.socket)
    assert str(info.value) == "Expired credential" and info.value.code == munge.EMUNGE_CRED_EXPIRED
    # Expiry is reported before replay: the failed decode did not count as a use.
    with pytest.raises(munge.CredExpired):
        munge.decode(cred, socket=munged.socket)
    # The credential, then the payload munge_decode returned with each CredExpired.
    assert len(count_frees) == 3


def test_ttl_is_carried(munged: Munged) -> None:
    for ttl, shown in ((7, b"7"), (-1, b"3600")):  # -1: munged's maximum (its default --max-ttl)
        cred = munge.encode(socket=munged.socket, ttl=ttl)
        out = subprocess.run(
            ["unmunge", "-S", str(munged.socket), "-N", "-k", "ttl"],
            input=cred, capture_output=True, check=True,
        ).stdout
        assert out.split(b":", 1)[1].strip() == shown


NOBODY_CODE = """
import json, sys
from slurmproto import munge
with munge.MungeContext(sys.argv[1]) as ctx:
    try:
        d = ctx.decode(sys.stdin.read())
        result = {"payload": d.payload.decode(), "uid": d.uid, "gid": d.gid}
    except munge.MungeError as e:
        result = {"error": type(e).__name__, "message": str(e)}
    result["own"] = ctx.encode(b"from nobody").decode()
print(json.dumps(result))
"""


def test_uid_restriction(munged: Munged) -> None:
    nobody = pwd.getpwnam("nobody")
    cred = munge.encode(b"for nobody only", socket=munged.socket, uid_restriction=nobody.pw_uid)
    # Root is not exempt: munged matches the decoding process's effective uid.
    with pytest.raises(munge.CredUnauthorized) as info:
        munge.decode(cred, socket=munged.socket)
    # munged's own detailed message (munge_ctx_strerror), not just munge_strerror's "Unauthorized credential".
    assert str(info.value) == "Unauthorized credential for client UID=0 GID=0"
    assert info.value.code == munge.EMUNGE_CRED_UNAUTHORIZED

    python = python_for(nobody)
    if python is not None:  # our binding, as nobody
        code = f"import sys; sys.path.insert(0, {str(REPO)!r})\n{NOBODY_CODE}"
        out = run_as(nobody, [python, "-I", "-c", code, str(munged.socket)], cred)
        result = json.loads(out)
    else:  # no Python that nobody may run (e.g. a venv under /root): the munge CLIs, as nobody
        result = cli_as(nobody, munged.socket, cred)
    # The refused decode by root did not consume the credential.
    assert (result["payload"], result["uid"], result["gid"]) == ("for nobody only", 0, 0)
    # And the other way: what nobody encoded says nobody.
    assert munge.decode(result["own"], socket=munged.socket) == munge.Decoded(
        b"from nobody", nobody.pw_uid, nobody.pw_gid
    )


def run_as(user: pwd.struct_passwd, argv: list[str], stdin: bytes = b"") -> bytes:
    """stdout of argv run as `user` (its own uid, gid and no supplementary groups)."""
    proc = subprocess.run(
        argv, input=stdin, capture_output=True, timeout=30, cwd="/",
        user=user.pw_uid, group=user.pw_gid, extra_groups=[], check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout


def python_for(user: pwd.struct_passwd) -> str | None:
    """An interpreter `user` can run: the test venv may live in root's 0700 home."""
    for python in (sys.executable, "/usr/bin/python3"):
        try:
            run_as(user, [python, "-I", "-c", "import ctypes, dataclasses"])
        except (OSError, AssertionError):
            continue
        return python
    return None


def cli_as(user: pwd.struct_passwd, sock: Path, cred: bytes) -> dict[str, str | int]:
    """What NOBODY_CODE reports, from unmunge and munge run as `user`."""
    out = run_as(user, ["unmunge", "-S", str(sock), "-N", "-k", "uid,gid"], cred)
    meta, _, payload = out.partition(b"\n\n")
    fields = {k.strip(): int(v) for k, v in (line.split(b":", 1) for line in meta.splitlines())}
    own = run_as(user, ["munge", "-S", str(sock), "-s", "from nobody"])
    return {"payload": payload.decode(), "uid": fields[b"UID"], "gid": fields[b"GID"], "own": own.decode()}


def test_connection_refused_is_a_socket_error(tmp_path: Path) -> None:
    # A socket nobody listens on (a dead munged): libmunge retries for ~2 s before giving up.
    path = tmp_path / "dead.socket"
    with socketmod.socket(socketmod.AF_UNIX) as s:
        s.bind(str(path))
    with pytest.raises(munge.MungeSocketError, match="Connection refused"):
        munge.encode(socket=path)


def test_threads_share_a_context(ctx: munge.MungeContext) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(200):
                payload = f"{n}:{i}".encode()
                assert ctx.decode(ctx.encode(payload)).payload == payload
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_no_leak(ctx: munge.MungeContext) -> None:
    payload = b"L" * 1024  # large enough that a leak of either buffer is obvious: >20 MiB per 20,000
    for _ in range(500):  # let Python's and malloc's pools settle first
        assert ctx.decode(ctx.encode(payload)).payload == payload
    before = rss_kib()
    for _ in range(20_000):
        ctx.decode(ctx.encode(payload))
    grown = rss_kib() - before
    assert grown < 2048, f"RSS grew by {grown} KiB over 20,000 encode+decode cycles"


def test_contexts_are_destroyed() -> None:
    # Contexts are malloc'ed by libmunge: creating and dropping many must not grow memory either.
    for _ in range(1000):
        munge.MungeContext("/nonexistent/munge.socket", ttl=5, uid_restriction=1)
    before = rss_kib()
    for _ in range(50_000):
        munge.MungeContext("/nonexistent/munge.socket" + "x" * 200, ttl=5, uid_restriction=1).close()
        munge.MungeContext("/nonexistent/munge.socket" + "x" * 200)  # freed by __del__
    assert rss_kib() - before < 2048


def test_deadline_bounds_a_stuck_munged(stuck_munged: StuckMunged) -> None:
    """libmunge retries a munged that accepts and never answers for ~10 s; `timeout` bounds each call."""
    from slurmproto.errors import Timeout

    c = munge.MungeContext(stuck_munged.path)
    # The second call waits behind the first (still inside libmunge): bounded all the same.
    for call in (lambda: c.encode(b"x", timeout=0.5), lambda: c.decode(b"MUNGE:AAAA:", timeout=0.5)):
        started = time.monotonic()
        with pytest.raises(munge.MungeDeadline, match=r"\(socket .*stuck.socket\) did not answer within 0.5 s") \
                as info:
            call()
        assert time.monotonic() - started < 1.0
    assert isinstance(info.value, Timeout) and (info.value.code, info.value.rc) == (munge.EMUNGE_TIMEOUT, 5004)
    started = time.monotonic()
    c.close()  # does not wait for the abandoned call
    assert time.monotonic() - started < 0.1
    with pytest.raises(ValueError, match="closed"):
        c.encode()


def test_close_during_a_call_destroys_when_it_returns(tmp_path: Path) -> None:
    c = munge.MungeContext(tmp_path / "unused.socket")
    c._lock.acquire()  # as if another thread were inside libmunge with the contexts
    c.close()  # returns at once
    assert c._lib is not None and c._enc is not None
    c._release()  # that call returns
    assert c._lib is None and c._enc is None and c._dec is None


def test_timeout_zero_does_not_call_munge(tmp_path: Path) -> None:
    with munge.MungeContext(tmp_path / "unused.socket") as c, pytest.raises(munge.MungeDeadline):
        c.encode(b"x", timeout=0)
