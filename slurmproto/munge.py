"""A small ctypes binding to libmunge: create and validate MUNGE credentials without leaking memory.

Written from munge.h and munge(3)/munge_ctx(3) (MUNGE 0.5.x).  libmunge talks to the local munged over its
Unix socket; this module only wraps the library calls and turns munge_err_t codes into exceptions.

It sits on the per-login path of pam_slurm_adopt, so importing it is cheap: libmunge is loaded on first
use (not at import), and only ctypes/os/typing/_thread are imported.
"""

from __future__ import annotations

import ctypes
import os

# `_thread`, not `threading`: that import would cost more than this whole module.
from _thread import allocate_lock
from typing import TYPE_CHECKING, NamedTuple, TypeVar

from slurmproto.errors import AuthError, LocalTimeout

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Self

T = TypeVar("T")
R = TypeVar("R")

__all__ = [
    "ERROR_CLASSES", "BadCredCipher", "BadCredFormat", "BadCredMac", "BadCredRealm", "BadCredVersion",
    "BadCredZip", "CredDecode", "CredExpired", "CredInvalid", "CredReplayed", "CredRewound",
    "CredUnauthorized", "Decoded", "MungeBadArg", "MungeBadLength", "MungeContext", "MungeDeadline", "MungeError",
    "MungeInternalError", "MungeNoMemory", "MungeOverflow", "MungeSocketError", "MungeTimeout",
    "MungeUnavailable", "decode", "encode", "strerror",
]

# munge_err_t (munge.h).
EMUNGE_SUCCESS = 0
EMUNGE_SNAFU = 1
EMUNGE_BAD_ARG = 2
EMUNGE_BAD_LENGTH = 3
EMUNGE_OVERFLOW = 4
EMUNGE_NO_MEMORY = 5
EMUNGE_SOCKET = 6
EMUNGE_TIMEOUT = 7
EMUNGE_BAD_CRED = 8
EMUNGE_BAD_VERSION = 9
EMUNGE_BAD_CIPHER = 10
EMUNGE_BAD_MAC = 11
EMUNGE_BAD_ZIP = 12
EMUNGE_BAD_REALM = 13
EMUNGE_CRED_INVALID = 14
EMUNGE_CRED_EXPIRED = 15
EMUNGE_CRED_REWOUND = 16
EMUNGE_CRED_REPLAYED = 17
EMUNGE_CRED_UNAUTHORIZED = 18

# munge_opt_t values this module sets (munge.h).
MUNGE_OPT_TTL = 4
MUNGE_OPT_SOCKET = 8
MUNGE_OPT_UID_RESTRICTION = 9

_LIBRARY_NAMES = ("libmunge.so.2", "libmunge.so")
_INT_MAX = 2**31 - 1
_UID_MAX = 2**32 - 1


# --- errors ------------------------------------------------------------------------------------------


class MungeError(AuthError):
    """A libmunge call failed; `code` is its munge_err_t, str() is munge's own message."""

    code: int = EMUNGE_SNAFU

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    def __reduce__(self) -> tuple[type[MungeError], tuple[str, int]]:
        # Keep `code` across pickling (the default would rebuild from args only).
        return (type(self), (str(self), self.code))


class MungeUnavailable(MungeError):
    """libmunge.so.2 cannot be loaded (MUNGE's client library is not installed); code is EMUNGE_SNAFU."""


class MungeInternalError(MungeError):
    code = EMUNGE_SNAFU


class MungeBadArg(MungeError):
    code = EMUNGE_BAD_ARG


class MungeBadLength(MungeError):
    code = EMUNGE_BAD_LENGTH


class MungeOverflow(MungeError):
    code = EMUNGE_OVERFLOW


class MungeNoMemory(MungeError):
    code = EMUNGE_NO_MEMORY


class MungeSocketError(MungeError):
    """munged cannot be reached on its socket (not running, wrong path, no permission)."""

    code = EMUNGE_SOCKET


class MungeTimeout(MungeError):
    code = EMUNGE_TIMEOUT


