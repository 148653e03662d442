"""`slurm-callerid decode`: captured frames to JSON (header, auth, credential check, body)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import string
import sys
from typing import Any

from slurmproto.auth import check_payload
from slurmproto.codec import Frame, FrameOptions, decode_stream
from slurmproto.constants import AF_INET, AF_INET6, MsgType
from slurmproto.errors import SlurmError
from slurmproto.messages import NetworkCallerIdRequest
from slurmproto.versions import name_of

HEX_CHARS = set(string.hexdigits + string.whitespace + ":")


def read_frames_input(data: bytes, form: str | None = None) -> list[bytes]:
    """Byte strings to decode: from a JSON capture (every "*_hex" list), hex text, or raw bytes."""
    text = data.lstrip()
    if form is None and text[:1] in (b"{", b"["):
        return [bytes.fromhex(h) for h in _hex_strings(json.loads(data))]
    if form == "hex" or (form is None and data and set(data.decode("latin-1")) <= HEX_CHARS):
        cleaned = "".join(data.decode("ascii").split()).replace(":", "")
        if cleaned.startswith(("0x", "0X")):
            cleaned = cleaned[2:]
        return [bytes.fromhex(cleaned)]
    return [data]


def _hex_strings(node: Any, key: str = "") -> list[str]:
    if isinstance(node, dict):
        return [h for k, v in node.items() for h in _hex_strings(v, k)]
    if isinstance(node, list):
        if key.endswith("_hex") and all(isinstance(x, str) for x in node):
            return list(node)
        return [h for item in node for h in _hex_strings(item, key)]
    return []


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _address(family: int, packed: bytes) -> str | None:
    import ipaddress

    if family == AF_INET:
        return str(ipaddress.IPv4Address(packed[:4]))
    if family == AF_INET6:
        return str(ipaddress.IPv6Address(packed[:16]))
    return None


def frame_json(frame: Frame, munge: Any = None) -> dict[str, Any]:
    """A decoded frame as JSON-ready data. With a MungeContext, the credential is checked too."""
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
        if munge is not None:
            out["munge"] = _check_credential(munge, cred, frame)
    else:
        out["auth"] = None
    body = _plain(frame.message)
    if isinstance(frame.message, NetworkCallerIdRequest):
        body["source"] = str(frame.message.source)
        body["destination"] = str(frame.message.destination)
    out["body"] = body
    out["body_hex"] = frame.body.hex()
    return out


def _check_credential(munge: Any, credential: str, frame: Frame) -> dict[str, Any]:
    try:
        decoded = munge.decode(credential)
    except SlurmError as exc:
        return {"error": str(exc), "error_type": type(exc).__name__}
    result: dict[str, Any] = {"uid": decoded.uid, "gid": decoded.gid, "payload_hex": decoded.payload.hex()}
    try:
        kind = check_payload(decoded.payload, frame.body, frame.header.msg_type)
        result["hash"] = f"{kind.name if kind else 'empty payload'}: matches the body"
        result["hash_ok"] = True
    except SlurmError as exc:
        result["hash"] = str(exc)
        result["hash_ok"] = False
    return result


def run(args: argparse.Namespace) -> int:
    if args.file == "-":
        data = sys.stdin.buffer.read()
    else:
        with open(args.file, "rb") as handle:
            data = handle.read()
    options = FrameOptions(nul_check=not args.lenient, exact_body_length=not args.lenient)
    munge = None
    if not args.no_munge:
        from slurmproto.munge import MungeContext

        munge = MungeContext(args.munge_socket)
    results: list[dict[str, Any]] = []
    failed = False
    try:
        blobs = read_frames_input(data, "hex" if args.hex else "raw" if args.raw else None)
    except (ValueError, UnicodeDecodeError) as exc:
        print(f"slurm-callerid decode: input is not hex, raw frames or a JSON capture: {exc}", file=sys.stderr)
        return 1
    for blob in blobs:
        try:
            results.extend(frame_json(frame, munge) for frame in decode_stream(blob, options))
        except SlurmError as exc:
            failed = True
            results.append({"error": str(exc), "error_type": type(exc).__name__, "rc": exc.rc,
                            "input_hex": blob[:64].hex()})
    print(json.dumps(results[0] if len(results) == 1 else results, indent=2))
    return 1 if failed else 0
