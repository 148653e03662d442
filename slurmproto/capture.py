"""`slurm-callerid decode`: frames from captures (hex, raw or JSON) printed as JSON: header, auth, credential
check (MUNGE through munged; auth/slurm tokens' header, claims, signature and body hash), body. The decoder
itself is slurmproto.codec."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import string
import sys
import time
from typing import TYPE_CHECKING, Any

from slurmproto.auth import check_payload
from slurmproto.codec import Frame, FrameOptions, decode_stream
from slurmproto.conf import ConfError
from slurmproto.constants import AF_INET, AF_INET6, AuthPlugin, MsgType
from slurmproto.errors import InputError, KeyFileError, SlurmError
from slurmproto.messages import NetworkCallerIdRequest
from slurmproto.settings import PayloadChecks
from slurmproto.versions import name_of

if TYPE_CHECKING:
    from slurmproto.slurmauth import KeyRing

HEX_CHARS = set(string.hexdigits + string.whitespace + ":")
MAX_INPUT = 64 * 1024 * 1024
"""A capture is a few KiB; refuse to read more than this (e.g. /dev/zero)."""


def read_frames_input(data: bytes, form: str | None = None) -> list[bytes]:
    """Byte strings to decode: from a JSON capture (every "*_hex" list), hex text, or raw bytes.

    InputError when the input is none of these.
    """
    try:
        return _frames_input(data, form)
    except RecursionError:
        raise InputError("input is JSON nested too deeply to read") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise InputError(f"input is not hex, raw frames or a JSON capture: {exc}") from None


def _frames_input(data: bytes, form: str | None) -> list[bytes]:
    text = data.lstrip()
    if form is None and text[:1] in (b"{", b"["):
        return [bytes.fromhex(h) for h in _hex_strings(json.loads(data))]
    if form == "hex" or (form is None and data and set(data.decode("latin-1")) <= HEX_CHARS):
        cleaned = "".join(data.decode("ascii").split()).replace(":", "")
        if cleaned.startswith(("0x", "0X")):
            cleaned = cleaned[2:]
        return [bytes.fromhex(cleaned)]
    return [data]


def _hex_strings(root: Any) -> list[str]:
    """The strings of every list held under a key ending in "_hex", in document order (no recursion)."""
    found: list[str] = []
    stack: list[tuple[Any, str]] = [(root, "")]
    while stack:
        node, key = stack.pop()
        if isinstance(node, dict):
            stack.extend(reversed([(v, k) for k, v in node.items()]))
        elif isinstance(node, list):
            if key.endswith("_hex") and all(isinstance(x, str) for x in node):
                found.extend(node)
            else:
                stack.extend(reversed([(item, key) for item in node]))
    return found


def read_input(path: str) -> bytes:
    """The bytes of `path` ("-": stdin), at most MAX_INPUT of them; InputError saying why not."""
    name = "stdin" if path == "-" else path
    try:
        if path == "-":
            data = sys.stdin.buffer.read(MAX_INPUT + 1)
        else:
            with open(path, "rb") as handle:
                data = handle.read(MAX_INPUT + 1)
    except OSError as exc:
        raise InputError(f"cannot read {name}: {exc.strerror or exc}") from None
    if len(data) > MAX_INPUT:
        raise InputError(f"{name} is larger than {MAX_INPUT // (1024 * 1024)} MiB: not a capture of callerid frames")
    return data


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _address(family: int, packed: bytes) -> str | None:
    """The text of an address field, or None when its family is unknown or its bytes too few."""
    from slurmproto.addresses import unpack

    needed = {AF_INET: 4, AF_INET6: 16}.get(family)
    return unpack(family, packed) if needed and len(packed) >= needed else None


def frame_json(frame: Frame, munge: Any = None, keys: KeyRing | None = None) -> dict[str, Any]:
    """A decoded frame as JSON-ready data. With a MungeContext, a MUNGE credential is checked too; with
    `keys`, an auth/slurm token's signature."""
    out = head_json(frame, munge, keys)
    body = _plain(frame.message)
    if isinstance(frame.message, NetworkCallerIdRequest):
        body["source"] = str(frame.message.source)
        body["destination"] = str(frame.message.destination)
    out["body"] = body
    out["body_hex"] = frame.body.hex()
    return out


def head_json(frame: Frame, munge: Any = None, keys: KeyRing | None = None) -> dict[str, Any]:
    """frame_json without the body: all a frame of a message type without a schema here shows
    (`frame.message` is not read)."""
    header = frame.header
    try:
        type_name = MsgType(header.msg_type).name
    except ValueError:
        type_name = str(header.msg_type)
    head = _plain(header)
    head["msg_type_name"] = type_name
    head["version_name"] = name_of(header.version)
    head["orig_addr"]["address"] = _address(header.orig_addr.family, header.orig_addr.address)
    out: dict[str, Any] = {"size": frame.size, "header": head}
    if frame.auth is not None:
        cred = frame.auth.credential or ""
        out["auth"] = {"plugin_id": frame.auth.plugin_id, "plugin": frame.auth.plugin,
                       "credential_length": len(cred) + 1, "auth_length": frame.auth_length}
        if frame.auth.plugin_id == AuthPlugin.AUTH_SLURM:
            out["token"] = token_json(cred, frame, keys)
        elif munge is not None:
            out["munge"] = _check_credential(munge, cred, frame)
    else:
        out["auth"] = None
    return out