class MungeDeadline(MungeTimeout, LocalTimeout):
    """munged did not answer within the caller's deadline (libmunge itself retries for about 10 s).

    Both a MungeError (this node cannot sign or check credentials) and a Timeout.
    """

    rc = 5004


class CredDecode(MungeError):
    """Base of the errors that reject the credential itself (codes 8 to 18)."""

    code = EMUNGE_BAD_CRED


class BadCredFormat(CredDecode):
    """Not a credential: no MUNGE armor, bad base64, a NUL or non-ASCII character..."""

    code = EMUNGE_BAD_CRED


class BadCredVersion(CredDecode):
    code = EMUNGE_BAD_VERSION


class BadCredCipher(CredDecode):
    code = EMUNGE_BAD_CIPHER


class BadCredMac(CredDecode):
    code = EMUNGE_BAD_MAC


class BadCredZip(CredDecode):
    code = EMUNGE_BAD_ZIP


class BadCredRealm(CredDecode):
    code = EMUNGE_BAD_REALM


class CredInvalid(CredDecode):
    """Does not verify: encoded with another key, or altered."""

    code = EMUNGE_CRED_INVALID


class CredExpired(CredDecode):
    code = EMUNGE_CRED_EXPIRED


class CredRewound(CredDecode):
    """Encoded in the future (clock skew between hosts)."""

    code = EMUNGE_CRED_REWOUND


class CredReplayed(CredDecode):
    """Already decoded once on this host."""

    code = EMUNGE_CRED_REPLAYED


class CredUnauthorized(CredDecode):
    """Restricted to another uid/gid than the decoding process's."""

    code = EMUNGE_CRED_UNAUTHORIZED


ERROR_CLASSES: dict[int, type[MungeError]] = {
    cls.code: cls
    for cls in (
        MungeInternalError, MungeBadArg, MungeBadLength, MungeOverflow, MungeNoMemory, MungeSocketError,
        MungeTimeout, BadCredFormat, BadCredVersion, BadCredCipher, BadCredMac, BadCredZip, BadCredRealm,
        CredInvalid, CredExpired, CredRewound, CredReplayed, CredUnauthorized,
    )
}
"""munge_err_t -> exception class; codes not listed raise plain MungeError."""


# --- the library ---------------------------------------------------------------------------------------


