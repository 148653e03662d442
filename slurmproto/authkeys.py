"""auth/slurm's keys on disk: slurm.key (the raw bytes are the HS256 key) or slurm.jwks (a JSON key set).

Both live beside slurm.conf ($SLURM_SACK_KEY and $SLURM_SACK_JWKS name them instead, when the caller
passes an environment: the hook never does). A slurm.jwks that exists wins over slurm.key (24.05+: the
release row's auth_slurm.jwks). As a daemon does, a key file that others may read, write or execute is
refused; so are non-regular files and files over MAX_KEY_FILE bytes. A slurm.jwks entry needs kid
(unique), kty "oct", alg "HS256" and k (base64url, at least 16 bytes), may have use "default" (once) and
exp; the default key is the "default" one, else the first.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import stat
from typing import Any

from slurmproto.confsyntax import read_at_most
from slurmproto.errors import KeyFileError
from slurmproto.signers import key_files as key_files
from slurmproto.slurmauth import Key, KeyRing

MAX_KEY_FILE = 1 << 20
MIN_JWKS_KEY = 16


def load_keyring(key_path: str, jwks_path: str | None = None) -> KeyRing:
    """The node's keys: slurm.jwks when `jwks_path` is given and exists, else slurm.key. KeyFileError
    when the file is missing, unreadable by us, insecure or malformed."""
    if jwks_path is not None and os.path.lexists(jwks_path):
        return jwks_keyring(read_key_file(jwks_path), jwks_path)
    secret = read_key_file(key_path)
    if not secret:
        raise KeyFileError(f"{key_path}: the auth/slurm key is empty")
    return KeyRing(Key(secret), {}, key_path)


def read_key_file(path: str) -> bytes:
    """A key file's bytes, refused like auth/slurm refuses it (mode with any "other" bit: insecure)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read the auth/slurm key: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"{path}: the auth/slurm key is not a regular file")
        if info.st_mode & stat.S_IRWXO:
            raise KeyFileError(f"{path}: the auth/slurm key file is insecure (mode 0{info.st_mode & 0o777:o}: "
                               "others may use it); Slurm's daemons refuse to start with it")
        data = read_at_most(fd, MAX_KEY_FILE + 1) if info.st_size <= MAX_KEY_FILE else b""
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read the auth/slurm key: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if info.st_size > MAX_KEY_FILE or len(data) > MAX_KEY_FILE:
        raise KeyFileError(f"{path}: larger than {MAX_KEY_FILE} bytes, not an auth/slurm key file")
    return data


def jwks_keyring(data: bytes, source: str) -> KeyRing:
    """The keys of a slurm.jwks file's contents."""
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        raise KeyFileError(f"{source}: not JSON") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise KeyFileError(f"{source}: no \"keys\" list")
    keys: dict[str, Key] = {}
    default: Key | None = None
    for index, entry in enumerate(entries):
        key, is_default = _jwk(entry, f"{source}: key {index + 1}")
        if key.kid in keys:
            raise KeyFileError(f"{source}: key {index + 1}: kid {key.kid!r} is not unique")
        keys[str(key.kid)] = key
        if is_default:
            if default is not None:
                raise KeyFileError(f"{source}: more than one key has \"use\": \"default\"")
            default = key
    return KeyRing(default or next(iter(keys.values())), keys, source)


def _jwk(entry: Any, where: str) -> tuple[Key, bool]:
    if not isinstance(entry, dict):
        raise KeyFileError(f"{where}: not a JSON object")
    fields: dict[str, str] = {}
    for name in ("kid", "kty", "alg", "k"):
        value = entry.get(name)
        if not isinstance(value, str):
            raise KeyFileError(f"{where}: no {name!r} string")
        fields[name] = value
    if fields["kty"].lower() != "oct" or fields["alg"].upper() != "HS256":
        raise KeyFileError(f"{where}: kty must be \"oct\" and alg \"HS256\" (got {fields['kty']!r}, "
                           f"{fields['alg']!r})")
    k = fields["k"].replace("-", "+").replace("_", "/")
    try:
        secret = base64.b64decode(k + "=" * (-len(k) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise KeyFileError(f"{where}: \"k\" is not base64url") from None
    if len(secret) < MIN_JWKS_KEY:
        raise KeyFileError(f"{where}: a key of {len(secret)} bytes (at least {MIN_JWKS_KEY} are needed)")
    expires = entry.get("exp")
    if expires is not None and (not isinstance(expires, int) or isinstance(expires, bool)):
        raise KeyFileError(f"{where}: \"exp\" is not an integer")
    use = entry.get("use")
    return Key(secret, fields["kid"], expires), isinstance(use, str) and use.lower() == "default"