def token_json(text: str, frame: Frame, keys: KeyRing | None) -> dict[str, Any]:
    """An auth/slurm token's header and claims, whether its signature verifies with `keys` (a capture's
    token is usually expired: that is said, not held against it) and whether its payload matches the body."""
    from slurmproto import slurmauth

    try:
        token = slurmauth.parse(text)
    except SlurmError as exc:
        return {"error": str(exc), "error_type": type(exc).__name__}
    out: dict[str, Any] = {"header": token.header, "claims": token.claims}
    if keys is None:
        out["signature"] = "not checked: no key (--key PATH, or run where slurm.key is readable)"
    else:
        try:
            slurmauth.check_signature(token, keys)
        except SlurmError as exc:
            out.update(signature=str(exc), signature_ok=False)
        else:
            out.update(signature=f"verifies with {keys.source}", signature_ok=True)
    exp = token.claims.get("exp")
    out["expired"] = not isinstance(exp, int) or exp < time.time()
    try:
        kind = check_payload(token.checked_claims().payload, frame.body, frame.header.msg_type)
    except SlurmError as exc:
        out.update(hash=str(exc), hash_ok=False)
    else:
        out.update(hash=f"{kind.name if kind else 'empty payload'}: matches the body", hash_ok=True)
    return out


def open_keys(args: argparse.Namespace) -> KeyRing | None:
    """auth/slurm's keys for `decode`: --key PATH (slurm.key or slurm.jwks), else the local key when this
    process can read it, else none (signatures are then not checked)."""
    from slurmproto.authkeys import jwks_keyring, load_keyring, read_key_file

    path = getattr(args, "key", None)
    if path:
        if path.endswith(".jwks"):
            return jwks_keyring(read_key_file(path), path)
        return load_keyring(path)
    from slurmproto.cli import load_conf
    from slurmproto.settings import Settings
    from slurmproto.versions import NEWEST

    try:
        settings = Settings.from_conf(load_conf(args.conf, lambda text: None), env=os.environ)
        return settings.auth.readable_keys(NEWEST)
    except SlurmError:
        return None


def _check_credential(munge: Any, credential: str, frame: Frame) -> dict[str, Any]:
    try:
        decoded = munge.decode(credential)
    except SlurmError as exc:
        return {"error": str(exc), "error_type": type(exc).__name__}
    result: dict[str, Any] = {"uid": decoded.uid, "gid": decoded.gid, "payload_hex": decoded.payload.hex()}
    try:
        checks = munge.checks
        kind = check_payload(decoded.payload, frame.body, frame.header.msg_type,
                             block_null=checks.block_null_hash, block_zero=checks.block_zero_hash)
        result["hash"] = f"{kind.name if kind else 'empty payload'}: matches the body"
        result["hash_ok"] = True
    except SlurmError as exc:
        result["hash"] = str(exc)
        result["hash_ok"] = False
    return result


class BoundedMunge:
    """Credential checks for `decode`: all within one deadline, or the reason none can be made."""

    def __init__(self, context: Any, error: SlurmError | None, deadline: float, checks: PayloadChecks) -> None:
        self.context, self.error, self.deadline = context, error, deadline
        self.checks = checks
        """slurm.conf's CommunicationParameters for the payload (block_null_hash, block_zero_hash)."""
        self.local_failure: SlurmError | None = error
        """The first failure of this host's munge (not of a credential): reported once on stderr."""

    def decode(self, credential: str) -> Any:
        from slurmproto.munge import CredDecode

        if self.error is not None:
            raise self.error
        try:
            return self.context.decode(credential, timeout=self.deadline - time.monotonic())
        except SlurmError as exc:
            if not isinstance(exc, CredDecode) and self.local_failure is None:
                self.local_failure = exc
            raise

    def close(self) -> None:
        if self.context is not None:
            self.context.close()


def open_munge(args: argparse.Namespace) -> BoundedMunge | None:
    """munged as a query finds it: --munge-socket, then slurm.conf's AuthInfo socket=, then munge's default.

    A missing libmunge is not fatal: every credential then says why it was not checked.
    """
    if args.no_munge:
        return None
    from slurmproto.cli import load_conf
    from slurmproto.munge import MungeContext, MungeError
    from slurmproto.settings import Settings

    # slurm.conf as a query reads it: its socket unless --munge-socket names one, and its payload checks.
    settings = Settings.from_conf(load_conf(args.conf, lambda text: None), munge_socket=args.munge_socket)
    deadline = time.monotonic() + args.timeout
    try:
        return BoundedMunge(MungeContext(settings.munge_socket), None, deadline, settings.checks)
    except MungeError as exc:
        return BoundedMunge(None, exc, deadline, settings.checks)


def run(args: argparse.Namespace) -> int:
    try:
        blobs = read_frames_input(read_input(args.file), "hex" if args.hex else "raw" if args.raw else None)
        munge = open_munge(args)
        keys = open_keys(args)
    except (InputError, ConfError, KeyFileError) as exc:
        print(f"slurm-callerid decode: {exc}", file=sys.stderr)
        return 1
    options = FrameOptions(nul_check=not args.lenient, exact_body_length=not args.lenient)
    results: list[dict[str, Any]] = []
    failed = False
    try:
        for blob in blobs:
            try:
                results.extend(frame_json(frame, munge, keys) for frame in decode_stream(blob, options))
            except SlurmError as exc:
                failed = True
                results.append({"error": str(exc), "error_type": type(exc).__name__, "rc": exc.rc,
                                "input_hex": blob[:64].hex()})
    finally:
        if munge is not None:
            munge.close()
    if not results:
        print("slurm-callerid decode: no frames in the input", file=sys.stderr)
        return 1
    print(json.dumps(results[0] if len(results) == 1 else results, indent=2))
    if munge is not None and munge.local_failure is not None:
        print(f"slurm-callerid decode: credentials not checked: munge: {munge.local_failure}", file=sys.stderr)
        return 1
    return 1 if failed else 0