class _Lib:
    """libmunge's functions with their C signatures, and libc's free()."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        c_int, c_void_p, c_char_p = ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p
        uid_t = gid_t = ctypes.c_uint32  # Linux

        # munge_err_t munge_encode(char **cred, munge_ctx_t ctx, const void *buf, int len);
        # The credential comes back as a malloc'ed pointer (c_void_p, not c_char_p) so it can be freed.
        self.encode = lib.munge_encode
        self.encode.argtypes = [ctypes.POINTER(c_void_p), c_void_p, c_char_p, c_int]
        self.encode.restype = c_int
        # munge_err_t munge_decode(const char *cred, munge_ctx_t ctx, void **buf, int *len,
        #                          uid_t *uid, gid_t *gid);
        self.decode = lib.munge_decode
        self.decode.argtypes = [
            c_char_p, c_void_p, ctypes.POINTER(c_void_p), ctypes.POINTER(c_int),
            ctypes.POINTER(uid_t), ctypes.POINTER(gid_t),
        ]
        self.decode.restype = c_int
        # Both strerror functions return static/ctx-owned strings: c_char_p copies them, nothing to free.
        self.strerror = lib.munge_strerror
        self.strerror.argtypes = [c_int]
        self.strerror.restype = c_char_p
        self.ctx_strerror = lib.munge_ctx_strerror
        self.ctx_strerror.argtypes = [c_void_p]
        self.ctx_strerror.restype = c_char_p
        # munge_ctx_t is an opaque pointer: c_void_p (an int in Python) so it is never dereferenced.
        self.ctx_create = lib.munge_ctx_create
        self.ctx_create.argtypes = []
        self.ctx_create.restype = c_void_p
        self.ctx_destroy = lib.munge_ctx_destroy
        self.ctx_destroy.argtypes = [c_void_p]
        self.ctx_destroy.restype = None
        # munge_err_t munge_ctx_set(munge_ctx_t ctx, int opt, ...) is variadic and its third argument's
        # type depends on opt, so one prototype per type.  ctypes cannot declare a variadic call, but
        # on x86-64 and aarch64 Linux int/pointer varargs travel exactly like fixed arguments.
        # libmunge copies the socket string (strdup), so the bytes need not outlive the call.
        self.ctx_set_str = ctypes.CFUNCTYPE(c_int, c_void_p, c_int, c_char_p)(("munge_ctx_set", lib))
        self.ctx_set_int = ctypes.CFUNCTYPE(c_int, c_void_p, c_int, c_int)(("munge_ctx_set", lib))
        self.ctx_set_uid = ctypes.CFUNCTYPE(c_int, c_void_p, c_int, uid_t)(("munge_ctx_set", lib))
        # Memory returned by munge_encode/munge_decode is malloc'ed: release it with the process's free().
        self.free = ctypes.CDLL(None).free
        self.free.argtypes = [c_void_p]
        self.free.restype = None


_lib: _Lib | None = None


def _load() -> _Lib:
    """libmunge, loaded and typed on first use (dlopen by soname: no find_library, no subprocess)."""
    global _lib
    if _lib is not None:
        return _lib
    errors = []
    for name in _LIBRARY_NAMES:
        try:
            loaded = _Lib(ctypes.CDLL(name))
        except (OSError, AttributeError) as e:  # AttributeError: a library without munge's symbols
            errors.append(str(e))
            continue
        # Publish only a fully typed object: another thread may be loading at the same time.
        _lib = loaded
        return loaded
    raise MungeUnavailable(
        f"{_LIBRARY_NAMES[0]} cannot be loaded ({'; '.join(errors)}): MUNGE's client library is not "
        "installed (Debian/Ubuntu: apt-get install libmunge2; RHEL/Fedora: dnf install munge-libs)"
    )


def strerror(code: int) -> str:
    """munge_strerror(code): munge's description of an error code ("Unknown error" if none)."""
    message: bytes = _load().strerror(code)
    return message.decode()


def _error(lib: _Lib, code: int, ctx: int | None) -> MungeError:
    """The exception for `code`, with the context's detailed message when munge set one."""
    detail = lib.ctx_strerror(ctx) if ctx else None
    message = (detail or lib.strerror(code)).decode(errors="replace")
    return ERROR_CLASSES.get(code, MungeError)(message, code)


def _local_error(lib: _Lib, code: int, why: str) -> MungeError:
    """An error found before calling munge: munge's text for `code`, then what was wrong."""
    return ERROR_CLASSES.get(code, MungeError)(f"{lib.strerror(code).decode()}: {why}", code)


# --- the API --------------------------------------------------------------------------------------------


class Decoded(NamedTuple):
    """What a valid credential says: its payload and who encoded it."""

    payload: bytes
    uid: int
    gid: int


class MungeContext:
    """A munge context pair: one for encoding (carries the options), one for decoding.

    munge_decode overwrites its context with the credential's settings, so munge.h advises separate
    contexts.  Calls on one MungeContext are serialized by a lock (a context must not be used by two
    threads at once, and ctypes releases the GIL during the call); use one per thread for parallelism.
    encode/decode take a `timeout`: libmunge has none and retries a munged that never answers for ~10 s,
    so the call then runs in a daemon thread and is abandoned at the deadline (MungeDeadline); close()
    never waits for such a call, the contexts are destroyed when it returns.
    """

    plugin_id = 101
    """auth/munge: the auth section's plugin id (slurmproto.signers.Signer)."""
    _lib: _Lib | None = None
    _enc: int | None = None
    _dec: int | None = None
    _socket: bytes | None = None
    _close_pending = False

    def __init__(
        self,
        socket: str | os.PathLike[str] | os.PathLike[bytes] | bytes | None = None,
        *,
        ttl: int | None = None,
        uid_restriction: int | None = None,
    ) -> None:
        """`socket`: munged's socket (default: libmunge's built-in path); `ttl` in seconds (0: munged's
        default, -1: its maximum); `uid_restriction`: the only uid allowed to decode what this encodes."""
        lib = _load()
        self._lock = allocate_lock()
        path = os.fsencode(socket) if socket is not None else None
        if path is not None and b"\0" in path:
            raise _local_error(lib, EMUNGE_BAD_ARG, f"socket path contains a NUL byte: {path!r}")
        self._socket = path
        if ttl is not None and not -1 <= ttl <= _INT_MAX:
            raise _local_error(lib, EMUNGE_BAD_ARG, f"ttl {ttl} is not -1, 0 or a positive C int")
        if uid_restriction is not None and not 0 <= uid_restriction <= _UID_MAX:
            raise _local_error(lib, EMUNGE_BAD_ARG, f"uid_restriction {uid_restriction} is not a uid_t")
        self._lib = lib  # kept on self so close() works from __del__ during interpreter shutdown
        self._enc = lib.ctx_create() or None
        self._dec = lib.ctx_create() or None
        try:
            if self._enc is None or self._dec is None:
                raise _local_error(lib, EMUNGE_NO_MEMORY, "munge_ctx_create failed")
            if path is not None:
                self._set(lib.ctx_set_str(self._enc, MUNGE_OPT_SOCKET, path), self._enc)
                self._set(lib.ctx_set_str(self._dec, MUNGE_OPT_SOCKET, path), self._dec)
            if ttl is not None:
                self._set(lib.ctx_set_int(self._enc, MUNGE_OPT_TTL, ttl), self._enc)
            if uid_restriction is not None:
                self._set(lib.ctx_set_uid(self._enc, MUNGE_OPT_UID_RESTRICTION, uid_restriction), self._enc)
        except BaseException:
            self.close()
            raise

    def _set(self, code: int, ctx: int) -> None:
        """Check a munge_ctx_set return code."""
        if code != EMUNGE_SUCCESS:
            assert self._lib is not None
            raise _error(self._lib, code, ctx)

    def encode(self, payload: bytes = b"", *, timeout: float | None = None) -> bytes:
        """A new credential carrying `payload`: its ASCII text (b"MUNGE:...:"), without the NUL.

        With `timeout` (seconds), MungeDeadline when munged has not answered by then.
        """
        if not isinstance(payload, bytes):
            payload = bytes(memoryview(payload))  # bytearray/memoryview; memoryview() refuses an int
        if timeout is not None:
            return self._within(timeout, self._encode, payload)
        return self._locked(self._encode, payload)

    def _encode(self, payload: bytes) -> bytes:
        lib, ctx = self._open(self._enc)
        if len(payload) > _INT_MAX:  # munge_encode takes an int length
            raise _local_error(lib, EMUNGE_BAD_LENGTH, f"payload of {len(payload)} bytes")
        cred = ctypes.c_void_p()
        try:
            code = lib.encode(ctypes.byref(cred), ctx, payload or None, len(payload))
            if code != EMUNGE_SUCCESS:
                raise _error(lib, code, ctx)
            if not cred.value:  # cannot happen with a sane libmunge; never return an empty credential
                raise _local_error(lib, EMUNGE_SNAFU, "munge_encode returned no credential")
            return ctypes.string_at(cred.value)
        finally:
            if cred.value:  # munge sets it to NULL on error; free() would accept NULL anyway
                lib.free(cred)

    def decode(self, credential: bytes | str, *, timeout: float | None = None) -> Decoded:
        """Validate `credential`; raises the MungeError subclass for munge's verdict (CredReplayed...).

        For expired/rewound/replayed credentials munge still returns payload, uid and gid: they are
        freed and not exposed, since they come from a credential that must not be trusted.
        With `timeout` (seconds), MungeDeadline when munged has not answered by then.
        """
        if timeout is not None:
            return self._within(timeout, self._decode, credential)
        return self._locked(self._decode, credential)

    def _decode(self, credential: bytes | str) -> Decoded:
        lib, ctx = self._open(self._dec)
        cred = _credential_bytes(lib, credential)
        buf = ctypes.c_void_p()
        length = ctypes.c_int()
        uid = ctypes.c_uint32()
        gid = ctypes.c_uint32()
        try:
            code = lib.decode(
                cred, ctx, ctypes.byref(buf), ctypes.byref(length), ctypes.byref(uid), ctypes.byref(gid)
            )
            if code != EMUNGE_SUCCESS:
                raise _error(lib, code, ctx)
            payload = ctypes.string_at(buf.value, length.value) if buf.value else b""
            return Decoded(payload, uid.value, gid.value)
        finally:
            # Also on error: munge allocates the payload for expired/rewound/replayed credentials.
            if buf.value:
                lib.free(buf)

    def _within(self, timeout: float, call: Callable[[T], R], arg: T) -> R:
        from slurmproto.deadline import call_within

        where = f"socket {os.fsdecode(self._socket)}" if self._socket else "default socket"
        result: R = call_within(timeout, lambda: MungeDeadline(
            f"munged ({where}) did not answer within {max(timeout, 0):g} s", EMUNGE_TIMEOUT),
            self._locked, call, arg)
        return result

    def _locked(self, call: Callable[[T], R], arg: T) -> R:
        """call(arg) holding the lock: a context must not be used by two threads at once."""
        if self._close_pending:  # closed while a call is still inside libmunge: do not queue behind it
            raise ValueError("MungeContext is closed")
        self._lock.acquire()
        try:
            return call(arg)
        finally:
            self._release()

    def _open(self, ctx: int | None) -> tuple[_Lib, int]:
        if self._lib is None or ctx is None or self._close_pending:
            raise ValueError("MungeContext is closed")
        return self._lib, ctx

    def _release(self) -> None:
        """Leave the lock; first destroy the contexts if close() was called meanwhile."""
        try:
            if self._close_pending:
                self._destroy()
        finally:
            self._lock.release()

    @property
    def description(self) -> str:
        where = self._socket.decode(errors="replace") if self._socket else "libmunge's default socket"
        return f"auth/munge, munged at {where}"

    def close(self) -> None:
        """Destroy the munge contexts (idempotent). Never waits: while another thread is inside
        libmunge with them (e.g. a call abandoned at its deadline), they are destroyed when it returns."""
        if self._lib is None:
            return
        if not self._lock.acquire(blocking=False):
            self._close_pending = True
            if not self._lock.acquire(blocking=False):
                return  # the call in progress sees _close_pending and destroys them
        self._close_pending = True
        self._release()

    def _destroy(self) -> None:
        lib = self._lib
        if lib is None:
            return
        for ctx in (self._enc, self._dec):
            if ctx:
                lib.ctx_destroy(ctx)
        self._enc = self._dec = None
        self._lib = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


def _credential_bytes(lib: _Lib, credential: bytes | str) -> bytes:
    """The credential as the NUL-terminated ASCII that munge_decode reads, or BadCredFormat.

    ctypes would silently cut a string at an embedded NUL, so munge would judge only a prefix.
    """
    if isinstance(credential, str):
        if not credential.isascii():
            raise _local_error(lib, EMUNGE_BAD_CRED, "credential contains non-ASCII characters")
        raw = credential.encode("ascii")
    else:
        raw = credential if isinstance(credential, bytes) else bytes(memoryview(credential))
        if not raw.isascii():
            raise _local_error(lib, EMUNGE_BAD_CRED, "credential contains non-ASCII bytes")
    if b"\0" in raw:
        raise _local_error(lib, EMUNGE_BAD_CRED, "credential contains a NUL byte")
    return raw


def encode(
    payload: bytes = b"",
    *,
    socket: str | os.PathLike[str] | os.PathLike[bytes] | bytes | None = None,
    ttl: int | None = None,
    uid_restriction: int | None = None,
) -> bytes:
    """One credential from a short-lived context (see MungeContext for the arguments)."""
    with MungeContext(socket, ttl=ttl, uid_restriction=uid_restriction) as ctx:
        return ctx.encode(payload)


def decode(
    credential: bytes | str, *, socket: str | os.PathLike[str] | os.PathLike[bytes] | bytes | None = None
) -> Decoded:
    """Validate one credential with a short-lived context (see MungeContext.decode)."""
    with MungeContext(socket) as ctx:
        return ctx.decode(credential)
